import math
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from piflow import schema
from piflow.jobs.discover import catalog_changes
from piflow.jobs.value_diff import _packed_keys, diff_rows, split_new_and_changed, within_read

# The same row in both tables, far in time with a high seq: keys then no longer pack into one integer and the
# diff takes its join path. Each diff test runs both ways.
FAR = ("Z", 7_258_118_400, 1000, 1.0)  # 2200-01-01


def values(rows: list[tuple[str, int, int, float]]) -> pa.Table:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.Table.from_pylist(
        [{"webid": w, "timestamp": datetime.fromtimestamp(t, UTC), "seq": s, "date": now.date(),
          "value_kind": "number", "value_double": v, "is_system": False, "good": True, "questionable": False,
          "substituted": False, "annotated": False, "source": "recorded", "ingested_at": now}
         for w, t, s, v in rows],
        schema=schema.PI_VALUES,
    )


def both_ways(wide: bool, fetched: pa.Table, existing: pa.Table) -> tuple[pa.Table, pa.Table]:
    if not wide:
        return fetched, existing
    far = values([FAR])
    fetched, existing = pa.concat_tables([fetched, far]), pa.concat_tables([existing, far])
    ids = pa.array(sorted({*fetched.column("webid").to_pylist(), *existing.column("webid").to_pylist()}))
    assert _packed_keys(ids, fetched, existing) is None
    return fetched, existing


@pytest.mark.parametrize("wide", [False, True])
def test_new_changed_and_unchanged_rows(wide: bool) -> None:
    existing = values([("A", 1, 0, 1.0), ("A", 2, 0, 2.0), ("B", 1, 0, math.nan)])
    fetched = values([("A", 1, 0, 1.0), ("A", 2, 0, 2.5), ("A", 2, 1, 9.0), ("B", 1, 0, math.nan), ("B", 3, 0, 3.0)])
    fetched, existing = both_ways(wide, fetched, existing)
    new, changed = split_new_and_changed(fetched, existing.select(list(schema.PI_VALUES_CONTENT)))
    assert sorted((r["webid"], r["seq"], r["value_double"]) for r in new.to_pylist()) == [("A", 1, 9.0), ("B", 0, 3.0)]
    assert [(r["webid"], r["value_double"]) for r in changed.to_pylist()] == [("A", 2.5)]


def test_empty_table_means_everything_is_new() -> None:
    fetched = values([("A", 1, 0, 1.0)])
    new, changed = split_new_and_changed(fetched, schema.PI_VALUES.empty_table())
    assert (new.num_rows, changed.num_rows) == (1, 0)


def test_catalog_changes_insert_update_tombstone_and_noop() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 1, 2, tzinfo=UTC)

    def point(webid: str, name: str, desc: str = "d", deleted: bool = False) -> dict[str, object]:
        return {"webid": webid, "id": 1, "name": name, "path": f"\\\\S\\{name}", "server": "S", "descriptor": desc,
                "point_class": "classic", "point_type": "Float32", "digital_set": None, "engineering_units": "m",
                "span": 1.0, "zero": 0.0, "step": False, "future": False, "is_deleted": deleted,
                "first_seen": t0, "last_seen": t0}

    existing = [point("1", "A1"), point("2", "A2"), point("3", "B3"), point("4", "A4", deleted=True)]
    current = [point("1", "A1"), point("2", "A2", desc="changed"), point("5", "A5")]
    changes = {c["webid"]: c for c in catalog_changes(existing, current, "S", "A*", t1)}
    assert set(changes) == {"2", "5"} | set()  # 3 is out of scope (B*), 4 already tombstoned
    assert (changes["2"]["descriptor"], changes["2"]["first_seen"]) == ("changed", t0)
    gone = catalog_changes(existing, [point("2", "A2")], "S", "A*", t1)
    assert [(c["webid"], c["is_deleted"]) for c in gone] == [("1", True)]
    assert catalog_changes(existing[:2], existing[:2], "S", "*", t1) == []


@pytest.mark.parametrize("wide", [False, True])
def test_deleted_in_source_judges_only_what_was_read_completely(wide: bool) -> None:
    def deleted_in_source(fetched: pa.Table, existing: pa.Table, covered: dict[str, int], end: int) -> pa.Table:
        return within_read(diff_rows(fetched, existing)[2], covered, end)  # what commit_diff deletes

    tick = 10_000_000  # ticks per second
    existing = values([("A", 10, 0, 1.0), ("A", 20, 0, 2.0), ("A", 20, 1, 2.1), ("A", 30, 0, 3.0),
                       ("A", 5, 0, 0.5),  # before A's read started: not judged
                       ("A", 41, 0, 4.1),  # after the read ended: not judged
                       ("B", 20, 0, 9.0),  # B was not read at all (unknown to the server): never judged
                       ("C", 20, 0, 7.0)])
    fetched = values([("A", 10, 0, 1.0), ("A", 20, 0, 2.1), ("A", 30, 0, 3.0), ("C", 25, 0, 7.5)])
    fetched, existing = both_ways(wide, fetched, existing)
    covered = {"A": 8 * tick, "C": 20 * tick}
    gone = deleted_in_source(fetched, existing, covered, 40 * tick)
    assert sorted((r["webid"], int(r["timestamp"].timestamp()), r["seq"]) for r in gone.to_pylist()) == [
        ("A", 20, 1), ("C", 20, 0)]
    # A row whose microsecond straddles the start of the read is not judged (the table truncates to us).
    assert deleted_in_source(fetched.slice(0, 0), values([("A", 10, 0, 1.0)]), {"A": 10 * tick + 1},
                             40 * tick).num_rows == 0
    assert deleted_in_source(fetched.slice(0, 0), values([("A", 10, 0, 1.0)]), {"A": 10 * tick},
                             40 * tick).num_rows == 1
    assert deleted_in_source(fetched, existing, {}, 40 * tick).num_rows == 0


def test_staged_rows_compared_again_with_a_newer_version_write_only_what_it_lacks(tmp_path: object) -> None:
    """Another writer committed after the sync compared its rows: compared again with that version, a row it
    already wrote the same is dropped, one it wrote otherwise is changed, and a key it removed is not deleted."""
    from pathlib import Path

    from piflow.jobs.value_diff import _compare_again
    from piflow.sinks.delta import DeltaSink

    assert isinstance(tmp_path, Path)
    t0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the date values() gives its rows
    sink = DeltaSink(str(tmp_path))
    sink.append("pi_values", values([("A", t0 + 1, 0, 1.0), ("A", t0 + 2, 0, 5.0), ("B", t0 + 1, 0, 1.0)]))
    snap = sink.snapshot("pi_values")  # what the other writer committed
    new = values([("A", t0 + 1, 0, 1.0), ("A", t0 + 3, 0, 3.0)])  # (A, 1) it wrote the same; (A, 3) it lacks
    changed = values([("A", t0 + 2, 0, 2.0)])  # it holds 5.0: still to change
    gone = values([("B", t0 + 1, 0, 1.0), ("C", t0 + 1, 0, 1.0)]).select(["webid", "timestamp", "seq"])
    n, c, g = _compare_again(snap, new, changed, gone)
    assert [(r["webid"], r["value_double"]) for r in n.to_pylist()] == [("A", 3.0)]
    assert [(r["webid"], r["value_double"]) for r in c.to_pylist()] == [("A", 2.0)]
    assert g is not None
    assert g.column("webid").to_pylist() == ["B"]
