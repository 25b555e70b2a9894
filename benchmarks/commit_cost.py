"""What the writer protocol costs per commit, against a plain delta-rs append of the same rows.

Each commit through ``DeltaSink.commit`` loads a snapshot, reads the writer transaction's version from it,
and commits from that version with one more transaction identifier (delta-rs then checks the commits made
since). The baseline is ``write_deltalake(path, rows, mode="append")``, which checks nothing. Both run in turn
on the same table (partitioned by date, as pi_values), which starts with ``--history`` commits so that the log
has a realistic length; then a sync-shaped commit (new rows, changed rows and deletions) as one merge is timed
against the two-step append + merge it replaces. Prints medians; asserts nothing.

    python benchmarks/commit_cost.py [--rows 5000] [--history 200] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from piflow import schema
from piflow.sinks.delta import DeltaSink, Write

KEY = list(schema.PI_VALUES_KEY)
T0_US = 1_767_225_600_000_000


def rows(n: int, first_us: int, webids: int = 100) -> pa.Table:
    ts = pa.array([first_us + i * 1000 for i in range(n)], pa.int64()).cast(schema.TS)
    return pa.table({
        "webid": [f"F1DP{i % webids:06d}" for i in range(n)], "timestamp": ts, "seq": pa.array([0] * n, pa.int32()),
        "date": pc.cast(ts, pa.date32()), "value_kind": ["number"] * n, "value_double": [float(i) for i in range(n)],
        "value_string": pa.nulls(n, pa.string()), "state_code": pa.nulls(n, pa.int32()),
        "state_name": pa.nulls(n, pa.string()), "is_system": [False] * n, "good": [True] * n,
        "questionable": [False] * n, "substituted": [False] * n, "annotated": [False] * n, "units": ["m"] * n,
        "source": ["recorded"] * n, "ingested_at": ts,
    }, schema=schema.PI_VALUES)


def ms(samples: list[float]) -> str:
    low, high = min(samples) * 1000, max(samples) * 1000
    return f"median {statistics.median(samples) * 1000:7.1f} ms (min {low:.1f}, max {high:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sink = DeltaSink(tmp)
        uri = sink.uri("pi_values")
        sink.ensure("pi_values", schema.PI_VALUES)
        at = T0_US
        for _ in range(args.history):
            write_deltalake(uri, rows(args.rows, at), mode="append", partition_by=["date"])
            at += args.rows * 1000
        plain: list[float] = []
        guarded: list[float] = []
        for _ in range(args.runs):
            data = rows(args.rows, at)
            at += args.rows * 1000
            t0 = time.perf_counter()
            write_deltalake(uri, data, mode="append", partition_by=["date"])
            plain.append(time.perf_counter() - t0)
            data = rows(args.rows, at)
            at += args.rows * 1000
            t0 = time.perf_counter()
            sink.commit("pi_values", lambda _, d=data: Write(append=d, key=KEY))  # type: ignore[misc]
            guarded.append(time.perf_counter() - t0)
        print(f"append of {args.rows:,} rows to a table of {args.history + 1:,} commits, {args.runs} runs each:")
        print(f"  plain write_deltalake append       {ms(plain)}")
        print(f"  DeltaSink.commit (writer protocol) {ms(guarded)}")
        extra = (statistics.median(guarded) - statistics.median(plain)) * 1000
        print(f"  cost of the protocol per commit    {extra:+.1f} ms")

        # A sync-shaped commit: rows new at the end, 200 changed rows and 50 deleted keys among the last ones.
        one: list[float] = []
        two: list[float] = []
        for _ in range(max(3, args.runs // 3)):
            for timings, atomic in ((two, False), (one, True)):
                held = sink.read("pi_values", columns=KEY)
                last = held.slice(held.num_rows - 2000, 2000)
                changed_keys = last.slice(0, 200)
                changed = rows(200, 0).drop_columns(KEY).add_column(0, "webid", changed_keys.column("webid")) \
                    .add_column(1, "timestamp", changed_keys.column("timestamp")) \
                    .add_column(2, "seq", changed_keys.column("seq")).select(schema.PI_VALUES.names) \
                    .set_column(3, "date", pc.cast(changed_keys.column("timestamp"), pa.date32()))
                gone = last.slice(500, 50)
                new = rows(args.rows, at)
                at += args.rows * 1000
                first = pc.min(last.column("timestamp")).as_py()
                bounds = f"t.date >= '{first.date().isoformat()}' AND t.timestamp >= '{first.isoformat()}'"
                t0 = time.perf_counter()
                if atomic:
                    sink.commit("pi_values", lambda _, n=new, c=changed, g=gone, b=bounds: Write(  # type: ignore[misc]
                        append=n, upsert=c, delete=g, key=KEY, bounds=b))
                else:
                    write_deltalake(uri, new, mode="append", partition_by=["date"])
                    sink.commit("pi_values", lambda _, c=changed, g=gone, b=bounds: Write(  # type: ignore[misc]
                        upsert=c, delete=g, key=KEY, bounds=b))
                timings.append(time.perf_counter() - t0)
        print(f"sync-shaped commit ({args.rows:,} new, 200 changed, 50 deleted rows):")
        print(f"  append, then merge (two commits)   {ms(two)}")
        print(f"  one merge (one atomic commit)      {ms(one)}")


if __name__ == "__main__":
    main()
