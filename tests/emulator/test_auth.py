"""Authentication modes, OIDC client credentials and the CSRF rule, through the real app in-process."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.testclient import TestClient, WebSocketDenialResponse

from piflow.emulator import AuthSettings, EmulatorSettings, create_app, state_of
from piflow.emulator.state import EmulatorState

PROBE = "/piwebapi/_probe"
XRW = {"X-Requested-With": "test"}
MakeClient = Callable[..., TestClient]
USERS = {"PLANT\\alice": "s3cret:with:colons", "bob": "hunter2"}


async def _probe() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


def make_app(mode: str, **auth: object) -> FastAPI:
    settings = EmulatorSettings(points=20, now=datetime(2026, 1, 1, tzinfo=UTC), frozen=True,
                                auth=AuthSettings(mode=mode, users=USERS, **auth))  # type: ignore[arg-type]
    app = create_app(settings)
    # A route of our own under /piwebapi, so that these tests do not depend on other route modules.
    app.add_api_route(PROBE, _probe, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    return app


@pytest.fixture
def client_for() -> Iterator[MakeClient]:
    with ExitStack() as stack:
        yield lambda mode, **auth: stack.enter_context(TestClient(make_app(mode, **auth)))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def state(client: TestClient) -> EmulatorState:
    return state_of(client.app)  # type: ignore[arg-type]


# ---- anonymous, basic, bearer --------------------------------------------------------------------------------

def test_anonymous_lets_everything_through(client_for: MakeClient) -> None:
    c = client_for("anonymous")
    assert c.get(PROBE).status_code == 200
    assert c.post(PROBE, headers=XRW).status_code == 200


def test_basic_accepts_configured_users(client_for: MakeClient) -> None:
    c = client_for("basic")
    assert c.get(PROBE, headers=basic("PLANT\\alice", "s3cret:with:colons")).status_code == 200
    assert c.get(PROBE, headers=basic("plant\\ALICE", "s3cret:with:colons")).status_code == 200  # names ignore case
    assert c.get(PROBE, headers=basic("alice@PLANT", "s3cret:with:colons")).status_code == 200  # UPN form
    assert c.get(PROBE, headers=basic("bob", "hunter2")).status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    basic("PLANT\\alice", "wrong"),
    basic("PLANT\\alice", "S3CRET:with:colons"),  # passwords do not ignore case
    basic("alice", "s3cret:with:colons"),  # the domain is part of the account
    basic("OTHER\\alice", "s3cret:with:colons"),
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    {"Authorization": "Bearer emulator-static-token"},
])
def test_basic_refuses_everything_else(client_for: MakeClient, headers: dict[str, str]) -> None:
    c = client_for("basic")
    r = c.get(PROBE, headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="PI Web API"'
    assert isinstance(r.json()["Errors"], list)
    assert r.json()["Errors"]


def test_bearer_accepts_exactly_the_static_token(client_for: MakeClient) -> None:
    c = client_for("bearer", bearer_token="tok-123")
    assert c.get(PROBE, headers={"Authorization": "Bearer tok-123"}).status_code == 200
    for headers in ({}, {"Authorization": "Bearer tok-1234"}, {"Authorization": "Bearer"}, basic("bob", "hunter2")):
        r = c.get(PROBE, headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["Errors"]


def test_paths_outside_piwebapi_are_not_guarded(client_for: MakeClient) -> None:
    c = client_for("bearer")
    # No route there: what matters is that the answer is the router's 404, not the middleware's 401.
    assert c.get("/_emulator/nothing-here").status_code == 404


# ---- CSRF ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_need_x_requested_with(client_for: MakeClient, method: str) -> None:
    c = client_for("anonymous")
    r = c.request(method, PROBE)
    assert r.status_code == 400
    assert "X-Requested-With" in r.json()["Errors"][0]
    assert c.request(method, PROBE, headers=XRW).status_code == 200
    assert c.get(PROBE).status_code == 200


def test_csrf_applies_to_real_routes(client_for: MakeClient) -> None:
    c = client_for("anonymous")
    webid = state(c).model.point(0, 1).webid
    assert c.post(f"/piwebapi/streams/{webid}/updates").status_code == 400
    assert c.post(f"/piwebapi/streams/{webid}/updates", headers=XRW).status_code == 200


def test_authentication_comes_before_csrf(client_for: MakeClient) -> None:
    c = client_for("basic")
    assert c.post(PROBE).status_code == 401
    assert c.post(PROBE, headers=basic("bob", "hunter2")).status_code == 400


# ---- OpenID Connect ------------------------------------------------------------------------------------------

def get_token(c: TestClient) -> str:
    r = c.post("/identity/connect/token", data={"grant_type": "client_credentials", "client_id": "piflow",
                                                "client_secret": "piflow-secret"})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def test_discovery_document(client_for: MakeClient) -> None:
    c = client_for("oidc")
    r = c.get("/piwebapi/.well-known/openid-configuration")  # no credentials needed
    assert r.status_code == 200
    doc = r.json()
    assert doc["token_endpoint"] == "http://testserver/identity/connect/token"
    assert doc["jwks_uri"].startswith("http://testserver/")
    assert doc["issuer"].startswith("http://testserver/")
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert c.get(doc["jwks_uri"]).status_code == 200


def test_discovery_is_absent_unless_oidc(client_for: MakeClient) -> None:
    c = client_for("basic")
    r = c.get("/piwebapi/.well-known/openid-configuration")
    assert r.status_code == 404
    assert r.json()["Errors"]


def test_client_credentials_in_the_form_or_basic(client_for: MakeClient) -> None:
    c = client_for("oidc", oidc_clients={"svc": "pa ss&word"}, token_ttl_s=900)
    r = c.post("/identity/connect/token", data={"grant_type": "client_credentials", "client_id": "svc",
                                                "client_secret": "pa ss&word", "scope": "piwebapi"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["access_token"]
    # RFC 6749: with Basic, id and secret are form-url-encoded before base64.
    r2 = c.post("/identity/connect/token", data={"grant_type": "client_credentials"},
                headers=basic("svc", "pa+ss%26word"))
    assert r2.status_code == 200
    assert r2.json()["access_token"] != body["access_token"]
    for token in (body["access_token"], r2.json()["access_token"]):
        assert c.get(PROBE, headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize(("data", "status", "error"), [
    ({"grant_type": "client_credentials", "client_id": "piflow", "client_secret": "nope"}, 401, "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": "who", "client_secret": "piflow-secret"}, 401,
     "invalid_client"),
    ({"grant_type": "client_credentials"}, 401, "invalid_client"),
    ({"grant_type": "password", "client_id": "piflow", "client_secret": "piflow-secret"}, 400,
     "unsupported_grant_type"),
])
def test_token_endpoint_refusals(client_for: MakeClient, data: dict[str, str], status: int,
                                 error: str) -> None:
    c = client_for("oidc")
    r = c.post("/identity/connect/token", data=data)
    assert r.status_code == status
    assert r.json()["error"] == error


def test_token_endpoint_wants_a_form(client_for: MakeClient) -> None:
    c = client_for("oidc")
    r = c.post("/identity/connect/token", json={"grant_type": "client_credentials", "client_id": "piflow",
                                                "client_secret": "piflow-secret"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def test_tokens_expire_on_the_virtual_clock(client_for: MakeClient) -> None:
    c = client_for("oidc", token_ttl_s=600)
    token = get_token(c)
    auth = {"Authorization": f"Bearer {token}"}
    state(c).clock.advance(timedelta(seconds=599))
    assert c.get(PROBE, headers=auth).status_code == 200
    state(c).clock.advance(timedelta(seconds=2))
    r = c.get(PROBE, headers=auth)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert r.json()["Errors"]
    assert c.get(PROBE, headers={"Authorization": f"Bearer {get_token(c)}"}).status_code == 200


def test_unknown_tokens_and_missing_ones(client_for: MakeClient) -> None:
    c = client_for("oidc")
    r = c.get(PROBE, headers={"Authorization": "Bearer emulator-static-token"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    r = c.get(PROBE)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_tokens_are_deterministic_per_seed() -> None:
    def tokens() -> list[str]:
        with TestClient(make_app("oidc")) as c:
            return [get_token(c) for _ in range(3)]

    first, second = tokens(), tokens()
    assert first == second
    assert len(set(first)) == 3


def test_token_endpoint_needs_no_csrf_header_but_piwebapi_posts_do(client_for: MakeClient) -> None:
    c = client_for("oidc")
    auth = {"Authorization": f"Bearer {get_token(c)}"}  # get_token posts without X-Requested-With
    assert c.post(PROBE, headers=auth).status_code == 400
    assert c.post(PROBE, headers={**auth, **XRW}).status_code == 200


# ---- WebSockets and logging ----------------------------------------------------------------------------------

def test_websocket_handshakes_are_authenticated(client_for: MakeClient) -> None:
    c = client_for("basic")
    url = f"/piwebapi/streams/{state(c).model.point(0, 2).webid}/channel?includeInitialValues=true"
    with pytest.raises(WebSocketDenialResponse) as refused, c.websocket_connect(url):
        pass
    assert refused.value.status_code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Basic realm="PI Web API"'
    with c.websocket_connect(url, headers=basic("bob", "hunter2")) as ws:
        first = ws.receive_json()
    assert first["Items"][0]["WebId"] == state(c).model.point(0, 2).webid


def test_credentials_never_reach_the_logs(client_for: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = client_for("basic")
    c.get(PROBE, headers=basic("PLANT\\alice", "s3cret:with:colons"))
    c.get(PROBE, headers=basic("PLANT\\alice", "guess-password-xyz"))
    o = client_for("oidc")
    token = get_token(o)
    o.get(PROBE, headers={"Authorization": f"Bearer {token}"})
    o.post("/identity/connect/token", data={"grant_type": "client_credentials", "client_id": "piflow",
                                            "client_secret": "wrong-secret-xyz"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("s3cret", "guess-password-xyz", "piflow-secret", "wrong-secret-xyz", token):
        assert secret not in text
