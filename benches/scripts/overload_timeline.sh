#!/bin/bash
# The overload of overload_grpc.sh with a timeline: every 0.5 s, time, server RSS (MiB) and
# sightline_memtable_bytes (MiB) into /tmp/m6/timeline; prints loadgen summary and the 3 peaks.
# SERVER_ENV (e.g. MALLOC_ARENA_MAX=2) and SERVER_ARGS pass through to the server.
# overload with a timeline: t, rss MiB, memtable MiB
BIN=${BIN:-target/release/sightline}; LG=${LG:-target/release/loadgen}
D=/tmp/m6/data; rm -rf /tmp/m6; mkdir -p /tmp/m6
env $SERVER_ENV $BIN serve --data $D --otlp-grpc-addr 127.0.0.1:46317 --otlp-http-addr 127.0.0.1:46318 --api-addr 127.0.0.1:46070 --jaeger-addr 127.0.0.1:46271 --pg-addr 127.0.0.1:46433 $SERVER_ARGS 2>/tmp/m6/server.log &
PID=$!; sleep 2
( while kill -0 $PID 2>/dev/null; do r=$(awk '/VmRSS/{print int($2/1024)}' /proc/$PID/status 2>/dev/null); m=$(curl -s -m 1 http://127.0.0.1:46070/metrics | awk '/^sightline_memtable_bytes/{print int($2/1048576)}'); echo "$(date +%s.%N | cut -c7-14) $r $m" >> /tmp/m6/timeline; sleep 0.5; done ) &
$LG --target grpc --addr 127.0.0.1:46317 --connections 64 --traces 32000 --traces-per-request ${TPR:-630} --duration-secs ${DUR:-40} --max-retries 1000 2>&1 | tail -1
sort -k2 -n /tmp/m6/timeline | tail -3
grep -c "sealing failed\|seal" /tmp/m6/server.log
kill $PID; wait $PID 2>/dev/null
