"""The emulator's array-free static value against its reference path (pure functions)."""

from __future__ import annotations

import orjson
import pytest

from piflow.emulator.serialize import StreamFormat, ValueColumns, good_value_dict, value_dicts
from piflow.pitime import parse_iso_ticks


@pytest.mark.parametrize("value", ["Grundfos", 12.5, 7, True, None, "2014-03-01T00:00:00Z", "naïve ünïcode"])
@pytest.mark.parametrize("units", ["", "kW"])
def test_good_value_dict_matches_the_column_path(value: object, units: str) -> None:
    ticks = parse_iso_ticks("2025-06-30T12:34:56.789Z")
    raw = orjson.dumps(value)
    reference = value_dicts(ValueColumns.single(ticks, raw), StreamFormat(units, False, ()))[0]
    assert good_value_dict(ticks, orjson.loads(raw), units) == reference
    assert list(good_value_dict(ticks, orjson.loads(raw), units)) == list(reference)  # PI's field order too
