#!/bin/bash
# Issue 12 point 6: 64 gRPC clients sending ~8 MB exports; prints loadgen's summary and the
# server's peak RSS (KiB), to compare with 2 x (in-flight budget + memtable cap).
# Usage: BIN=target/release/sightline LG=target/release/loadgen TPR=630 DUR=40 benches/scripts/overload_grpc.sh
BIN=${BIN:-target/release/sightline}; LG=${LG:-target/release/loadgen}
D=/tmp/m6/data; rm -rf /tmp/m6; mkdir -p /tmp/m6
$BIN serve --data $D --otlp-grpc-addr 127.0.0.1:46317 --otlp-http-addr 127.0.0.1:46318 --api-addr 127.0.0.1:46070 --jaeger-addr 127.0.0.1:46271 --pg-addr 127.0.0.1:46433 2>/tmp/m6/server.log &
PID=$!; sleep 2
( peak=0; while kill -0 $PID 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$PID/status 2>/dev/null); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo $peak > /tmp/m6/peak; sleep 0.1; done ) &
$LG --target grpc --addr 127.0.0.1:46317 --connections 64 --traces 32000 --traces-per-request ${TPR:-1000} --duration-secs ${DUR:-40} --max-retries 1000 2>&1 | tail -15
echo "peak RSS KiB: $(cat /tmp/m6/peak)"
grep -c "export refused\|overloaded" /tmp/m6/server.log
kill $PID; wait $PID 2>/dev/null
