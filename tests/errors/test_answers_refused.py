"""Answers piflow cannot use, from servers that are not quite PI Web API, and what it says about each.

A scripted server (tests/client/conftest.py's :class:`ScriptedApp`, in process) sends what no emulator would:
lists where objects belong, bodies that are not PI JSON, batch answers of the wrong shape, identity providers
that forget the token. A PI server that lists no data servers is a real HTTP server on 127.0.0.1, run through
the CLI, so the exit code, the line on stderr and the failed run in pi_ingest_runs are checked together.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from piflow.cli import app
from piflow.client import PiClient
from piflow.client.api import BatchItem
from piflow.client.auth import OidcClientCredentials
from piflow.errors import AuthError, BadResponseError, ConfigError, PiApiError, UnreachableError
from piflow.jobs.batch_direct import run_directly
from piflow.jobs.batching import items_per_ask, page_items
from piflow.jobs.streamset_direct import answer_directly
from tests.client.conftest import Canned, ScriptedApp, Seen, fast_retry
from tests.servers import free_port

URL = "http://pi.test/piwebapi"


def json_body(doc: Any, status: int = 200) -> Canned:
    return Canned(status, json.dumps(doc).encode())


def with_client(app: ScriptedApp, job: Callable[[PiClient], Coroutine[Any, Any, Any]], **kw: Any) -> Any:
    async def run() -> Any:
        async with PiClient(URL, transport=app.transport(), retry=fast_retry(1), **kw) as client:
            return await job(client)

    return asyncio.run(run())


def refused(app: ScriptedApp, job: Callable[[PiClient], Coroutine[Any, Any, Any]],
            kind: type[Exception] = BadResponseError, **kw: Any) -> str:
    with pytest.raises(kind) as info:
        with_client(app, job, **kw)
    return str(info.value)


# ---- answers of the wrong shape ---------------------------------------------------------------------------------


def test_a_list_where_an_object_belongs_is_named() -> None:
    app = ScriptedApp([json_body([])])
    assert refused(app, lambda c: c.dataservers()) == "dataservers: expected a JSON object, got list"


def test_an_answer_without_items_is_named() -> None:
    app = ScriptedApp([json_body({"Links": {}})])
    assert refused(app, lambda c: c.dataservers()) == "dataservers: the answer has no Items list"


def test_a_point_resolved_without_a_webid_is_named() -> None:
    app = ScriptedApp([json_body({"Name": "SINUSOID"})])
    message = refused(app, lambda c: c.webid_for_path("\\\\PISRV01\\SINUSOID", resolve=True))
    assert message == f"point \\\\PISRV01\\SINUSOID came back without a WebId [{URL}]"


def test_a_recorded_body_that_is_not_pi_json_quotes_its_start() -> None:
    app = ScriptedApp([Canned(200, b'{"Items": "<html>maintenance</html>"}')])
    message = refused(app, lambda c: c.recorded_page("W1", "*-1h", "*"))
    assert message.startswith("HTTP 200: recorded: body is not PI JSON (starts '{\"Items\": \"<html>maintenance</html>"
                              f"\"}}') [{URL}/streams/W1/recorded?")


def test_batch_answers_of_the_wrong_shape_are_refused() -> None:
    request = {"a": {"Method": "GET", "Resource": "dataservers"}}
    assert refused(ScriptedApp([json_body([], 207)]), lambda c: c.batch(request)) == (
        f"the batch answer is not an object keyed by request id [{URL}/batch]")
    assert refused(ScriptedApp([json_body({"a": "fine"}, 207)]), lambda c: c.batch(request)) == (
        f"batch answer for 'a' is not {{Status, Headers, Content}} [{URL}/dataservers]")


def test_the_guards_of_the_client_calls() -> None:
    app = ScriptedApp([json_body({"Items": []})])

    async def no_webids(client: PiClient) -> None:
        await client.streamset_recorded_page([], "*-1h", "*")

    async def no_page(client: PiClient) -> None:
        async for _ in client.iter_list("dataservers", page_size=0):
            pass

    assert refused(app, no_webids, ValueError) == "streamset_recorded_page needs at least one WebID"
    assert refused(app, no_page, ValueError) == "page_size must be at least 1"
    assert app.seen == []  # refused before a request


# ---- /batch answered without /batch ------------------------------------------------------------------------------


def by_path(routes: dict[str, Canned]) -> ScriptedApp:
    def script(seen: Seen, n: int) -> Canned:
        return routes.get(seen.path.removeprefix("/piwebapi/"), Canned(404, b'{"Errors": ["no such route"]}'))

    return ScriptedApp(script)


def test_sub_requests_sent_one_by_one_keep_each_refusal_as_its_answer() -> None:
    app = by_path({"points/A": json_body({"WebId": "A"})})
    body = {"ok": {"Method": "GET", "Resource": "points/A"}, "gone": {"Method": "GET", "Resource": "points/B"}}
    answers = with_client(app, lambda c: run_directly(c, body))
    assert {k: (a.status, a.content) for k, a in answers.items()} == {
        "ok": (200, {"WebId": "A"}), "gone": (404, {"Errors": ["no such route"]})}


@pytest.mark.parametrize(("body", "message"), [
    ({"a": {"Method": "GET", "Resource": "points/A", "ParentIds": ["never"]}},
     "batch request ids ['a'] wait for parents that are never sent"),
    ({"a": {"Method": "POST", "Resource": "points/A"}}, "batch request 'a': POST cannot be sent without /batch"),
    ({"p": {"Method": "GET", "Resource": "points/A"},
      "a": {"Method": "GET", "ParentIds": ["p"], "RequestTemplate": {"Resource": "streams/{0}/value"},
            "Parameters": ["$.p.Content.WebId", "$.p.Content.Name"]}},
     "batch request 'a': a template needs exactly one parameter here"),
])
def test_sub_requests_piflow_cannot_send_without_batch(body: dict[str, Any], message: str) -> None:
    app = by_path({"points/A": json_body({"WebId": "A", "Name": "P"})})
    assert refused(app, lambda c: run_directly(c, body), PiApiError) == message


def test_a_sub_request_without_any_answer_fails_the_whole_call() -> None:
    # Nothing listens on the port: no status to keep as an item, so the failure itself is raised.
    url = f"http://127.0.0.1:{free_port()}/piwebapi"
    body = {"a": {"Method": "GET", "Resource": "points/A"}}
    assert unreachable(url, lambda c: run_directly(c, body)) == (
        f"the connection was refused: nothing listens on that port; check the host and port in the URL "
        f"[{url}/points/A]")


def unreachable(url: str, job: Callable[[PiClient], Coroutine[Any, Any, Any]]) -> str:
    async def run() -> None:
        async with PiClient(url, retry=fast_retry(1)) as client:
            await job(client)

    with pytest.raises(UnreachableError) as info:
        asyncio.run(run())
    return str(info.value)


def test_page_items_raises_the_error_of_its_page_and_refuses_a_page_without_items() -> None:
    with pytest.raises(PiApiError) as info:
        page_items(BatchItem(404, content={"Errors": ["Unknown element"]}, id="1", resource="elements/E/elements"),
                   "elements of E")
    assert str(info.value) == "elements of E: HTTP 404: Unknown element [elements/E/elements]"
    with pytest.raises(PiApiError) as info:
        page_items(BatchItem(200, content={"Links": {}}, id="1", resource="elements/E/elements"), "elements of E")
    assert str(info.value) == "elements of E: the answer has no Items list [elements/E/elements]"


def test_items_per_ask_refuses_an_answer_that_does_not_match_the_asks() -> None:
    def batch(items: list[Any], status: int = 200) -> Canned:
        return json_body({"0": {"Status": status, "Headers": {}, "Content": {"Items": items}}}, 207)

    asks = [("webId", "A"), ("webId", "B")]
    message = refused(ScriptedApp([batch([{"WebId": "A"}])]),
                      lambda c: items_per_ask(c, "points/multiple", asks, "Items.WebId", each="point"), PiApiError)
    assert message.startswith("points/multiple: the answer does not hold one item per point asked for [")
    message = refused(ScriptedApp([json_body({"0": {"Status": 400, "Headers": {}, "Content": {
        "Errors": ["bad webId"]}}}, 207)]),
        lambda c: items_per_ask(c, "points/multiple", asks, "Items.WebId"), PiApiError)
    assert message.startswith(f"points/multiple: HTTP 400: bad webId [{URL}/points/multiple?webId=A&webId=B")


# ---- streamsets answered without streamsets --------------------------------------------------------------------


def test_a_streamset_resource_piflow_cannot_rebuild_is_named() -> None:
    app = by_path({})
    message = refused(app, lambda c: answer_directly(c, ["streamsets/a/b/c"]), PiApiError)
    assert message == "streamsets/a/b/c: not a streamset resource piflow can read without streamsets"


def test_an_owner_neither_element_nor_event_frame_answers_with_the_last_refusal() -> None:
    app = by_path({})  # every call 404
    (item,) = with_client(app, lambda c: answer_directly(c, ["streamsets/OWNER1/value"]))
    assert (item.status, item.content) == (404, {"Errors": ["no such route"]})
    assert [s.path for s in app.seen] == ["/piwebapi/elements/OWNER1/attributes",
                                          "/piwebapi/eventframes/OWNER1/attributes"]


def test_an_owner_whose_attributes_are_refused_outright_answers_with_that_refusal() -> None:
    app = by_path({"elements/OWNER1/attributes": Canned(403, b'{"Errors": ["no read access"]}')})
    (item,) = with_client(app, lambda c: answer_directly(c, ["streamsets/OWNER1/value"]))
    assert (item.status, item.content) == (403, {"Errors": ["no read access"]})


def test_an_owner_whose_attributes_cannot_be_fetched_at_all_fails_the_call() -> None:
    url = f"http://127.0.0.1:{free_port()}/piwebapi"
    assert unreachable(url, lambda c: answer_directly(c, ["streamsets/OWNER1/value"])) == (
        "the connection was refused: nothing listens on that port; check the host and port in the URL "
        f"[{url}/elements/OWNER1/attributes]")


# ---- identity providers -----------------------------------------------------------------------------------------


def test_an_identity_provider_that_names_no_token_endpoint() -> None:
    app = ScriptedApp([json_body({"issuer": "https://idp.test"})])
    auth = OidcClientCredentials("piflow", "secret")
    message = refused(app, lambda c: c.dataservers(), ConfigError, auth=auth)
    assert message == (f"setting 'auth.token_url': not given and {URL}/.well-known/openid-configuration names no "
                       "token_endpoint")


def test_an_identity_provider_that_answers_without_a_token() -> None:
    app = ScriptedApp([json_body({"token_type": "Bearer", "expires_in": 3600})])
    auth = OidcClientCredentials("piflow", "secret", token_url="http://idp.test/token")
    message = refused(app, lambda c: c.dataservers(), AuthError, auth=auth)
    assert message == "OIDC token response for client 'piflow' has no access_token [http://idp.test/token]"


# ---- a server with no data servers, through the CLI ---------------------------------------------------------------


class EmptyPi(BaseHTTPRequestHandler):
    """Answers every GET with an empty list: a PI Web API that serves no data server."""

    def do_GET(self) -> None:
        body = b'{"Items": [], "Links": {}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def empty_pi() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EmptyPi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/piwebapi"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.loopback
def test_discover_on_a_server_without_data_servers_fails_in_one_line_and_records_the_run(
        empty_pi: str, tmp_path: Path) -> None:
    target = tmp_path / "lake"
    result = CliRunner().invoke(app, ["discover", "--url", empty_pi, "--target", str(target), "--progress", "never"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: the PI Web API lists no data servers"
    runs = DeltaTable(str(target / "pi_ingest_runs")).to_pyarrow_table().to_pylist()
    assert [(r["job"], r["status"], r["message"]) for r in runs] == [
        ("discover", "failed", "the PI Web API lists no data servers")]
