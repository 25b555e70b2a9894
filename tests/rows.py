"""Comparing a ``pi_values`` table with the emulator's ground truth, row for row (shared by the connector and
Spark tests)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from piflow import schema


def content(table: pa.Table) -> pa.Table:
    """The PI-event columns, in a canonical order, for comparison with ground truth."""
    cols = list(schema.PI_VALUES_CONTENT)
    return table.select(cols).sort_by([("webid", "ascending"), ("timestamp", "ascending"), ("seq", "ascending")])


def duplicate_keys(table: pa.Table, key: list[str] | None = None) -> int:
    """Rows beyond the first of each key (``pi_values``'s key unless another is given)."""
    return table.num_rows - table.group_by(key or list(schema.PI_VALUES_KEY)).aggregate([]).num_rows


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    a, e = content(actual), content(expected)
    assert duplicate_keys(a) == 0, "duplicate keys in the table"
    assert a.num_rows == e.num_rows, f"{a.num_rows} rows in Delta, {e.num_rows} in ground truth"
    for name in a.column_names:
        left, right = a.column(name).to_pylist(), e.column(name).to_pylist()
        if left != right:
            i = next(i for i, (x, y) in enumerate(zip(left, right, strict=True)) if x != y and not (x != x and y != y))
            pytest.fail(f"column {name} differs at row {i}: {a.slice(i, 1).to_pylist()} vs {e.slice(i, 1).to_pylist()}")
