"""POST /batch: the JSONPath subset, resource filling, scheduling, and whole batches against the emulator."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.emulator_af_helpers import API, af_of

from piflow.emulator import AuthSettings, EmulatorSettings, create_app
from piflow.emulator.app import state_of
from piflow.emulator.routes.batch import SubResponse, fan_out, fill, jsonpath, local_target, run_batch, schedule

HOST = "https://pi.example.com/piwebapi"
CSRF = {"X-Requested-With": "XMLHttpRequest"}
A0 = "\\\\PIEMU-AF\\Plant\\Enterprise\\BRK\\A0"

DOC: dict[str, Any] = {
    "a": {"Status": 200, "Headers": {}, "Content": {
        "WebId": "W1",
        "Items": [
            {"WebId": "X", "Links": {"Self": "https://h/piwebapi/elements/X"}, "Items": [{"V": 1}, {"V": 2}]},
            {"WebId": "Y", "Links": {"Self": "https://h/piwebapi/elements/Y"}, "Items": [{"V": 3}]},
        ],
    }},
    "req-2": {"Status": 404, "Content": {"Errors": ["nope"]}},
}


# ---- pure parts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("expr", "expected"), [
    ("$.a.Content.WebId", ["W1"]),
    ("$.a.Content.Items[*].WebId", ["X", "Y"]),
    ("$.a.Content.Items[0].Links.Self", ["https://h/piwebapi/elements/X"]),
    ("$.a.Content.Items[*].Items[*].V", [1, 2, 3]),
    ("$.a.Content.Items[-1].WebId", ["Y"]),
    ("$.a.Content.Items[1:].WebId", ["Y"]),
    ("$['a'].Content[\"WebId\"]", ["W1"]),
    ("$.a.content.webid", ["W1"]),  # names fall back to a case-insensitive match
    ("$.req-2.Status", [404]),
    ("$.a.Content.Missing", []),
    ("$.a.Content.Items[5].WebId", []),
    ("$.b.Content.WebId", []),
    ("$.a.Status", [200]),
    ("$.a.Content.Items[*].Links.*", ["https://h/piwebapi/elements/X", "https://h/piwebapi/elements/Y"]),
])
def test_jsonpath_subset(expr: str, expected: list[Any]) -> None:
    assert jsonpath(DOC, expr) == expected


@pytest.mark.parametrize("expr", ["a.Content", "$.a..WebId", "$.a.Items[x]", "$[", ""])
def test_jsonpath_rejects_syntax_outside_the_subset(expr: str) -> None:
    with pytest.raises(ValueError, match="JSONPath"):
        jsonpath(DOC, expr)


def test_fill_substitutes_path_and_query() -> None:
    assert fill(f"{HOST}/streams/{{0}}/value?time={{1}}", [["W1"], ["*-1h"]]) == f"{HOST}/streams/W1/value?time=*-1h"
    # A whole URL can be the resource; query values are percent-encoded where they would break the query.
    assert fill("{0}", [["https://h/piwebapi/elements/X?a=1"]]) == "https://h/piwebapi/elements/X?a=1"
    assert fill(f"{HOST}/x?name={{0}}", [["a&b c#d"]]) == f"{HOST}/x?name=a%26b%20c%23d"
    # A parameter selecting several values repeats its query parameter, as PI does.
    assert fill(f"{HOST}/streamsets/value?webId={{0}}&time=*", [["A", "B", "C"]]) == (
        f"{HOST}/streamsets/value?webId=A&webId=B&webId=C&time=*")
    with pytest.raises(ValueError, match="path"):
        fill(f"{HOST}/streams/{{0}}/value", [["A", "B"]])


def test_fan_out_zips_and_broadcasts() -> None:
    assert fan_out("{0}/x?y={1}", [["a", "b"], ["1"]]) == ["a/x?y=1", "b/x?y=1"]
    assert fan_out("{0}/{1}", [["a", "b"], ["1", "2"]]) == ["a/1", "b/2"]
    with pytest.raises(ValueError, match="different numbers"):
        fan_out("{0}/{1}", [["a", "b"], ["1", "2", "3"]])


def test_local_target_ignores_the_host() -> None:
    assert local_target("https://other.host:8443/piwebapi/elements/X?a=1&b=2") == "/piwebapi/elements/X?a=1&b=2"
    assert local_target("elements/X") == "/piwebapi/elements/X"


def test_schedule_orders_parents_first_and_flags_bad_items() -> None:
    body: dict[str, Any] = {
        "c": {"Method": "GET", "Resource": "x", "ParentIds": ["b"]},
        "b": {"Method": "GET", "Resource": "x", "ParentIds": ["a"]},
        "a": {"Method": "GET", "Resource": "x"},
        "loop1": {"Method": "GET", "Resource": "x", "ParentIds": ["loop2"]},
        "loop2": {"Method": "GET", "Resource": "x", "ParentIds": ["loop1"]},
        "orphan": {"Method": "GET", "Resource": "x", "ParentIds": ["ghost"]},
        "weird": {"Method": "FETCH", "Resource": "x"},
        "empty": {"Method": "GET"},
    }
    order, problems = schedule(body)
    assert order.index("a") < order.index("b") < order.index("c")
    assert sorted(order) == sorted(body)
    assert set(problems) == {"loop1", "loop2", "orphan", "weird", "empty"}
    assert "ghost" in problems["orphan"]
    assert "FETCH" in problems["weird"]


def test_independent_items_run_concurrently_and_headers_are_forwarded() -> None:
    """Two parentless items each wait for the other to start: only a concurrent run can finish."""
    started: dict[str, asyncio.Event] = {}
    seen: list[dict[str, str]] = []

    async def send(method: str, target: str, headers: dict[str, str], content: bytes | None) -> SubResponse:
        me = target.rsplit("/", 1)[1]
        other = "two" if me == "one" else "one"
        started.setdefault(me, asyncio.Event()).set()
        await started.setdefault(other, asyncio.Event()).wait()
        seen.append(headers)
        return SubResponse(200, {}, {"Name": me})

    body = {"1": {"Method": "GET", "Resource": f"{HOST}/x/one"}, "2": {"Method": "GET", "Resource": f"{HOST}/x/two"}}

    async def main() -> dict[str, dict[str, Any]]:
        return await asyncio.wait_for(run_batch(body, send, base_headers={"Authorization": "Basic abc"}), 10)

    result = asyncio.run(main())
    assert result == {"1": {"Status": 200, "Headers": {}, "Content": {"Name": "one"}},
                      "2": {"Status": 200, "Headers": {}, "Content": {"Name": "two"}}}
    assert all(h["Authorization"] == "Basic abc" and h["X-Emulator-Batch-Child"] == "1" for h in seen)


def test_children_wait_for_their_parents() -> None:
    log: list[str] = []

    async def send(method: str, target: str, headers: dict[str, str], content: bytes | None) -> SubResponse:
        log.append(f"start {target}")
        await asyncio.sleep(0)
        log.append(f"end {target}")
        return SubResponse(200, {}, {"WebId": target.rsplit("/", 1)[1] + "-id"})

    body = {
        "child": {"Method": "GET", "Resource": f"{HOST}/b/{{0}}", "ParentIds": ["parent"],
                  "Parameters": ["$.parent.Content.WebId"]},
        "parent": {"Method": "GET", "Resource": f"{HOST}/a/p"},
    }
    result = asyncio.run(run_batch(body, send))
    assert log.index("end /piwebapi/a/p") < log.index("start /piwebapi/b/p-id")
    assert result["child"]["Content"] == {"WebId": "p-id-id"}


# ---- against the emulator ------------------------------------------------------------------------------
@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(EmulatorSettings(points=1000, frozen=True))) as c:
        yield c


def post(client: TestClient, body: Any, status: int = 207, headers: dict[str, str] | None = None) -> Any:
    r = client.post(API + "/batch", json=body, headers={**CSRF, **(headers or {})})
    assert r.status_code == status, r.text
    return r.json()


def test_reply_shape_and_parallel_items(client: TestClient) -> None:
    db = af_of(client).database("Plant")
    assert db is not None
    body = {
        "servers": {"Method": "GET", "Resource": f"{HOST}/assetservers"},
        "area": {"Method": "GET", "Resource": f"{HOST}/elements?path={A0}"},
        "frames": {"Method": "GET",
                   "Resource": f"{HOST}/assetdatabases/{db.webid}/eventframes?startTime=*-1h&maxCount=3"},
    }
    result = post(client, body)
    assert list(result) == ["servers", "area", "frames"]
    for item in result.values():
        assert set(item) == {"Status", "Headers", "Content"}
        assert item["Status"] == 200
        assert item["Headers"]["Content-Type"].startswith("application/json")
    assert result["servers"]["Content"]["Items"][0]["Name"] == "PIEMU-AF"
    assert result["area"]["Content"]["Path"] == A0
    assert len(result["frames"]["Content"]["Items"]) == 3


def test_parent_ids_and_parameters(client: TestClient) -> None:
    body = {
        "area": {"Method": "GET", "Resource": f"{HOST}/elements?path={A0}"},
        "kids": {"Method": "GET", "ParentIds": ["area"], "Parameters": ["$.area.Content.WebId"],
                 "Resource": f"{HOST}/elements/{{0}}/elements?maxCount=5&selectedFields=Items.Name;Items.WebId"},
        "first": {"Method": "GET", "ParentIds": ["kids"], "Parameters": ["$.kids.Content.Items[0].WebId"],
                  "Resource": f"{HOST}/elements/{{0}}"},
    }
    result = post(client, body)
    assert [e["Name"] for e in result["kids"]["Content"]["Items"]] == [
        "PMP000000", "PMP000001", "PMP000002", "PMP000003", "CMP000004"]
    assert result["first"]["Content"]["Path"] == A0 + "\\PMP000000"


def test_request_template_fans_out(client: TestClient) -> None:
    af = af_of(client)
    area = af.element_by_path(A0)
    assert area is not None
    body = {
        "kids": {"Method": "GET", "Resource": f"{HOST}/elements/{area.webid}/elements?maxCount=4"},
        "each": {"Method": "GET", "ParentIds": ["kids"], "Parameters": ["$.kids.Content.Items[*].WebId"],
                 "RequestTemplate": {"Resource": f"{HOST}/elements/{{0}}?selectedFields=WebId;Name"}},
    }
    result = post(client, body)
    each = result["each"]
    assert each["Status"] == 200
    kids = result["kids"]["Content"]["Items"]
    assert [i["Content"]["WebId"] for i in each["Content"]["Items"]] == [k["WebId"] for k in kids]
    assert all(set(i) == {"Status", "Headers", "Content"} and i["Status"] == 200 for i in each["Content"]["Items"])


def test_elements_and_their_attributes_in_one_round_trip(client: TestClient) -> None:
    """The connector's AF read: a subtree, then every element's attributes, in a single POST."""
    af = af_of(client)
    body = {
        "tree": {"Method": "GET", "Resource": f"{HOST}/elements?path={A0}"},
        "elements": {"Method": "GET", "ParentIds": ["tree"], "Parameters": ["$.tree.Content.Links.Elements"],
                     "Resource": "{0}?searchFullHierarchy=true&maxCount=1000"},
        "attributes": {"Method": "GET", "ParentIds": ["elements"],
                       "Parameters": ["$.elements.Content.Items[*].Links.Attributes"],
                       "RequestTemplate": {"Resource": "{0}?searchFullHierarchy=true"}},
    }
    before = state_of(client.app).stats.requests  # type: ignore[arg-type]
    result = post(client, body)
    elements = result["elements"]["Content"]["Items"]
    assert len(elements) == 40
    served = [a["WebId"] for r in result["attributes"]["Content"]["Items"] for a in r["Content"]["Items"]]
    truth = [a.webid for a in af.all_attributes("Plant") if a.path.startswith(A0 + "\\")]
    assert served == truth
    # The fault middleware counts the batch once, not its 42 sub-requests.
    assert state_of(client.app).stats.requests - before == 1  # type: ignore[arg-type]


def test_children_of_a_failed_parent_get_409(client: TestClient) -> None:
    body = {
        "bad": {"Method": "GET", "Resource": f"{HOST}/elements/F1EmNOPE"},
        "child": {"Method": "GET", "ParentIds": ["bad"], "Parameters": ["$.bad.Content.WebId"],
                  "Resource": f"{HOST}/elements/{{0}}"},
        "grandchild": {"Method": "GET", "ParentIds": ["child"], "Resource": f"{HOST}/assetservers"},
        "fine": {"Method": "GET", "Resource": f"{HOST}/assetservers"},
    }
    result = post(client, body)
    assert result["bad"]["Status"] == 404
    assert result["bad"]["Content"]["Errors"]
    assert result["child"]["Status"] == 409
    assert "bad" in result["child"]["Content"]["Errors"][0]
    assert result["grandchild"]["Status"] == 409
    assert result["fine"]["Status"] == 200


def test_a_jsonpath_that_selects_nothing_gives_400(client: TestClient) -> None:
    body = {
        "area": {"Method": "GET", "Resource": f"{HOST}/elements?path={A0}"},
        "none": {"Method": "GET", "ParentIds": ["area"], "Parameters": ["$.area.Content.NoSuchField"],
                 "Resource": f"{HOST}/elements/{{0}}"},
        "fan": {"Method": "GET", "ParentIds": ["area"], "Parameters": ["$.area.Content.Items[*].WebId"],
                "RequestTemplate": {"Resource": f"{HOST}/elements/{{0}}"}},
    }
    result = post(client, body)
    assert result["area"]["Status"] == 200
    assert result["none"]["Status"] == 400
    assert "NoSuchField" in result["none"]["Content"]["Errors"][0]
    assert result["fan"]["Status"] == 400


def test_unknown_method_fails_only_that_item(client: TestClient) -> None:
    body = {"odd": {"Method": "FETCH", "Resource": f"{HOST}/assetservers"},
            "ok": {"Method": "get", "Resource": f"{HOST}/assetservers"}}
    result = post(client, body)
    assert result["odd"]["Status"] == 400
    assert result["odd"]["Content"]["Errors"]
    assert result["ok"]["Status"] == 200


def test_sub_request_errors_keep_their_status(client: TestClient) -> None:
    af = af_of(client)
    db = af.database("Plant")
    assert db is not None
    body = {"bad": {"Method": "GET", "Resource": f"{HOST}/assetdatabases/{db.webid}/eventframes?searchMode=Nope"},
            "post": {"Method": "POST", "Resource": f"{HOST}/assetservers", "Content": "{}"}}
    result = post(client, body)
    assert result["bad"]["Status"] == 400
    assert result["bad"]["Content"]["Errors"]
    assert result["post"]["Status"] == 405


def test_a_body_that_is_not_an_object_is_refused(client: TestClient) -> None:
    assert post(client, [1, 2], 400)["Errors"]
    r = client.post(API + "/batch", content=b"{not json", headers=CSRF)
    assert r.status_code == 400
    assert r.json()["Errors"]
    assert post(client, {}) == {}


def test_the_callers_credentials_reach_the_sub_requests() -> None:
    settings = EmulatorSettings(points=100, frozen=True, auth=AuthSettings(mode="basic"))
    with TestClient(create_app(settings)) as client:
        good = "Basic " + base64.b64encode(b"PIDEMO\\piuser:pipass").decode()
        body = {"s": {"Method": "GET", "Resource": f"{HOST}/assetservers"}}
        result = post(client, body, headers={"Authorization": good})
        assert result["s"]["Status"] == 200
        r = client.post(API + "/batch", json=body, headers=CSRF)
        assert r.status_code == 401
