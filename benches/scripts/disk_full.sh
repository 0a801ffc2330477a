#!/bin/bash
# Disk full, then space freed: writes fail with 503 saying "No space left on device", /healthz
# answers 503 with the reason, and once space is freed writes resume without a restart (the
# store is reopened in place) and every accepted span is there. Build first:
#   cargo build --release -p api -p benches
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
FS=${FS:-/tmp/smallfs}
# A small filesystem to fill (needs root to mount; any small mount works).
mountpoint -q $FS || { mkdir -p $FS && mount -t tmpfs -o size=40m tmpfs $FS; }
rm -rf $FS/*
$BIN/sightline serve --data $FS/data --otlp-grpc-addr 127.0.0.1:45317 --otlp-http-addr 127.0.0.1:45318 --api-addr 127.0.0.1:45070 --jaeger-addr 127.0.0.1:45271 --pg-addr 127.0.0.1:45433 --seal-max-bytes 4MiB --seal-max-age 2s > /tmp/diskfull.log 2>&1 &
PID=$!
sleep 2
# Fill the disk, leaving ~3 MB.
dd if=/dev/zero of=$FS/filler bs=1M count=200 2>/dev/null
rm -f $FS/filler; dd if=/dev/zero of=$FS/filler bs=1M count=$(( $(df -m --output=avail $FS | tail -1) - 3 )) 2>/dev/null
df -m $FS | tail -1
echo "--- ingest until the disk is full"
$BIN/loadgen --target http --addr 127.0.0.1:45318 --traces 2000 --connections 2 --max-retries 0 --seed 1 2>&1 | tail -4
sleep 4
echo "--- healthz while full:"; curl -s -w ' %{http_code}\n' http://127.0.0.1:45070/healthz
echo "--- one more export while full:"
$BIN/loadgen --target http --addr 127.0.0.1:45318 --traces 4 --connections 1 --max-retries 0 --seed 2 2>&1 | tail -2
echo "--- free the space"
rm -f $FS/filler; df -m $FS | tail -1
sleep 5
echo "--- healthz after freeing:"; curl -s -w ' %{http_code}\n' http://127.0.0.1:45070/healthz
$BIN/loadgen --target http --addr 127.0.0.1:45318 --traces 400 --connections 2 --max-retries 0 --seed 3 2>&1 | tail -3
sleep 4
echo "--- healthz after more ingest:"; curl -s -w ' %{http_code}\n' http://127.0.0.1:45070/healthz
curl -s -X POST http://127.0.0.1:45070/api/v1/sql -H 'content-type: application/json' -d '{"sql":"SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM spans"}'; echo
grep -c "No space left" /tmp/diskfull.log
grep -E "reopen|sealing failed" /tmp/diskfull.log | head -8 | cut -c1-400
grep -c "sealing failed" /tmp/diskfull.log
kill $PID; wait $PID
echo "exit $?"
tail -3 /tmp/diskfull.log | cut -c1-300
