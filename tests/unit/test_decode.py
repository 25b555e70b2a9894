"""Unit tests of the pure decoder on hand-written PI JSON (the shapes PI_WEB_API.md describes)."""

import math
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from piflow import schema
from piflow.decode import ColumnBuilder, decode_stream_page, decode_streamset_page, seq_numbers
from piflow.errors import BadResponseError, DecodeError


def rows(body: bytes, point_type: str | None = None, webid: str = "W1") -> list[dict[str, object]]:
    b = ColumnBuilder()
    page = decode_stream_page(body)
    b.add(webid, page.Items, point_type=point_type, default_units=page.UnitsAbbreviation)
    table = b.table()
    assert table.schema == schema.PI_VALUES
    return table.to_pylist()


def test_every_value_kind_keeps_its_meaning() -> None:
    body = b"""{"UnitsAbbreviation": "bar", "Items": [
      {"Timestamp": "2026-01-01T00:00:00Z", "Value": 12.5, "Good": true, "Questionable": false,
       "Substituted": false, "Annotated": false},
      {"Timestamp": "2026-01-01T00:01:00Z", "Value": 7},
      {"Timestamp": "2026-01-01T00:02:00Z", "Value": "Batch 17"},
      {"Timestamp": "2026-01-01T00:03:00Z", "Value": {"Name": "Running", "Value": 1, "IsSystem": false}},
      {"Timestamp": "2026-01-01T00:04:00Z", "Value": {"Name": "I/O Timeout", "Value": 246, "IsSystem": true},
       "Good": false},
      {"Timestamp": "2026-01-01T00:05:00Z", "Value": true},
      {"Timestamp": "2026-01-01T00:06:00Z", "Value": null}
    ]}"""
    r = rows(body)
    assert [x["value_kind"] for x in r] == ["number", "number", "string", "digital", "system", "number", "null"]
    assert (r[0]["value_double"], r[0]["units"], r[0]["good"]) == (12.5, "bar", True)
    assert r[1]["value_double"] == 7.0
    assert (r[2]["value_string"], r[2]["value_double"]) == ("Batch 17", None)
    assert (r[3]["state_code"], r[3]["state_name"], r[3]["is_system"]) == (1, "Running", False)
    r4 = r[4]
    assert (r4["state_code"], r4["state_name"], r4["is_system"], r4["good"]) == (246, "I/O Timeout", True, False)
    assert r[5]["value_double"] == 1.0
    assert (r[6]["value_double"], r[6]["value_string"]) == (None, None)


def test_nan_and_infinity_literals_and_strings() -> None:
    body = b"""{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": NaN},
                         {"Timestamp": "2026-01-01T00:01:00Z", "Value": Infinity},
                         {"Timestamp": "2026-01-01T00:02:00Z", "Value": "-Infinity"},
                         {"Timestamp": "2026-01-01T00:03:00Z", "Value": "NaN"}]}"""
    r = rows(body, point_type="Float32")
    assert math.isnan(r[0]["value_double"])  # type: ignore[arg-type]
    assert r[1]["value_double"] == math.inf
    assert r[2]["value_double"] == -math.inf
    assert math.isnan(r[3]["value_double"])  # type: ignore[arg-type]
    assert all(x["value_kind"] == "number" for x in r)


def test_numbers_sent_as_strings_follow_the_point_type() -> None:
    body = b'{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": "12.5"}]}'
    assert rows(body, point_type="Float64")[0]["value_double"] == 12.5
    # For a String point the same text is a string, not a number.
    s = rows(body, point_type="String")[0]
    assert (s["value_kind"], s["value_string"], s["value_double"]) == ("string", "12.5", None)
    # Non-numeric text on a numeric point is kept as a string rather than lost.
    odd = rows(b'{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": "n/a"}]}', point_type="Float64")[0]
    assert (odd["value_kind"], odd["value_string"]) == ("string", "n/a")


def test_unknown_digital_state_is_kept_as_sent() -> None:
    body = b'{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": {"Name": "Weird", "Value": 99}}]}'
    r = rows(body, point_type="Digital")[0]
    assert (r["value_kind"], r["state_code"], r["state_name"], r["is_system"]) == ("digital", 99, "Weird", False)


def test_missing_flags_default_and_missing_timestamp_is_an_error() -> None:
    r = rows(b'{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": 1}]}')[0]
    assert (r["good"], r["questionable"], r["substituted"], r["annotated"]) == (True, False, False, False)
    with pytest.raises(DecodeError, match=r"without Timestamp.*WEBID-X"):
        rows(b'{"Items": [{"Value": 1}]}', webid="WEBID-X")


def test_seven_digit_fractions_and_offsets() -> None:
    body = b"""{"Items": [{"Timestamp": "2026-01-01T00:00:00.1234567Z", "Value": 1},
                         {"Timestamp": "2026-01-01T02:00:00.5+02:00", "Value": 2}]}"""
    r = rows(body)
    assert r[0]["timestamp"] == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert r[1]["timestamp"] == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert r[1]["date"].isoformat() == "2026-01-01"  # type: ignore[union-attr]


def test_unparseable_timestamp_names_it() -> None:
    with pytest.raises(DecodeError, match="not-a-time"):
        rows(b'{"Items": [{"Timestamp": "not-a-time", "Value": 1}]}')


def test_duplicate_timestamps_get_sequence_numbers() -> None:
    body = b"""{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": 1},
                         {"Timestamp": "2026-01-01T00:00:00Z", "Value": 2},
                         {"Timestamp": "2026-01-01T00:00:00Z", "Value": 3},
                         {"Timestamp": "2026-01-01T00:00:01Z", "Value": 4}]}"""
    assert [x["seq"] for x in rows(body)] == [0, 1, 2, 0]


def test_seq_numbers_with_interleaved_streams() -> None:
    w = pa.array(["A", "B", "A", "B", "A"])
    ts = pa.array([5, 5, 5, 6, 5], pa.int64()).cast(schema.TS)
    assert seq_numbers(w, ts).to_pylist() == [0, 0, 1, 0, 2]


def test_half_open_window_drops_the_end() -> None:
    b = ColumnBuilder()
    page = decode_stream_page(b"""{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Value": 1},
                                             {"Timestamp": "2026-01-01T01:00:00Z", "Value": 2}]}""")
    b.add("W", page.Items)
    end_ns = int(datetime(2026, 1, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert b.table(before_ns=end_ns).num_rows == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'{"Items": [{"Timestamp": "2026-01-01T00:00:00Z", "Val',
        b"",
        b'{"Items": "oops"}',
    ],
)
def test_bodies_that_are_not_pi_json(body: bytes) -> None:
    with pytest.raises(BadResponseError, match="not PI JSON"):
        decode_stream_page(body)


def test_web_exception_fails_the_page() -> None:
    with pytest.raises(BadResponseError, match="WebException"):
        decode_streamset_page(b'{"Items": [], "WebException": {"StatusCode": 502, "Errors": ["boom"]}}')


def test_seq_from_runs_equals_the_sorting_path_on_random_pages() -> None:
    """run_seq against seq_numbers: points split over several runs, shared timestamps, out-of-order runs."""
    import random

    import numpy as np
    import pyarrow as pa

    from piflow.decode import run_seq, seq_numbers

    rng = random.Random(11)
    for _ in range(300):
        runs: list[tuple[str, int]] = []
        times: list[int] = []
        clock: dict[str, int] = {}
        for _ in range(rng.randint(1, 8)):
            w = f"P{rng.randint(0, 3)}"
            count = rng.randint(1, 6)
            t = clock.get(w, 0) - rng.choice([0, 0, 1])  # a continuation starts at (or before) the last time
            for _ in range(count):
                t += rng.choice([0, 0, 1, 2])
                times.append(t)
            clock[w] = t
            if rng.random() < 0.1:  # now and then a page out of time order: the fast path must decline
                times[-count:] = times[-count:][::-1]
            runs.append((w, count))
        t_arr = np.array(times, dtype=np.int64)
        webids = pa.array([w for w, c in runs for _ in range(c)])
        expected = seq_numbers(webids, pa.array(t_arr)).to_numpy()
        fast = run_seq(runs, t_arr)
        per_point_sorted = all(
            np.all(np.diff(t_arr[np.array([w == p for w, c in runs for _ in range(c)])]) >= 0)
            for p in {w for w, _ in runs})
        if per_point_sorted:
            assert fast is not None
        if fast is not None:
            assert fast.tolist() == expected.tolist()
