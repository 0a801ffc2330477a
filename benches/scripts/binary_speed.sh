#!/usr/bin/env bash
# Query speed of one `sightline` binary over HTTP on an existing data directory: the median of
# N runs of each query (wall time of the whole request, curl's time_total). Used to compare
# release profiles (binary size against speed) on the same store, one binary at a time.
#
#   benches/scripts/binary_speed.sh ./target/release/sightline /tmp/sz-data [runs]
set -euo pipefail
bin=$1 data=$2 runs=${3:-9}
port=${PORT:-47070}
"$bin" serve --data "$data" --retention-interval 0s --api-addr 127.0.0.1:$port \
    --otlp-grpc-addr 127.0.0.1:$((port + 1)) --otlp-http-addr 127.0.0.1:$((port + 2)) \
    --jaeger-addr 127.0.0.1:$((port + 3)) >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
# Another server on the port or the data directory would answer in this one's place.
kill -0 $pid 2>/dev/null || { echo "binary_speed: $bin did not start (port or data directory in use?)" >&2; exit 1; }
session=$(curl -sf "127.0.0.1:$port/api/v1/sql" -d '{"sql":"SELECT min(session_id) AS s FROM spans","format":"csv"}' | tail -1)
trace=$(curl -sf "127.0.0.1:$port/api/v1/sql" -d '{"sql":"SELECT min(trace_id) AS t FROM spans","format":"csv"}' | tail -1)
queries=(
  "SELECT count(*) FROM spans"
  "SELECT service_name, count(*) FROM spans GROUP BY 1"
  "SELECT * FROM spans WHERE trace_id = '$trace'"
  "SELECT * FROM spans WHERE session_id = '$session'"
  "SELECT span_name, count(*), avg(duration_ns) FROM spans WHERE span_name LIKE 'chat%' GROUP BY 1"
  "SELECT sum(CAST(attributes['gen_ai.usage.input_tokens'] AS BIGINT)) FROM spans WHERE span_name LIKE 'chat%'"
  "SELECT provider, request_model, count(*), sum(input_tokens), approx_percentile_cont(duration_ns, 0.95) FROM llm_calls GROUP BY 1, 2"
  "SELECT agent_name, count(*), count(*) FILTER (WHERE outcome = 'error') FROM agent_runs GROUP BY 1"
  "SELECT * FROM agent_runs WHERE session_id = '$session'"
)
for q in "${queries[@]}"; do
  body=$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1], "format": "csv"}))' "$q")
  times=()
  for _ in $(seq "$runs"); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "127.0.0.1:$port/api/v1/sql" -d "$body")")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] * 1000}')
  printf '%8.1f ms  %s\n' "$median" "$q"
done
