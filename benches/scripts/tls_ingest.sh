#!/bin/bash
# Ingest over TLS against plain TCP (issue 12 point 2): the same server and load, with and
# without --tls-cert/--tls-key, for OTLP/gRPC and OTLP/HTTP protobuf; prints spans/s, p50, p99.
# Needs openssl for the test CA. Build first: cargo build --release -p api -p benches
set -u
T=${CARGO_TARGET_DIR:-target}/release
BIN=${BIN:-$T/sightline}; LG=${LG:-$T/loadgen}
W=/tmp/tls-bench; rm -rf $W; mkdir -p $W
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout $W/ca.key -out $W/ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout $W/server.key -out $W/server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > $W/ext
openssl x509 -req -in $W/server.csr -CA $W/ca.pem -CAkey $W/ca.key -CAcreateserial -days 1 \
  -extfile $W/ext -out $W/server.pem 2>/dev/null
for mode in plain tls; do
  for target in grpc http; do
    rm -rf $W/data
    extra=""; scheme=http; ca=""
    if [ $mode = tls ]; then extra="--tls-cert $W/server.pem --tls-key $W/server.key"; scheme=https; ca="--ca-cert $W/ca.pem"; fi
    $BIN serve --data $W/data --otlp-grpc-addr 127.0.0.1:48317 --otlp-http-addr 127.0.0.1:48318 \
      --api-addr 127.0.0.1:48070 --jaeger-addr 127.0.0.1:48271 --pg-addr 127.0.0.1:48433 $extra 2>$W/log &
    PID=$!; sleep 1.5
    port=48317; [ $target = http ] && port=48318
    $LG --target $target --addr $scheme://127.0.0.1:$port $ca --connections 8 --traces 40000 \
      --traces-per-request 4 2>&1 | tail -1 | python3 -c "import sys,json; j=json.loads(sys.stdin.read()); print('$mode $target', j['spans_per_sec'], 'spans/s p50', j['p50_ms'], 'p99', j['p99_ms'])"
    kill $PID; wait $PID 2>/dev/null
  done
done
