"""Reads a Sightline lake with an engine nobody on the team wrote, and runs SQL on it.

    python read_lake.py --engine duckdb|spark --lake DIR|s3://bucket/prefix \
        [--view glob|log] [--s3-endpoint http://host:port] [--runs N] QUERIES.json

QUERIES.json is a list of {"name": ..., "sql": ...}. Prints one JSON object: per query name,
{"columns": [...], "rows": [[...], ...]} with values made comparable (decimals as floats,
timestamps as ISO 8601 UTC with microseconds, dates as YYYY-MM-DD), or {"error": "..."}.
With --runs N each query runs N times and its answer also holds "ms", the median wall time
(benches/BENCHMARKS.md).

Views, one per table of the lake (spans, llm_calls, tool_calls, decisions, agent_runs,
session_parts, sessions, content when shipped, and fleet_sessions: sessions folded across
every node):
- glob: every Parquet file under <lake>/<table>/, partitions (tier, day, node) from the paths;
- log:  the files the lake's commit log (_sightline/log) says are live, replayed the way
        Sightline commits them (each (node, chain entry) applied once, in version order).
"""

import argparse
import datetime
import decimal
import json
import os
import statistics
import sys
import time

TABLES = [
    "spans",
    "llm_calls",
    "tool_calls",
    "decisions",
    "agent_runs",
    "session_parts",
    "sessions",
    "content",
]

# `sessions` of the whole fleet: every node's session parts folded, as Sightline folds them
# (docs/lake.md). A session whose traces went to several nodes is one row. The distinct
# conversations of a session are counted in each engine's own list functions.
CONVERSATIONS = {
    "duckdb": "len(list_distinct(flatten(list(conversations))))",
    "spark": "size(array_distinct(flatten(collect_list(conversations))))",
}
FLEET_SESSIONS = """
SELECT session_id,
    min(user_id) AS user_id,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    sum(runs) AS runs,
    {conversations} AS conversations,
    sum(spans) AS spans,
    sum(errors) AS errors,
    sum(denials) AS denials,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens
FROM session_parts
GROUP BY session_id
"""


def log_files(lake, s3):
    """Live files per table, replaying _sightline/log."""
    names = []
    if lake.startswith("s3://"):
        bucket, _, prefix = lake[len("s3://"):].partition("/")
        prefix = (prefix.rstrip("/") + "/" if prefix else "") + "_sightline/log/"
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                names.append(item["Key"])
        names.sort()
        bodies = [s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in names]
    else:
        directory = os.path.join(lake, "_sightline", "log")
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
        bodies = []
        for name in names:
            with open(os.path.join(directory, name), "rb") as handle:
                bodies.append(handle.read())
    live = {}
    applied = set()
    for body in bodies:
        commit = json.loads(body)
        identity = (
            commit["node"],
            commit["chain_seq"],
            commit["note"] if commit["op"] in ("hold", "content_expired", "sessions") else "",
        )
        if identity in applied:
            continue
        applied.add(identity)
        for path in commit.get("removes", []):
            live.pop(path, None)
        for added in commit.get("adds", []):
            live[added["path"]] = added["table"]
    tables = {}
    for path, table in live.items():
        tables.setdefault(table, []).append(lake.rstrip("/") + "/" + path)
    return tables


def comparable(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, datetime.date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, (list, tuple)):
        return [comparable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): comparable(item) for key, item in value.items()}
    return str(value)


def tables_present(lake, s3):
    """The tables with a directory (a prefix) in the lake."""
    if not lake.startswith("s3://"):
        return {table for table in TABLES if os.path.isdir(os.path.join(lake, table))}
    bucket, _, prefix = lake[len("s3://"):].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    present = set()
    for table in TABLES:
        found = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{table}/", MaxKeys=1)
        if found.get("KeyCount", 0) > 0:
            present.add(table)
    return present


def duckdb_runner(args, files, present):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if args.lake.startswith("s3://"):
        import duckdb_extension_httpfs

        path = os.path.join(
            os.path.dirname(duckdb_extension_httpfs.__file__),
            "extensions",
            "v" + duckdb.__version__,
            "httpfs.duckdb_extension",
        )
        con.execute("SET autoinstall_known_extensions = false")
        con.execute(f"LOAD '{path}'")
        endpoint = args.s3_endpoint.split("://", 1)[-1]
        con.execute(
            "CREATE SECRET lake (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
            f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)"
        )
    for table in TABLES:
        if files is not None:
            paths = files.get(table, [])
        elif table in present:
            paths = [args.lake.rstrip("/") + f"/{table}/**/*.parquet"]
        else:
            paths = []
        if not paths:
            continue
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], "
            "hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"
        )
    fleet = FLEET_SESSIONS.format(conversations=CONVERSATIONS["duckdb"])
    con.execute(f"CREATE VIEW fleet_sessions AS {fleet}")

    def run(sql):
        cursor = con.execute(sql)
        columns = [column[0] for column in cursor.description]
        return columns, cursor.fetchall()

    return run


def spark_runner(args, files, present):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("sightline-lake")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for table in TABLES:
        base = os.path.join(args.lake, table)
        if files is not None:
            paths = files.get(table, [])
        else:
            paths = [base] if table in present else []
        if not paths:
            continue
        frame = spark.read.option("basePath", base).option("mergeSchema", "true").parquet(*paths)
        frame.createOrReplaceTempView(table)
    fleet = FLEET_SESSIONS.format(conversations=CONVERSATIONS["spark"])
    spark.sql(fleet).createOrReplaceTempView("fleet_sessions")

    def run(sql):
        frame = spark.sql(sql)
        return frame.columns, [tuple(row) for row in frame.collect()]

    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["duckdb", "spark"], required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--view", choices=["glob", "log"], default="glob")
    parser.add_argument("--s3-endpoint", default=None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("queries")
    args = parser.parse_args()
    with open(args.queries) as handle:
        queries = json.load(handle)

    s3 = None
    if args.lake.startswith("s3://"):
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=args.s3_endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
    files = log_files(args.lake, s3) if args.view == "log" else None
    runner = duckdb_runner if args.engine == "duckdb" else spark_runner
    run = runner(args, files, tables_present(args.lake, s3))
    out = {}
    for query in queries:
        try:
            times = []
            for _ in range(max(args.runs, 1)):
                started = time.perf_counter()
                columns, rows = run(query["sql"])
                times.append((time.perf_counter() - started) * 1000.0)
            out[query["name"]] = {
                "columns": columns,
                "rows": [[comparable(value) for value in row] for row in rows],
                "ms": statistics.median(times),
            }
        except Exception as error:  # reported to the test, which fails on it
            out[query["name"]] = {"error": f"{type(error).__name__}: {error}"}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
