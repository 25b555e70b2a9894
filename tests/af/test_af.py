"""``run_af`` against the emulator: ground truth, paging without N+1, joins to pi_points, changes between runs,
deleted databases and failures inside ``/batch``."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from piflow.client.api import PiClient
from piflow.emulator import EmulatorSettings
from piflow.emulator.af.records import AttributeInfo, ElementInfo
from piflow.emulator.server import EmulatorServer
from piflow.emulator.settings import FaultSettings
from piflow.errors import NotFoundError
from piflow.jobs.af.databases import Database, DatabaseRead
from piflow.jobs.af.job import run_af as _run_af
from piflow.jobs.af.read import _take_page, read_database
from piflow.jobs.batching import fanout_pages, send_batch, split_fanout
from piflow.jobs.discover import run_discover
from piflow.jobs.runs import RunResult
from tests.af.conftest import EMULATOR, Hook, live, rows_of, settings_for, version_of

DBS = ("Plant", "Sandbox")


def run_af(srv: EmulatorServer, target: Path, progress: Any = None, **kw: Any) -> RunResult:
    return asyncio.run(_run_af(settings_for(srv, target), progress, **kw))


def expected_elements(srv: EmulatorServer, dbs: tuple[str, ...] = DBS) -> dict[str, dict[str, Any]]:
    """Ground truth rows, depth from the chain of parents (not from paths, as the job does)."""
    truth: list[ElementInfo] = [e for db in dbs for e in srv.state.af.all_elements(db)]
    parents = {e.webid: e.parent_webid for e in truth}

    def depth(w: str) -> int:
        p = parents[w]
        return 0 if p is None else 1 + depth(p)

    return {e.webid: {
        "id": e.id, "name": e.name, "path": e.path, "description": e.description or None,
        "template": e.template_name or None, "categories": list(e.category_names), "has_children": e.has_children,
        "parent_webid": e.parent_webid, "depth": depth(e.webid), "database_webid": e.database_webid,
        "server": "PIEMU-AF", "database": e.path.split("\\")[3],
    } for e in truth}


def _static(a: AttributeInfo) -> tuple[str | None, float | None]:
    v = a.static_value
    if v is None or a.data_reference:
        return None, None
    if isinstance(v, str):
        return v, None
    assert isinstance(v, float), f"unexpected static value {v!r} in the emulator"
    return repr(v), v


def expected_attributes(srv: EmulatorServer, dbs: tuple[str, ...] = DBS) -> dict[str, dict[str, Any]]:
    out = {}
    for db in dbs:
        for a in srv.state.af.all_attributes(db):
            text, number = _static(a)
            is_point = a.data_reference == "PI Point"
            out[a.webid] = {
                "id": a.id, "element_webid": a.element_webid, "parent_webid": a.parent_webid, "name": a.name,
                "path": a.path, "description": a.description or None, "type": a.type,
                "type_qualifier": a.type_qualifier or None, "units": a.units_abbreviation or None,
                "units_name": a.default_units_name or None, "data_reference": a.data_reference or None,
                "config_string": a.config_string or None, "static_value": text, "static_value_double": number,
                "point_webid": a.point_webid, "point_path": a.config_string if is_point else None,
                "categories": list(a.category_names), "is_configuration_item": a.is_configuration_item,
                "is_excluded": a.is_excluded, "is_hidden": a.is_hidden, "has_children": a.has_children,
                "step": a.step, "database": db,
            }
    return out


def assert_matches_truth(srv: EmulatorServer, target: Path, dbs: tuple[str, ...] = DBS) -> None:
    elements = live(rows_of(target, "pi_af_elements"))
    truth = expected_elements(srv, dbs)
    assert set(elements) == set(truth)
    for webid, want in truth.items():
        got = {k: elements[webid][k] for k in want}
        assert got == want, f"element {want['path']}"
    attributes = live(rows_of(target, "pi_af_attributes"))
    truth_a = expected_attributes(srv, dbs)
    assert set(attributes) == set(truth_a)
    for webid, want in truth_a.items():
        row = attributes[webid]
        assert {k: row[k] for k in want} == want, f"attribute {want['path']}"
        broken = want["data_reference"] == "PI Point" and want["point_webid"] is None
        assert (row["error"] is not None) == broken, f"attribute {want['path']}: {row['error']}"


# ---- ground truth, paging, requests ----------------------------------------------------------------------------
def test_every_element_and_attribute_equals_ground_truth_with_few_requests(emulator: EmulatorServer,
                                                                           tmp_path: Path) -> None:
    page = 7  # 109 elements and 12-13 attributes per equipment: many pages of both
    result = run_af(emulator, tmp_path, page_size=page)
    assert result.status == "ok", result.message
    assert_matches_truth(emulator, tmp_path)
    n_elements = len(expected_elements(emulator))
    n_attributes = len(expected_attributes(emulator))
    assert n_elements > 10 * page
    assert n_attributes > 1000
    # No N+1: the element pages, a few extra pages in flight, and a handful of batches for the rest.
    assert result.requests <= math.ceil(n_elements / page) + 2 * 4 + 8, result.requests
    assert (result.details["elements"], result.details["attributes"]) == (n_elements, n_attributes)


def test_point_references_join_pi_points_and_missing_points_are_kept(emulator: EmulatorServer,
                                                                      tmp_path: Path) -> None:
    asyncio.run(run_discover(settings_for(emulator, tmp_path, points="*")))
    deleted = emulator.state.model.point(0, 7)
    emulator.state.deleted_points.add((0, 7))  # deleted after discover: pi_points still has it
    result = run_af(emulator, tmp_path)
    points = {r["webid"]: r for r in rows_of(tmp_path, "pi_points")}
    attributes = list(live(rows_of(tmp_path, "pi_af_attributes")).values())
    referenced = [a for a in attributes if a["data_reference"] == "PI Point"]
    resolved = [a for a in referenced if a["point_webid"] is not None]
    assert len(resolved) == 499  # 500 points, one deleted
    for a in resolved:
        assert a["point_webid"] in points, a["path"]
        assert points[a["point_webid"]]["path"] == a["point_path"]
    broken = [a for a in referenced if a["point_webid"] is None]
    truth_broken = [a for a in expected_attributes(emulator).values()
                    if a["data_reference"] == "PI Point" and a["point_webid"] is None]
    assert len(broken) == len(truth_broken) == 3  # two replaced instruments, one point deleted
    for a in broken:
        assert a["point_path"] == a["config_string"]
        assert "does not exist" in a["error"]
        assert a["config_string"] in a["error"]
    assert deleted.path in {a["point_path"] for a in broken}
    assert f"{len(broken)} attributes reference PI points that do not exist" in result.message


def test_second_run_over_unchanged_model_commits_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    run_af(emulator, tmp_path)
    versions = (version_of(tmp_path, "pi_af_elements"), version_of(tmp_path, "pi_af_attributes"))
    again = run_af(emulator, tmp_path)
    assert again.values_written == 0
    assert (version_of(tmp_path, "pi_af_elements"), version_of(tmp_path, "pi_af_attributes")) == versions
    for name in ("pi_af_elements", "pi_af_attributes"):
        webids = [r["webid"] for r in rows_of(tmp_path, name)]
        assert len(webids) == len(set(webids)), f"duplicates in {name}"


# ---- changes between runs ----------------------------------------------------------------------------------------
def test_renamed_moved_retemplated_and_removed_elements(emulator: EmulatorServer, tmp_path: Path) -> None:
    af = emulator.state.af
    run_af(emulator, tmp_path)
    first = {r["webid"]: r for r in rows_of(tmp_path, "pi_af_elements")}
    equipment = [e for e in af.all_elements("Plant") if e.path.count("\\") == 7]
    areas = {e.name: e for e in af.all_elements("Plant") if e.template_name == "Area"}
    renamed, moved, retemplated, removed = equipment[0], equipment[1], equipment[2], equipment[3]
    removed_attrs = {a.webid for a in af.all_attributes("Plant") if a.element_webid == removed.webid}
    target_area = next(a for name, a in areas.items() if not moved.path.endswith(f"\\{name}\\{moved.name}"))
    af.rename_element(renamed.webid, "RENAMED-PUMP")
    af.move_element(moved.webid, target_area.webid)
    af.set_template(retemplated.webid, "Motor")
    af.remove_element(removed.webid)

    result = run_af(emulator, tmp_path)
    assert result.status == "ok", result.message
    assert_matches_truth(emulator, tmp_path)
    rows = rows_of(tmp_path, "pi_af_elements")
    by_webid = {r["webid"]: r for r in rows}
    assert len(by_webid) == len(rows), "duplicate element rows"
    for old in (renamed, moved):  # new Full WebID (path changed): old row tombstoned, same id lives on
        assert by_webid[old.webid]["is_deleted"] is True
        now_live = [r for r in rows if r["id"] == old.id and not r["is_deleted"]]
        assert len(now_live) == 1
        assert now_live[0]["webid"] != old.webid
    assert next(r["name"] for r in rows if r["id"] == renamed.id and not r["is_deleted"]) == "RENAMED-PUMP"
    row = by_webid[retemplated.webid]  # in place: same WebID, new template and categories
    assert (row["is_deleted"], row["template"], row["categories"]) == (False, "Motor", ["Rotating"])
    assert row["first_seen"] == first[retemplated.webid]["first_seen"]
    assert by_webid[removed.webid]["is_deleted"] is True
    attrs = {r["webid"]: r for r in rows_of(tmp_path, "pi_af_attributes")}
    assert removed_attrs
    assert all(attrs[w]["is_deleted"] for w in removed_attrs)
    assert result.details["elements_tombstoned"] == 3


def test_deleted_database_is_tombstoned_then_refused_by_name(emulator: EmulatorServer, tmp_path: Path) -> None:
    run_af(emulator, tmp_path)
    plant_version = [r for r in rows_of(tmp_path, "pi_af_elements") if r["database"] == "Plant"]
    emulator.state.af.remove_database("Sandbox")
    result = run_af(emulator, tmp_path)
    assert "\\\\PIEMU-AF\\Sandbox no longer exists" in result.message
    rows = rows_of(tmp_path, "pi_af_elements")
    sandbox = [r for r in rows if r["database"] == "Sandbox"]
    assert len(sandbox) == 4
    assert all(r["is_deleted"] for r in sandbox)
    assert all(r["is_deleted"] for r in rows_of(tmp_path, "pi_af_attributes") if r["database"] == "Sandbox")
    assert [r for r in rows if r["database"] == "Plant"] == plant_version  # untouched
    with pytest.raises(NotFoundError, match=r"'Sandbox' not found .*\\\\PIEMU-AF\\Plant"):
        asyncio.run(_run_af(settings_for(emulator, tmp_path), database="Sandbox"))


def test_database_removed_during_the_run_is_left_alone_then_tombstoned(emulator: EmulatorServer,
                                                                         tmp_path: Path) -> None:
    run_af(emulator, tmp_path)
    before = sorted(r["webid"] for r in rows_of(tmp_path, "pi_af_elements") if r["database"] == "Sandbox")
    # Sandbox is listed, then removed just before its pages are read: the page answers 404, its fan-out 409.
    hook = Hook("af \\\\PIEMU-AF\\Sandbox", lambda: emulator.state.af.remove_database("Sandbox"))
    result = run_af(emulator, tmp_path, hook)
    assert hook.fired
    assert result.status == "ok"
    assert "Sandbox disappeared during the run" in result.message
    rows = rows_of(tmp_path, "pi_af_elements")
    assert sorted(r["webid"] for r in rows if r["database"] == "Sandbox" and not r["is_deleted"]) == before
    later = run_af(emulator, tmp_path)
    assert "Sandbox no longer exists" in later.message
    assert all(r["is_deleted"] for r in rows_of(tmp_path, "pi_af_elements") if r["database"] == "Sandbox")


# ---- what /batch answers ---------------------------------------------------------------------------------------
def _database(srv: EmulatorServer, name: str) -> Database:
    d = srv.state.af.database(name)
    assert d is not None
    return Database("PIEMU-AF", d.webid, d.name, d.path)


def test_empty_last_page_answers_400_and_ends_the_listing(emulator: EmulatorServer, tmp_path: Path) -> None:
    # Sandbox has exactly 4 elements: with pages of 2 the third page is empty and its template selects nothing.
    result = run_af(emulator, tmp_path, database="Sandbox", page_size=2)
    assert (result.status, result.details["elements"]) == ("ok", 4)
    assert_matches_truth(emulator, tmp_path, ("Sandbox",))

    async def third_page() -> tuple[int, int, list[Any], list[Any] | None]:
        db = _database(emulator, "Sandbox")
        async with PiClient(emulator.url) as client:
            answers = await send_batch(client, {
                "page": {"Method": "GET", "Resource": f"assetdatabases/{db.webid}/elements?searchFullHierarchy=true"
                                                      "&startIndex=4&maxCount=2"},
                "children": {"Method": "GET", "ParentIds": ["page"], "Parameters": ["$.page.Content.Items[*].WebId"],
                             "RequestTemplate": {"Resource": "elements/{0}/attributes"}}})
            items, children = split_fanout(answers["page"], answers["children"], "Sandbox")
            return answers["page"].status, answers["children"].status, items, children

    page_status, child_status, items, children = asyncio.run(third_page())
    assert (page_status, child_status, items, children) == (200, 400, [], [])


def test_failed_page_gives_409_children_and_a_clear_error(emulator: EmulatorServer) -> None:
    db = _database(emulator, "Sandbox")
    emulator.state.af.remove_database("Sandbox")

    async def read() -> None:
        async with PiClient(emulator.url) as client:
            answers = await send_batch(client, {
                "page": {"Method": "GET", "Resource": f"assetdatabases/{db.webid}/elements"},
                "children": {"Method": "GET", "ParentIds": ["page"], "Parameters": ["$.page.Content.Items[*].WebId"],
                             "RequestTemplate": {"Resource": "elements/{0}/attributes"}}})
            assert (answers["page"].status, answers["children"].status) == (404, 409)
            split_fanout(answers["page"], answers["children"], "elements of \\\\PIEMU-AF\\Sandbox")

    with pytest.raises(NotFoundError, match=r"elements of \\\\PIEMU-AF\\Sandbox: HTTP 404"):
        asyncio.run(read())
    # read_database turns the same answer into "vanished", so that the job leaves the rows alone.
    vanished = asyncio.run(_read_database(emulator, db))
    assert "404" in (vanished.vanished or "")
    assert vanished.elements == []


async def _read_database(srv: EmulatorServer, db: Database) -> Any:
    async with PiClient(srv.url) as client:
        return await read_database(client, db, page_size=3)


def test_refused_fan_out_is_recognised(emulator: EmulatorServer) -> None:
    """A page whose items carry no WebId makes the template select nothing (400) although the page is not
    empty: that is a refused fan-out (the job then reads the children with explicit requests), not the end."""
    db = _database(emulator, "Sandbox")

    async def go() -> tuple[int, list[Any], list[Any] | None]:
        async with PiClient(emulator.url) as client:
            answers = await send_batch(client, {
                "page": {"Method": "GET", "Resource": f"assetdatabases/{db.webid}/elements?searchFullHierarchy=true"
                                                      "&selectedFields=Items.Name"},
                "children": {"Method": "GET", "ParentIds": ["page"], "Parameters": ["$.page.Content.Items[*].WebId"],
                             "RequestTemplate": {"Resource": "elements/{0}/attributes"}}})
            items, refused = split_fanout(answers["page"], answers["children"], "Sandbox")
            return answers["children"].status, items, refused

    status, items, refused = asyncio.run(go())
    assert (status, len(items), refused) == (400, 4, None)


def test_server_errors_are_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    faults = FaultSettings(error_rate=0.2)  # one request (batch) in five answered 500/502/503
    with EmulatorServer(EmulatorSettings(**(EMULATOR | {"faults": faults}))) as srv:
        result = asyncio.run(_run_af(settings_for(srv, tmp_path, retries=8), page_size=25))
        assert result.status == "ok", result.message
        assert result.retries > 0
        assert srv.state.stats.faults > 0
        assert_matches_truth(srv, tmp_path)


def test_children_answered_400_are_read_again_and_nothing_is_lost(emulator: EmulatorServer) -> None:
    db = _database(emulator, "Sandbox")

    async def go() -> tuple[list[int], DatabaseRead]:
        async with PiClient(emulator.url) as client:
            # maxCount=0 is refused with 400 by every fanned-out request
            pages = [p async for p in fanout_pages(client, f"assetdatabases/{db.webid}/elements",
                                                   [("searchFullHierarchy", True)],
                                                   "elements/{0}/attributes?maxCount=0", page_size=10)]
            out = DatabaseRead(db)
            await _take_page(client, out, pages[0], set(), 1000)
            return [c.status for c in pages[0].children], out

    statuses, out = asyncio.run(go())
    assert statuses == [400] * 4
    truth = emulator.state.af.all_attributes("Sandbox")
    got = {a["WebId"] for attrs in out.attributes.values() for a in attrs}
    assert got == {a.webid for a in truth}  # read again with the job's own request: all of them
