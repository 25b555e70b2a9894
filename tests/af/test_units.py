"""Pure parts of the AF jobs: config strings, batch retry sets, change detection, value text, resources."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from piflow.client.api import BatchItem
from piflow.jobs.af.events import pi_datetime
from piflow.jobs.af.rows import AttributePoint, point_of, point_path_hint, point_queries
from piflow.jobs.batching import closure, resource, split_fanout, sub_items, transient_items
from piflow.jobs.merged_tables import merge_changes
from piflow.jobs.pi_json import link_webid, value_text

T = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("config", "expected"), [
    ("\\\\PISRV01\\sinusoid", "\\\\PISRV01\\sinusoid"),
    ("\\\\PISRV01\\BRK.A0.PMP000001.FLOW;ReadOnly=False;UOM=m3/h", "\\\\PISRV01\\BRK.A0.PMP000001.FLOW"),
    ("\\\\PISRV01\\sinusoid?8b6f1d2e-0000-0000-0000-000000000000&12", "\\\\PISRV01\\sinusoid"),
    ("\\\\%Server%\\%Element%.%Attribute%", None),
    ("sinusoid", None),
    ("\\\\PISRV01\\", None),
    ("", None),
    (None, None),
])
def test_point_path_hint(config: str | None, expected: str | None) -> None:
    assert point_path_hint(config) == expected


def test_link_webid() -> None:
    assert link_webid({"Links": {"Point": "https://h/piwebapi/points/F1DPabc"}}, "Point") == "F1DPabc"
    assert link_webid({"Links": {}}, "Point") is None
    assert link_webid({}, "Parent") is None


def _item(status: int) -> BatchItem:
    return BatchItem(status=status, content={} if status < 400 else {"Errors": ["x"]})


def retry_closure(body: dict[str, dict[str, Any]], answers: dict[str, BatchItem]) -> set[str]:
    """What send_batch sends again: the transiently failed items and what they need, or need them."""
    return closure(body, set(transient_items(answers)))


def test_retry_closure_takes_children_and_parents_along() -> None:
    body: dict[str, dict[str, Any]] = {
        "a": {"Resource": "x"}, "b": {"Resource": "y", "ParentIds": ["a"]}, "c": {"Resource": "z", "ParentIds": ["b"]},
        "d": {"Resource": "w"},
    }
    assert retry_closure(body, {"a": _item(200), "b": _item(200), "c": _item(200), "d": _item(404)}) == set()
    # b failed transiently: its child c (answered 409) goes again, and so does a, whose answer b needs.
    answers = {"a": _item(200), "b": _item(503), "c": _item(409), "d": _item(200)}
    assert retry_closure(body, answers) == {"a", "b", "c"}
    assert retry_closure(body, {"a": _item(429), "b": _item(409), "c": _item(409), "d": _item(200)}) == {"a", "b",
                                                                                                            "c"}


def test_sub_items_and_split_fanout_shapes() -> None:
    template = BatchItem(status=207, content={"Items": [{"Status": 200, "Content": '{"Items": [1]}'},
                                                        {"Status": 404, "Content": {"Errors": ["gone"]}}]})
    subs = sub_items(template.content)
    assert subs is not None
    assert [(s.status, s.content) for s in subs] == [(200, {"Items": [1]}), (404, {"Errors": ["gone"]})]
    assert sub_items({"Items": [{"no": "status"}]}) is None
    page = BatchItem(status=200, content={"Items": [{"WebId": "A"}, {"WebId": "B"}]})
    items, children = split_fanout(page, template, "x")
    assert [c.status for c in children or []] == [200, 404]
    assert len(items) == 2
    short = BatchItem(status=200, content={"Items": [{"Status": 200, "Content": {}}]})
    assert split_fanout(page, short, "x")[1] is None  # one answer for two items: not trusted


def test_merge_changes_writes_only_what_changed() -> None:
    old = [{"webid": "a", "v": 1.0, "is_deleted": False, "first_seen": T, "last_seen": T},
           {"webid": "n", "v": math.nan, "is_deleted": False, "first_seen": T, "last_seen": T},
           {"webid": "gone", "v": 2.0, "is_deleted": False, "first_seen": T, "last_seen": T},
           {"webid": "other", "v": 2.0, "is_deleted": False, "first_seen": T, "last_seen": T},
           {"webid": "dead", "v": 2.0, "is_deleted": True, "first_seen": T, "last_seen": T}]
    later = T + timedelta(hours=1)
    new = [{"webid": "a", "v": 1.5, "is_deleted": False, "first_seen": later, "last_seen": later},
           {"webid": "n", "v": math.nan, "is_deleted": False, "first_seen": later, "last_seen": later},
           {"webid": "b", "v": 3.0, "is_deleted": False, "first_seen": later, "last_seen": later}]
    out = {r["webid"]: r for r in merge_changes(old, new, ("v", "is_deleted"), lambda r: r["webid"] != "other",
                                                later)}
    assert set(out) == {"a", "b", "gone"}
    assert (out["a"]["v"], out["a"]["first_seen"], out["a"]["last_seen"]) == (1.5, T, later)
    assert (out["gone"]["is_deleted"], out["gone"]["last_seen"]) == (True, later)


@pytest.mark.parametrize(("value", "expected"), [
    ("Grundfos", ("Grundfos", None)), (38.5, ("38.5", 38.5)), (7, ("7", 7.0)), (True, ("true", 1.0)),
    ({"Name": "Running", "Value": 1, "IsSystem": False}, ("Running", None)), (None, (None, None)),
])
def test_value_text(value: Any, expected: tuple[str | None, float | None]) -> None:
    assert value_text(value) == expected


def test_resource_encodes_the_query() -> None:
    r = resource("points/multiple", [("path", "\\\\SRV\\A B"), ("flag", True), ("selectedFields", "Items.A;Items.B")])
    assert r == "points/multiple?path=%5C%5CSRV%5CA%20B&flag=true&selectedFields=Items.A%3BItems.B"
    assert resource("elements/{0}/attributes") == "elements/{0}/attributes"


def test_pi_datetime() -> None:
    assert pi_datetime("2026-01-01T10:00:00.1234567Z") == datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert pi_datetime("2026-01-01T11:00:00+01:00") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert pi_datetime("9999-12-31T23:59:59Z") is None
    assert pi_datetime("") is None
    assert pi_datetime("2026-01-01").tzinfo is UTC  # type: ignore[union-attr]


def test_point_resolution_prefers_the_servers_link() -> None:
    link = {"Point": "https://h/piwebapi/points/F1DPlinked"}
    both = {"DataReferencePlugIn": "PI Point", "ConfigString": "\\\\SRV\\A;ReadOnly=False", "Links": link}
    link_only = {"DataReferencePlugIn": "PI Point", "ConfigString": "\\\\%Server%\\%Element%.B", "Links": link}
    path_only = {"DataReferencePlugIn": "PI Point", "ConfigString": "\\\\SRV\\GONE", "Links": {}}
    neither = {"DataReferencePlugIn": "PI Point", "ConfigString": "%Element%", "Links": {}}
    static = {"DataReferencePlugIn": "", "ConfigString": "\\\\SRV\\C"}
    assert point_queries([both, link_only, path_only, neither, static]) == (["\\\\SRV\\GONE"], ["F1DPlinked"])
    refs = {"F1DPlinked": AttributePoint("F1DPlinked", "\\\\SRV\\B"),
            "\\\\SRV\\GONE": AttributePoint(None, "\\\\SRV\\GONE", "PI point \\\\SRV\\GONE does not exist (x)")}
    assert point_of(both, refs) == AttributePoint("F1DPlinked", "\\\\SRV\\A")
    assert point_of(link_only, refs) == AttributePoint("F1DPlinked", "\\\\SRV\\B")
    assert point_of(path_only, refs).error == "PI point \\\\SRV\\GONE does not exist (x)"
    gone = point_of(neither, refs)
    assert gone.webid is None
    assert "names no point" in (gone.error or "")


def test_frame_row_names_the_frame_with_an_unreadable_time() -> None:
    from piflow.errors import PiApiError
    from piflow.jobs.af.databases import Database
    from piflow.jobs.af.events import frame_row

    db = Database("S", "F1RD", "Plant", "\\\\S\\Plant")
    obj = {"WebId": "F1FmX", "Path": "\\\\S\\Plant\\EventFrames[Batch-1]", "StartTime": "2026-13-01T00:00:00Z"}
    with pytest.raises(PiApiError, match=r"Batch-1.*2026-13-01"):
        frame_row(obj, db, datetime(2026, 1, 1, tzinfo=UTC))


def test_split_window_cuts_equal_slices_no_shorter_than_an_hour() -> None:
    from piflow.jobs.af.events import split_window

    start = datetime(2026, 1, 1, tzinfo=UTC)
    slices = split_window(start, start + timedelta(days=4), 4)
    assert [b - a for a, b in slices] == [timedelta(days=1)] * 4
    assert slices[0][0] == start
    assert slices[-1][1] == start + timedelta(days=4)
    assert all(slices[i][1] == slices[i + 1][0] for i in range(3))  # contiguous, nothing between
    assert split_window(start, start + timedelta(minutes=90), 4) == [(start, start + timedelta(minutes=90))]
    assert len(split_window(start, start + timedelta(hours=3), 8)) == 3
    assert split_window(start, start, 4) == [(start, start)]


def test_a_frame_seen_closed_by_one_slice_stays_closed() -> None:
    from piflow.jobs.af.events import _newer

    open_row, closed_row = {"in_progress": True}, {"in_progress": False}
    assert _newer(None, open_row)
    assert _newer(open_row, closed_row)
    assert not _newer(closed_row, open_row)
    assert _newer(closed_row, closed_row)
