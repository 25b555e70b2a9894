"""One concept, one home: the same PI value is classified alike by every writer, and a PI name filter selects the
same names in the jobs and in the emulator."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from piflow import schema
from piflow.decode import ColumnBuilder, decode_stream_page
from piflow.jobs.af.events import frame_attribute_rows
from piflow.jobs.af.views import Columns, Element, WideRows
from piflow.jobs.pi_json import value_text
from piflow.pi_values import classify, classify_many
from piflow.wildcards import matches_everything, name_matches

T = "2026-01-01T00:00:00Z"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VALUE_COLUMNS = ("value_kind", "value_double", "value_string", "state_code", "state_name")

# (PI value as JSON, PI point type, the AF attribute type of the same data, the kind pi_values gives it)
CASES = [
    ("12.5", "Float32", "Single", "number"),
    ("7", "Int32", "Int32", "number"),
    ("true", "Int32", "Boolean", "number"),
    ('"12.5"', "Float64", "Double", "number"),
    ('"NaN"', "Float64", "Double", "number"),
    ('"n/a"', "Float64", "Double", "string"),
    ('"12.5"', "String", "String", "string"),
    (f'"{T}"', "Timestamp", "DateTime", "timestamp"),
    (f'"{T}"', "String", "String", "string"),
    ('{"Name": "Running", "Value": 1, "IsSystem": false}', "Digital", "EnumerationValue", "digital"),
    ('{"Name": "Running", "Value": 1}', "Digital", "EnumerationValue", "digital"),
    ('{"Name": "I/O Timeout", "Value": 246, "IsSystem": true}', "Float32", "Single", "system"),
    ("null", "Float32", "Single", "null"),
]


def pi_values_row(value_json: str, point_type: str) -> dict[str, Any]:
    """The value as the pi_values path writes it: msgspec decode of a recorded page, then the column builder."""
    page = decode_stream_page(f'{{"Items": [{{"Timestamp": "{T}", "Value": {value_json}}}]}}'.encode())
    builder = ColumnBuilder()
    builder.add("P1", page.Items, point_type=point_type)
    row: dict[str, Any] = builder.table().to_pylist()[0]
    return row


def event_frame_row(value_json: str, af_type: str) -> dict[str, Any]:
    """The same value as ``pi_event_frame_attributes`` gets it from ``streamsets/{frame}/value``."""
    item = {"WebId": "A1", "Name": "a", "Type": af_type, "Value": {"Timestamp": T, "Value": orjson.loads(value_json)}}
    return frame_attribute_rows("F1", [item], NOW)[0]


def same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize(("value_json", "point_type", "af_type", "kind"), CASES)
def test_pi_values_and_event_frames_classify_a_value_alike(value_json: str, point_type: str, af_type: str,
                                                           kind: str) -> None:
    ours = pi_values_row(value_json, point_type)
    theirs = event_frame_row(value_json, af_type)
    assert ours["value_kind"] == kind
    for col in VALUE_COLUMNS:
        assert same(ours[col], theirs[col]), (col, ours[col], theirs[col])
    assert ours["is_system"] == (kind == schema.KIND_SYSTEM)


def test_a_stream_mixing_every_shape_is_classified_value_by_value() -> None:
    """The decoder's column-at-a-time shortcuts (numbers, numbers with states, text) agree with the rules."""
    values = [orjson.loads(v) for v, _, _, _ in CASES]
    for point_type in ("Float32", "String", "Timestamp", None):
        page = decode_stream_page(orjson.dumps({"Items": [{"Timestamp": T, "Value": v} for v in values]}))
        builder = ColumnBuilder()
        builder.add("P1", page.Items, point_type=point_type)
        rows = builder.table().to_pylist()
        for value, row in zip(values, rows, strict=True):
            want = classify(value, point_type)
            got = (row["value_kind"], row["value_double"], row["value_string"], row["state_code"],
                   row["state_name"], row["is_system"])
            assert all(same(a, b) for a, b in zip(got, want, strict=True)), (value, point_type, got, want)
    text = ["a", "b"]
    assert classify_many(text, "Timestamp").kind == ["timestamp", "timestamp"]
    assert classify_many(text, "Double").kind == ["string", "string"]


def test_the_view_takes_the_numbers_of_the_same_classification() -> None:
    cols = Columns()
    cols.add("A1", "Flow", "Double")
    cols.add("A2", "Since", "DateTime")
    rows = WideRows(cols)
    element = Element("E1", "Pump 1", "\\\\AF\\Plant\\Pump 1")
    stamps = [f"2026-01-01T00:0{i}:00Z" for i in range(4)]
    flow = ["12.5", 3, {"Name": "I/O Timeout", "Value": 246, "IsSystem": True}, None]
    items = [{"Timestamp": t, "Value": v} for t, v in zip(stamps, flow, strict=True)]
    rows.add_stream(element, {"WebId": "A1", "Items": items}, {})
    rows.add_stream(element, {"WebId": "A2", "Items": [{"Timestamp": stamps[0], "Value": T}]}, {})
    cells = [rows.cells[("E1", datetime.fromisoformat(t))] for t in stamps]
    assert [c["Flow"] for c in cells] == [12.5, 3.0, None, None]  # "12.5" is a number, as in pi_values
    assert rows.not_numeric == 1  # the state; null is no state
    assert cells[0]["Since"] == T


def test_value_text_is_the_same_classification_as_text() -> None:
    assert value_text("12.5", "Double") == ("12.5", 12.5)
    assert value_text("12.5") == ("12.5", None)
    assert value_text({"Name": "Running", "Value": 1}) == ("Running", None)
    assert value_text({"Name": "Shutdown", "Value": 254, "IsSystem": True}) == ("Shutdown", None)
    assert value_text(T, "DateTime") == (T, None)
    assert value_text([1, 2]) == ("[1,2]", None)  # an AF array attribute: its JSON, as text
    assert classify([1, 2]).kind == schema.KIND_STRING


# ---- PI name filters ----------------------------------------------------------------------------------------------
NAME_CASES = [
    ("A[1]", "A1", True),  # PI's query strings have character sets (PI Web API reference, "Query String")
    ("A[1]", "A[1]", False),
    ("A\\[1]", "A[1]", True),  # a backslash makes the next character literal
    ("A\\[1]", "A1", False),
    ("A[!1]", "A2", True),
    ("A[!1]", "A1", False),
    ("A[a-c]", "Ab", False),  # PI documents no ranges: '-' is a member, so nothing wider than the server's
    ("A[a-c]", "A-", True),
    ("A[", "A[", True),  # a set that does not close is an ordinary character
    ("pump*", "PUMP.A1.FLOW", True),
    ("*.flow", "BRK.A0.PMP000001.FLOW", True),
    ("BRK.A?.*", "brk.a0.x", True),
    ("BRK.A?.*", "BRK.A10.X", False),
    ("A.B", "AxB", False),  # '.' is itself, not a regex
    ("A(1)+", "A(1)+", True),
    ("A\\\\B", "A\\B", True),
    ("  *  ", "anything", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), NAME_CASES)
def test_pi_name_filters(pattern: str, name: str, expected: bool) -> None:
    assert name_matches(pattern, name) is expected


def test_an_empty_filter_matches_everything() -> None:
    assert all(matches_everything(p) for p in (None, "", " ", "*", " * "))
    assert not matches_everything("A*")
    assert name_matches(None, "x")
    assert name_matches("", "x")
