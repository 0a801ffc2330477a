#!/usr/bin/env python3
"""Export Sightline tables to zstd Parquet through `sightline sql --format json`.

`sightline sql` has no Arrow output in this build, so the JSON output (which names each column's
Arrow type) is parsed back into the same Arrow types: Utf8, Int64, UInt32, Boolean,
Timestamp(ns, "UTC"), List, Struct and Map (attributes). `spans` is exported in 16 pieces (by the
first hex digit of trace_id) to keep each JSON document small; the pieces go into one Parquet file.

Usage: export.py --sightline PATH --data /tmp/sl-1m --out /tmp/sl-1m-parquet [tables...]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TABLES = ["spans", "tool_calls", "llm_calls", "decisions", "agent_runs", "sessions"]


class TypeParser:
    """Parses DataFusion's Display of an Arrow DataType, e.g. `List(non-null Utf8)`."""

    def __init__(self, text):
        self.text, self.pos = text, 0

    def peek(self, s):
        return self.text.startswith(s, self.pos)

    def eat(self, s):
        if not self.peek(s):
            raise ValueError(f"expected {s!r} at {self.pos} in {self.text!r}")
        self.pos += len(s)

    def ws(self):
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def field(self, name):
        self.ws()
        nullable = True
        if self.peek("non-null "):
            self.eat("non-null ")
            nullable = False
        return pa.field(name, self.type(), nullable=nullable)

    def quoted(self):
        self.eat('"')
        end = self.text.index('"', self.pos)
        name = self.text[self.pos:end]
        self.pos = end + 1
        return name

    def type(self):
        # Agent-table strings are `Utf8View`; written as plain Parquet strings (what DuckDB
        # reads either way). Longer names first: "Utf8" is a prefix of "Utf8View".
        simple = {"Utf8View": pa.string(), "Utf8": pa.string(), "LargeUtf8": pa.large_string(), "Int64": pa.int64(),
                  "Int32": pa.int32(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
                  "Float64": pa.float64(), "Boolean": pa.bool_()}
        if self.peek('Timestamp(ns, "UTC")'):
            self.eat('Timestamp(ns, "UTC")')
            return pa.timestamp("ns", tz="UTC")
        if self.peek("List("):
            self.eat("List(")
            item = self.field("item")
            self.eat(")")
            return pa.list_(item)
        if self.peek("Struct("):
            self.eat("Struct(")
            fields = []
            while True:
                self.ws()
                name = self.quoted()
                self.eat(":")
                fields.append(self.field(name))
                if self.peek(","):
                    self.eat(",")
                    continue
                break
            self.eat(")")
            return pa.struct(fields)
        if self.peek("Map("):
            self.eat("Map(")
            self.quoted()
            self.eat(":")
            entries = self.field("entries").type
            self.eat(",")
            self.ws()
            self.eat("unsorted")
            self.eat(")")
            key, value = entries.field(0), entries.field(1)
            return pa.map_(pa.field("key", key.type, nullable=False),
                           pa.field("value", value.type, nullable=value.nullable))
        for name, t in simple.items():
            if self.peek(name):
                self.eat(name)
                return t
        raise ValueError(f"unknown type at {self.pos} in {self.text!r}")


def parse_type(text):
    parser = TypeParser(text)
    t = parser.type()
    if parser.pos != len(text):
        raise ValueError(f"trailing text in {text!r}")
    return t


def timestamp_ns(s):
    return int(np.datetime64(s.rstrip("Z"), "ns").astype(np.int64))


def converter(t):
    """A function turning a JSON value into what pa.array(type=t) accepts."""
    if pa.types.is_timestamp(t):
        return lambda v: None if v is None else timestamp_ns(v)
    if pa.types.is_map(t):
        item = converter(t.item_type)
        return lambda v: None if v is None else [(k, item(x)) for k, x in v.items()]
    if pa.types.is_list(t):
        item = converter(t.value_type)
        return lambda v: None if v is None else [item(x) for x in v]
    if pa.types.is_struct(t):
        fields = [(t.field(i).name, converter(t.field(i).type)) for i in range(t.num_fields)]
        return lambda v: None if v is None else {n: c(v.get(n)) for n, c in fields}
    return lambda v: v


def query_table(sightline, data, sql, memory_limit):
    out = subprocess.run(
        [sightline, "sql", "--data", data, "--format", "json",
         "--query-memory-limit", memory_limit, "--query-max-rows", "100000000",
         "--query-timeout", "3600s",
         # A sixteenth of 10M spans, every column, is more than the 256 MiB default.
         "--query-max-result-bytes", "16GiB", sql],
        check=True, capture_output=True)
    doc = json.loads(out.stdout)
    schema = pa.schema([pa.field(c["name"], parse_type(c["type"])) for c in doc["columns"]])
    columns = []
    for index, field in enumerate(schema):
        convert = converter(field.type)
        columns.append(pa.array([convert(row[index]) for row in doc["rows"]], type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sightline", required=True)
    parser.add_argument("--data", default="/tmp/sl-1m")
    parser.add_argument("--out", default="/tmp/sl-1m-parquet")
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("tables", nargs="*", default=TABLES)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for table in args.tables:
        started = time.perf_counter()
        path = out / f"{table}.parquet"
        pieces = [f"SELECT * FROM {table}"]
        if table == "spans":
            pieces = [f"SELECT * FROM spans WHERE substr(trace_id, 1, 1) = '{d}'"
                      for d in "0123456789abcdef"]
        writer, rows = None, 0
        for sql in pieces:
            part = query_table(args.sightline, args.data, sql, args.memory_limit)
            if writer is None:
                writer = pq.ParquetWriter(path, part.schema, compression="zstd")
            writer.write_table(part)
            rows += part.num_rows
        writer.close()
        print(f"{table}: {rows} rows, {path.stat().st_size} bytes, "
              f"{time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
