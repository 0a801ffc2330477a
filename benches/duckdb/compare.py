#!/usr/bin/env python3
"""Run the SQL blocks of docs/monitoring.md on DuckDB over Parquet exports of a Sightline store.

Usage: compare.py --parquet /tmp/sl-1m-parquet [--runs 5] [--threads N] [--memory-limit 1GB]
                  [--session SESSION_ID] [--trace TRACE_ID] [--show 10]

Each query runs once as a warm-up, then --runs times; the median wall time is printed with the
row count and the first --show rows of the result (for comparison with Sightline's output).
"""
import argparse
import os
import pathlib
import statistics
import time

import duckdb

TABLES = ["spans", "tool_calls", "llm_calls", "decisions", "agent_runs", "sessions"]
ROOT = pathlib.Path(__file__).resolve().parents[2]

# Smallest dialect changes needed for DuckDB, as (query number, old text, new text).
# Applied only if the original text fails to run; printed when applied.
DIALECT_CHANGES = []


def sql_blocks(markdown):
    """The ```sql blocks of a markdown file, in order (same rule as testdata::sql_blocks)."""
    blocks, current = [], None
    for line in markdown.splitlines():
        line = line.rstrip()
        if current is None:
            if line == "```sql":
                current = []
        elif line == "```":
            blocks.append("\n".join(current) + "\n")
            current = None
        else:
            current.append(line)
    return blocks


def timed(con, sql, runs):
    con.execute(sql).fetchall()  # warm-up
    samples, rows = [], None
    for _ in range(runs):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples), min(samples), rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--parquet", default="/tmp/sl-1m-parquet")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--session", help="session_id for the one-session lookups")
    parser.add_argument("--trace", help="trace_id for the one-trace lookups")
    parser.add_argument("--show", type=int, default=5, help="result rows printed per query")
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    con.execute(f"SET memory_limit = '{args.memory_limit}'")
    print(f"duckdb {duckdb.__version__}, threads={args.threads}, memory_limit={args.memory_limit}")
    print(f"{'table':<12} {'rows':>10} {'parquet bytes':>14} {'bytes/row':>10}")
    for table in TABLES:
        path = pathlib.Path(args.parquet) / f"{table}.parquet"
        if not path.exists():
            # An export of some tables only (e.g. the agent tables at 10M): their queries fail.
            print(f"{table:<12} (no {path.name}: skipped)")
            continue
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
        count = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        size = path.stat().st_size
        print(f"{table:<12} {count:>10} {size:>14} {size / max(count, 1):>10.1f}")

    queries = [(f"monitoring_{i + 1}", q) for i, q in enumerate(
        sql_blocks((ROOT / "docs" / "monitoring.md").read_text()))]
    if args.trace:
        queries.append(("trace_lookup_full_rows", f"SELECT * FROM spans WHERE trace_id = '{args.trace}'"))
    if args.session:
        s = args.session
        queries += [
            ("session_5_columns", f"SELECT trace_id, span_id, span_name, start_time, duration_ns FROM spans WHERE session_id = '{s}'"),
            ("session_all_columns", f"SELECT * FROM spans WHERE session_id = '{s}'"),
            ("session_llm_calls", f"SELECT request_model, input_tokens, output_tokens FROM llm_calls WHERE session_id = '{s}'"),
            ("session_decisions", f"SELECT time, verdict, policy_id FROM decisions WHERE session_id = '{s}'"),
            ("session_runs", f"SELECT trace_id, agent_name, outcome, input_tokens FROM agent_runs WHERE session_id = '{s}'"),
            ("session_summary", f"SELECT * FROM sessions WHERE session_id = '{s}'"),
        ]

    summary = []
    for name, sql in queries:
        number = int(name.split("_")[1]) if name.startswith("monitoring_") else None
        try:
            median, fastest, rows = timed(con, sql, args.runs)
        except duckdb.Error as error:
            changed = sql
            for n, old, new in DIALECT_CHANGES:
                if n == number:
                    changed = changed.replace(old, new)
                    print(f"{name}: dialect change: {old!r} -> {new!r}")
            if changed == sql:
                print(f"{name} failed: {error}")
                continue
            median, fastest, rows = timed(con, changed, args.runs)
        summary.append((name, median, fastest, len(rows)))
        print(f"\n== {name}: median {median:.1f} ms, min {fastest:.1f} ms, {len(rows)} rows")
        for row in rows[: args.show]:
            print("   ", row)
        if len(rows) > args.show:
            print(f"    ... {len(rows) - args.show} more")

    print(f"\n{'query':<24} {'median ms':>10} {'min ms':>10} {'rows':>9}")
    for name, median, fastest, count in summary:
        print(f"{name:<24} {median:>10.1f} {fastest:>10.1f} {count:>9}")


if __name__ == "__main__":
    main()
