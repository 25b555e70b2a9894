"""PiHttp against scripted servers: malformed answers, dropped and truncated connections, 429/503, counters.

The in-process scripted ASGI app gives exact control of status, headers and body; the raw TCP server gives
real sockets (connection closed mid-body, never answered, refused).
"""

from __future__ import annotations

import logging
import random
import socket

import httpx2
import orjson
import pytest

from piflow.client import BasicAuth, BearerAuth, PiHttp, RetryPolicy
from piflow.decode import decode_stream_page
from piflow.emulator.server import EmulatorServer
from piflow.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerBusyError,
    TooManyItemsError,
    TransientError,
    UnreachableError,
)
from tests.client.conftest import STALL, Canned, RawServer, RecordingSleep, ScriptedApp, fast_retry, http_reply

pytestmark = pytest.mark.timeout(60)

URL = "http://pi.test/piwebapi"
GOOD = b'{"Items": [{"Timestamp": "2026-01-05T10:00:00Z", "Value": 1.5}]}'
HTML = b"<html><head><title>Sign in</title></head><body>Corporate proxy login</body></html>"


def scripted_http(app: ScriptedApp, attempts: int = 4, **kw: object) -> PiHttp:
    return PiHttp(URL, transport=app.transport(), retry=fast_retry(attempts), **kw)  # type: ignore[arg-type]


# ---- malformed 2xx bodies ------------------------------------------------------------------------------------------
async def test_html_page_on_200_is_retried_then_the_json_is_returned() -> None:
    app = ScriptedApp([Canned(200, HTML, {"content-type": "text/html"}), Canned(200, GOOD)])
    async with scripted_http(app) as http:
        assert await http.get_json("streams/X/recorded") == orjson.loads(GOOD)
        assert (http.requests, http.retries, http.errors) == (2, 1, 1)


async def test_html_page_every_time_ends_in_bad_response_error_naming_the_url() -> None:
    app = ScriptedApp([Canned(200, HTML, {"content-type": "text/html"})])
    async with scripted_http(app, attempts=3) as http:
        with pytest.raises(BadResponseError, match="HTML page") as info:
            await http.get_bytes("streams/X/recorded", [("maxCount", 10)])
        assert "http://pi.test/piwebapi/streams/X/recorded?maxCount=10" in str(info.value)
        assert (http.requests, http.retries, http.errors) == (3, 2, 3)


@pytest.mark.parametrize("body", [GOOD[:-7], b'{"Items": [1, 2,, 3]}', b"null garbage"])
async def test_malformed_json_is_a_bad_response_for_bytes_and_json(body: bytes) -> None:
    app = ScriptedApp([Canned(200, body)])
    async with scripted_http(app, attempts=2) as http:
        with pytest.raises(BadResponseError):
            await http.get_bytes("x")
        with pytest.raises(BadResponseError):
            await http.get_json("x")
        assert http.requests == 4


async def test_web_exception_in_a_200_fails_the_page_and_is_retried() -> None:
    web_exc = b'{"WebException": {"StatusCode": 500, "Errors": ["Stream read failed"]}}'
    app = ScriptedApp([Canned(200, web_exc), Canned(200, GOOD)])
    async with scripted_http(app) as http:
        assert await http.get_bytes("streams/X/recorded") == GOOD
        assert http.retries == 1
    app = ScriptedApp([Canned(200, web_exc)])
    async with scripted_http(app, attempts=2) as http:
        with pytest.raises(BadResponseError) as info:
            await http.get_bytes("streams/X/recorded")
        assert info.value.errors == ["Stream read failed"]


async def test_typed_decode_retries_an_html_page_then_returns_the_page() -> None:
    app = ScriptedApp([Canned(200, HTML, {"content-type": "text/html"}), Canned(200, GOOD)])
    async with scripted_http(app) as http:
        page = await http.get_decoded("streams/X/recorded", None, decode_stream_page)
        assert [(v.Timestamp, v.Value) for v in page.Items] == [("2026-01-05T10:00:00Z", 1.5)]
        assert (http.requests, http.retries) == (2, 1)
    app = ScriptedApp([Canned(200, HTML, {"content-type": "text/html"})])
    async with scripted_http(app, attempts=2) as http:
        with pytest.raises(BadResponseError, match="HTML page"):
            await http.get_decoded("streams/X/recorded", None, decode_stream_page)
        assert http.requests == 2


@pytest.mark.parametrize("body", [b'{"Items": 5}', GOOD[:-7]])
async def test_typed_decode_of_a_body_that_is_no_pi_page_is_retried_then_a_bad_response(body: bytes) -> None:
    app = ScriptedApp([Canned(200, body)])
    async with scripted_http(app, attempts=3) as http:
        with pytest.raises(BadResponseError) as info:
            await http.get_decoded("streams/X/recorded", None, decode_stream_page)
        assert "http://pi.test/piwebapi/streams/X/recorded" in str(info.value)
        assert http.requests == 3


# ---- truncated bodies, dropped connections, timeouts --------------------------------------------------------------
async def test_content_length_mismatch_in_process_is_a_network_error() -> None:
    app = ScriptedApp([Canned(200, GOOD, content_length=len(GOOD) + 40)])
    async with scripted_http(app, attempts=2) as http:
        with pytest.raises(NetworkError, match="truncated body"):
            await http.get_bytes("x")
        assert http.requests == 2


async def test_truncated_body_over_a_real_socket_is_retried() -> None:
    cut = http_reply(GOOD[:20], declared=len(GOOD))
    async with RawServer([cut, http_reply(GOOD)]) as srv, PiHttp(srv.url, retry=fast_retry()) as http:
        assert await http.get_bytes("streams/X/recorded") == GOOD
        assert srv.connections == 2
        assert http.retries == 1


async def test_truncated_body_every_time_raises_network_error_from_the_http_library() -> None:
    cut = http_reply(GOOD[:20], declared=len(GOOD))
    async with RawServer([cut]) as srv, PiHttp(srv.url, retry=fast_retry(3)) as http:
        with pytest.raises(NetworkError) as info:
            await http.get_bytes("streams/X/recorded")
        assert isinstance(info.value.__cause__, httpx2.HTTPError)
        assert srv.url + "/streams/X/recorded" in str(info.value)
        assert srv.connections == 3


async def test_dropped_connections_are_retried() -> None:
    async with RawServer([None, None, http_reply(GOOD)]) as srv, PiHttp(srv.url, retry=fast_retry()) as http:
        assert await http.get_json("x") == orjson.loads(GOOD)
        assert (srv.connections, http.retries, http.errors) == (3, 2, 2)


async def test_a_server_that_never_answers_times_out_into_a_retry() -> None:
    async with RawServer([STALL, http_reply(GOOD)]) as srv:
        http = PiHttp(srv.url, retry=fast_retry(), timeout_s=0.3)
        async with http:
            assert await http.get_bytes("x") == GOOD
            assert http.retries == 1


async def test_a_port_nothing_listens_on_fails_at_once_with_the_cause() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeper = RecordingSleep()
    async with PiHttp(f"http://127.0.0.1:{port}", retry=fast_retry(3), sleep=sleeper) as http:
        with pytest.raises(UnreachableError, match="refused: nothing listens on that port") as info:
            await http.get_json("system")
        assert isinstance(info.value.__cause__, httpx2.ConnectError)
        assert not isinstance(info.value, TransientError)
        assert sleeper.delays == []
        assert http.requests == 1


async def test_an_unknown_host_fails_at_once() -> None:
    sleeper = RecordingSleep()
    async with PiHttp("http://no-such-host.invalid", retry=fast_retry(3), sleep=sleeper) as http:
        with pytest.raises(UnreachableError, match="host name is unknown"):
            await http.get_json("system")
        assert http.requests == 1
        assert sleeper.delays == []


@pytest.mark.loopback
async def test_https_to_a_plain_http_server_fails_at_once_naming_the_scheme() -> None:
    with EmulatorServer() as srv:
        sleeper = RecordingSleep()
        async with PiHttp(f"https://127.0.0.1:{srv.port}", retry=fast_retry(3), sleep=sleeper) as http:
            with pytest.raises(UnreachableError, match="does not speak TLS"):
                await http.get_json("system")
            assert http.requests == 1
            assert sleeper.delays == []


@pytest.mark.loopback
async def test_a_refused_connection_after_an_answer_is_a_restart_and_retried() -> None:
    sleeper = RecordingSleep()
    srv = EmulatorServer().start()
    async with PiHttp(srv.url, retry=fast_retry(3), sleep=sleeper) as http:
        await http.get_json("system")
        srv.stop()
        with pytest.raises(NetworkError) as info:
            await http.get_json("system")
        assert isinstance(info.value.__cause__, httpx2.ConnectError)
        assert len(sleeper.delays) == 2
        assert http.requests == 4


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError, match="user name or password") as info:
        PiHttp("http://alice:s3cret-pw@127.0.0.1:1/piwebapi")
    assert "s3cret-pw" not in str(info.value)


# ---- 429 and 5xx -------------------------------------------------------------------------------------------------
def _limited(retry_after: str) -> Canned:
    return Canned(429, b'{"Errors": ["Rate limit was reached"]}',
                  {"content-type": "application/json", "retry-after": retry_after})


async def test_429_storm_waits_as_long_as_retry_after_says() -> None:
    app = ScriptedApp([_limited("2"), _limited("3"), _limited("2"), Canned(200, GOOD)])
    sleeper = RecordingSleep()
    policy = RetryPolicy(max_attempts=8, base_s=0.001, cap_s=60.0, rng=random.Random(3))
    async with PiHttp(URL, transport=app.transport(), retry=policy, sleep=sleeper) as http:
        assert await http.get_bytes("streamsets/recorded") == GOOD
        assert sleeper.delays == [2.0, 3.0, 2.0]
        assert (http.requests, http.retries, http.errors) == (4, 3, 3)


async def test_429_without_end_raises_rate_limited_with_the_hint() -> None:
    app = ScriptedApp([_limited("5")])
    sleeper = RecordingSleep()
    policy = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=4.0, rng=random.Random(3))
    async with PiHttp(URL, transport=app.transport(), retry=policy, sleep=sleeper) as http:
        with pytest.raises(RateLimitedError) as info:
            await http.get_bytes("x")
        assert info.value.retry_after == 5.0
        assert info.value.errors == ["Rate limit was reached"]
        assert sleeper.delays == [4.0, 4.0]  # Retry-After honoured up to the policy's cap


async def test_503s_back_off_exponentially_then_raise_server_busy() -> None:
    busy = Canned(503, b'{"Errors": ["The service is unavailable."]}')
    app = ScriptedApp([busy])
    sleeper = RecordingSleep()
    policy = RetryPolicy(max_attempts=5, base_s=1.0, cap_s=100.0, jitter=False)
    async with PiHttp(URL, transport=app.transport(), retry=policy, sleep=sleeper) as http:
        with pytest.raises(ServerBusyError) as info:
            await http.get_json("x")
        assert info.value.status == 503
        assert sleeper.delays == [1.0, 2.0, 4.0, 8.0]
        assert (http.requests, http.retries, http.errors) == (5, 4, 5)


async def test_503s_then_success() -> None:
    app = ScriptedApp([Canned(502, HTML, {"content-type": "text/html"}), Canned(503), Canned(200, GOOD)])
    async with scripted_http(app) as http:
        assert await http.get_bytes("x") == GOOD
        assert http.retries == 2


# ---- fatal statuses are not retried ------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "errors", "cls"), [
    (404, ["Unknown or invalid WebID 'X'."], NotFoundError),
    (400, ["The parameter 'maxCount' is invalid."], BadRequestError),
    (400, ["The number of items 300000 is greater than the maximum allowed (150000)."], TooManyItemsError),
    (403, ["Forbidden."], AuthError),
])
async def test_fatal_statuses_raise_at_once_with_pi_errors(status: int, errors: list[str], cls: type) -> None:
    app = ScriptedApp([Canned(status, orjson.dumps({"Errors": errors}))])
    async with scripted_http(app) as http:
        with pytest.raises(cls) as info:
            await http.get_json("streams/X/value")
        assert info.value.errors == errors
        assert info.value.status == status
        assert (http.requests, http.retries, http.errors) == (1, 0, 1)


async def test_401_with_a_static_credential_is_not_retried() -> None:
    app = ScriptedApp([Canned(401, b'{"Errors": ["Authorization has been denied for this request."]}')])
    async with scripted_http(app, auth=BearerAuth("tok-123")) as http:
        with pytest.raises(AuthError):
            await http.get_json("system")
        assert http.requests == 1


async def test_a_secret_echoed_by_the_server_is_scrubbed_from_the_exception() -> None:
    def echo(seen: object, n: int) -> Canned:
        auth = getattr(seen, "headers", {}).get("authorization", "")
        return Canned(400, orjson.dumps({"Errors": [f"Bad header {auth}", "password was s3cr3t!"]}))

    app = ScriptedApp(echo)
    async with scripted_http(app, auth=BasicAuth("PIDEMO\\piuser", "s3cr3t!")) as http:
        with pytest.raises(BadRequestError) as info:
            await http.get_json("x")
    text = str(info.value) + repr(info.value.args) + " ".join(info.value.errors)
    assert "s3cr3t!" not in text
    assert app.seen[0].headers["authorization"].split()[1] not in text
    assert "***" in text


# ---- what goes on the wire ---------------------------------------------------------------------------------------
async def test_post_sends_x_requested_with_and_a_json_body() -> None:
    app = ScriptedApp([Canned(207, b'{"a": {"Status": 200, "Headers": {}, "Content": {}}}')])
    async with scripted_http(app) as http:
        answer = await http.post_json("batch", {"a": {"Method": "GET", "Resource": "x"}})
    assert answer == {"a": {"Status": 200, "Headers": {}, "Content": {}}}
    seen = app.seen[0]
    assert seen.method == "POST"
    assert seen.path == "/piwebapi/batch"
    assert seen.headers["x-requested-with"] == "XMLHttpRequest"
    assert seen.headers["content-type"] == "application/json"
    assert orjson.loads(seen.body) == {"a": {"Method": "GET", "Resource": "x"}}


async def test_get_has_no_csrf_header_repeats_params_and_identifies_itself() -> None:
    app = ScriptedApp([Canned(200, GOOD)])
    async with PiHttp("http://pi.test/", transport=app.transport(), user_agent="piflow-test/1") as http:
        await http.get_bytes("/streamsets/recorded", [("webId", "A"), ("webId", "B"), ("maxCount", 10)])
    seen = app.seen[0]
    assert seen.path == "/piwebapi/streamsets/recorded"
    assert seen.query == [("webId", "A"), ("webId", "B"), ("maxCount", "10")]
    assert "x-requested-with" not in seen.headers
    assert seen.headers["user-agent"] == "piflow-test/1"
    assert seen.headers["accept"] == "application/json"


async def test_absolute_links_are_followed_as_given() -> None:
    app = ScriptedApp([Canned(200, GOOD)])
    async with scripted_http(app) as http:
        await http.get_json("http://pi.test/piwebapi/streams/Y/recorded?startTime=*-1d")
    assert app.seen[0].path == "/piwebapi/streams/Y/recorded"
    assert app.seen[0].query == [("startTime", "*-1d")]


async def test_counters_add_up_over_failures_and_successes() -> None:
    busy = b'{"Errors": ["busy"]}'
    app = ScriptedApp([Canned(503, busy), Canned(200, GOOD), Canned(200, GOOD)])
    async with scripted_http(app) as http:
        await http.get_bytes("a")
        await http.get_bytes("b")
        assert http.requests == 3
        assert http.retries == 1
        assert http.errors == 1
        assert http.bytes_received == len(busy) + 2 * len(GOOD)


async def test_max_rps_paces_requests_through_the_injected_clock() -> None:
    now = [0.0]

    async def fake_sleep(s: float) -> None:
        now[0] += s

    app = ScriptedApp([Canned(200, GOOD)])
    async with PiHttp(URL, transport=app.transport(), max_rps=4.0, sleep=fake_sleep,
                      clock=lambda: now[0]) as http:
        for _ in range(12):
            await http.get_bytes("x")
    # a burst of 4, then one every 0.25 s
    assert now[0] == pytest.approx(2.0)
    assert len(app.seen) == 12


# ---- TLS and configuration ---------------------------------------------------------------------------------------
async def test_disabling_tls_verification_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="piflow.client.http")
    app = ScriptedApp([Canned(200, GOOD)])
    async with PiHttp("https://pi.test", verify=False, transport=app.transport()) as http:
        await http.get_bytes("a")
        await http.get_bytes("b")
    warnings = [r for r in caplog.records if "TLS verification is disabled" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


async def test_verified_tls_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="piflow.client.http")
    async with PiHttp("https://pi.test"):
        pass
    assert not [r for r in caplog.records if "TLS" in r.getMessage()]


def test_a_missing_ca_bundle_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="verify"):
        PiHttp("https://pi.test", verify="/nonexistent/ca-bundle.pem")


async def test_debug_log_has_no_headers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="piflow.client")
    app = ScriptedApp([Canned(503), Canned(200, GOOD)])
    async with scripted_http(app, auth=BasicAuth("PIDEMO\\piuser", "pipass-x")) as http:
        await http.get_bytes("streams/X/recorded")
    lines = [r.getMessage() for r in caplog.records]
    assert any("GET /piwebapi/streams/X/recorded -> 200" in m for m in lines)
    assert any(r.levelno == logging.WARNING and "retrying" in r.getMessage() for r in caplog.records)
    joined = "\n".join(lines)
    assert "pipass-x" not in joined
    assert "Basic " not in joined
