#!/usr/bin/env bash
# The lake at scale (benches/BENCHMARKS.md, "The lake at 10M spans"): ships a filled store with
# `sightline export`, measures the lake's bytes per table, and times every query of
# docs/monitoring.md on DuckDB and PySpark over the lake (medians of --runs).
#
#   benches/lake/lake_bench.sh BIN_DIR DATA_DIR LAKE_DIR [RUNS] [SPARK_RUNS]
#
# BIN_DIR holds a release `sightline`; DATA_DIR a store filled by
# `sqlbench --data DATA_DIR --spans N`; when LAKE_DIR exists, only the queries are timed. The readers are the test
# suite's (testdata/lake/requirements.txt in ~/.cache/sightline/lake-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$1 data=$2 lake=$3 runs=${4:-5} spark_runs=${5:-3}
python=${SIGHTLINE_LAKE_PYTHON:-$HOME/.cache/sightline/lake-venv/bin/python}
if [[ -e $lake ]]; then
  echo "== $lake exists: timing the queries only"
else
  echo "== export (wall time, peak RSS)"
  /usr/bin/time -f "export: %e s wall, %M KiB peak RSS" \
    "$bin/sightline" export --data "$data" --lake "$lake" --node bench
fi

echo "== lake bytes per table"
for table in "$lake"/*/; do
  name=$(basename "$table")
  [[ $name == _sightline ]] && continue
  printf '%-14s %12s bytes %6s files\n' "$name" "$(du -sb "$table" | cut -f1)" \
    "$(find "$table" -name '*.parquet' | wc -l)"
done
printf '%-14s %12s bytes\n' total "$(du -sb --exclude=_sightline "$lake" | cut -f1)"

queries=$(mktemp --suffix=.json)
"$python" - "$queries" <<'PY'
import json, re, sys
text = open("docs/monitoring.md").read()
out = []
for i, block in enumerate(re.finditer(r"```sql\n(.*?)```", text, re.S)):
    label = re.findall(r"Question `([a-z_]+)`", text[max(0, block.start() - 200):block.start()])
    out.append({"name": f"{i + 1} {label[-1] if label else ''}", "sql": block.group(1)})
json.dump(out, open(sys.argv[1], "w"))
PY
table='
import json, sys
for name, answer in json.load(sys.stdin).items():
    ms = answer.get("ms", 0)
    rows = len(answer.get("rows", []))
    error = answer.get("error", "")
    print(f"{name:36} {ms:10.1f} ms {rows:8} rows {error}")
'
echo "== DuckDB over the lake (median of $runs, ms)"
"$python" testdata/lake/read_lake.py --engine duckdb --lake "$lake" --runs "$runs" "$queries" \
  | "$python" -c "$table"
echo "== PySpark (local[2]) over the lake (median of $spark_runs, ms)"
"$python" testdata/lake/read_lake.py --engine spark --lake "$lake" --runs "$spark_runs" "$queries" \
  | "$python" -c "$table"
rm -f "$queries"
