"""A local S3-compatible server for the lake tests: moto in server mode on 127.0.0.1.

    python s3_server.py BUCKET [BUCKET ...]

Creates the buckets, prints "port N" on one line, then serves until its standard input closes.
"""

import logging
import sys

import boto3
from moto.server import ThreadedMotoServer


def main():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    for bucket in sys.argv[1:]:
        s3.create_bucket(Bucket=bucket)
    print(f"port {port}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
