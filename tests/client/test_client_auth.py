"""Auth objects against the emulator's real auth middleware (anonymous, Basic, Bearer, OIDC) and Kerberos.

Any protected emulator endpoint will do to prove authentication; ``assetservers`` is a cheap one.
"""

from __future__ import annotations

import base64
import sys
import types
from datetime import timedelta
from typing import Any

import pytest

from piflow.client import (
    BasicAuth,
    BearerAuth,
    KerberosAuth,
    NoAuth,
    OidcClientCredentials,
    PiHttp,
)
from piflow.client.auth import Auth
from piflow.emulator import state_of
from piflow.errors import AuthError, ConfigError
from tests.client.conftest import EMU_URL, Canned, ScriptedApp, emulator_settings, emulator_transport, fast_retry

pytestmark = pytest.mark.timeout(60)

PROBE = "assetservers"


def emulator_http(auth_mode: str, auth: Auth, **faults: Any) -> tuple[Any, PiHttp]:
    app, transport = emulator_transport(emulator_settings(auth=auth_mode, **faults))
    return app, PiHttp(EMU_URL, auth, transport=transport, retry=fast_retry())


# ---- every mode works --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "auth"), [
    ("anonymous", NoAuth()),
    ("basic", BasicAuth("PIDEMO\\piuser", "pipass")),
    ("bearer", BearerAuth("emulator-static-token")),
    ("oidc", OidcClientCredentials("piflow", "piflow-secret")),
    ("oidc", OidcClientCredentials("piflow", "piflow-secret", scope="piwebapi")),
])
async def test_each_auth_mode_is_accepted(mode: str, auth: Auth) -> None:
    _, http = emulator_http(mode, auth)
    async with http:
        doc = await http.get_json(PROBE)
        assert isinstance(doc["Items"], list)
        assert http.errors == 0


@pytest.mark.parametrize("mode", ["basic", "bearer", "oidc"])
async def test_no_credentials_is_an_auth_error(mode: str) -> None:
    _, http = emulator_http(mode, NoAuth())
    async with http:
        with pytest.raises(AuthError) as info:
            await http.get_json(PROBE)
        assert info.value.status == 401
        assert http.requests == 1


# ---- wrong credentials: AuthError, and no secret anywhere -------------------------------------------------------
async def test_wrong_basic_password_raises_auth_error_without_the_password() -> None:
    auth = BasicAuth("PIDEMO\\piuser", "Wr0ng-Passw0rd")
    _, http = emulator_http("basic", auth)
    async with http:
        with pytest.raises(AuthError) as info:
            await http.get_json(PROBE)
    text = f"{info.value} {info.value.args} {info.value.errors} {info.value.url}"
    assert "Wr0ng-Passw0rd" not in text
    assert base64.b64encode(b"PIDEMO\\piuser:Wr0ng-Passw0rd").decode() not in text
    assert info.value.status == 401
    assert http.requests == 1  # Basic cannot refresh: no second try with the same password


async def test_wrong_oidc_secret_raises_auth_error_naming_the_client_not_the_secret() -> None:
    auth = OidcClientCredentials("piflow", "not-the-secret-42")
    _, http = emulator_http("oidc", auth)
    async with http:
        with pytest.raises(AuthError) as info:
            await http.get_json(PROBE)
    text = f"{info.value} {info.value.args} {info.value.errors}"
    assert "'piflow'" in text
    assert "invalid_client" in text
    assert "not-the-secret-42" not in text
    assert auth.tokens_fetched == 0
    assert http.requests == 2  # discovery and one token request; a refused secret is not sent again


async def test_wrong_bearer_token_is_an_auth_error_without_the_token() -> None:
    _, http = emulator_http("bearer", BearerAuth("tok-that-is-wrong"))
    async with http:
        with pytest.raises(AuthError) as info:
            await http.get_json(PROBE)
    assert "tok-that-is-wrong" not in f"{info.value} {info.value.args} {info.value.errors}"


def test_reprs_hide_every_secret() -> None:
    reprs = [
        repr(BasicAuth("PIDEMO\\piuser", "pw-123456")),
        repr(BearerAuth("bearer-abcdef")),
        repr(OidcClientCredentials("piflow", "oidc-secret-xyz", "https://idp/token", "piwebapi")),
        repr(NoAuth()),
    ]
    joined = " ".join(reprs)
    for secret in ("pw-123456", "bearer-abcdef", "oidc-secret-xyz"):
        assert secret not in joined
    assert "PIDEMO\\\\piuser" in reprs[0]
    assert all("***" in r for r in reprs[:3])
    assert "piflow" in reprs[2]


# ---- OIDC token lifetime -----------------------------------------------------------------------------------------
async def test_oidc_token_expired_on_the_server_is_refreshed_after_one_401() -> None:
    auth = OidcClientCredentials("piflow", "piflow-secret")
    app, http = emulator_http("oidc", auth)
    async with http:
        await http.get_json(PROBE)
        await http.get_json(PROBE)
        assert auth.tokens_fetched == 1
        state_of(app).clock.advance(timedelta(hours=2))  # the token (1 h) dies on the server mid-run
        doc = await http.get_json(PROBE)
        assert isinstance(doc["Items"], list)
        assert auth.tokens_fetched == 2
        assert http.retries == 1  # the one 401, then success
        assert http.errors == 1


async def test_oidc_token_is_renewed_before_it_expires() -> None:
    now = [1000.0]
    auth = OidcClientCredentials("piflow", "piflow-secret", clock=lambda: now[0])
    _, http = emulator_http("oidc", auth)
    async with http:
        await http.get_json(PROBE)
        now[0] += 2000.0  # 2000 s of 3600: still fresh
        await http.get_json(PROBE)
        assert auth.tokens_fetched == 1
        now[0] += 900.0  # 2900 s: past 80 % of the lifetime
        await http.get_json(PROBE)
        assert auth.tokens_fetched == 2
        assert http.errors == 0  # renewed in advance, never refused


async def test_oidc_discovers_the_token_endpoint() -> None:
    auth = OidcClientCredentials("piflow", "piflow-secret")
    assert auth.token_url is None
    _, http = emulator_http("oidc", auth)
    async with http:
        await http.get_json(PROBE)
    assert auth.token_url == "http://emulator.test/identity/connect/token"


async def test_oidc_with_client_secret_basic_only() -> None:
    """A provider that only takes the client in a Basic header gets it there."""

    def idp(seen: Any, n: int) -> Canned:
        if seen.path.endswith("openid-configuration"):
            return Canned(200, b'{"token_endpoint": "http://pi.test/token", '
                               b'"token_endpoint_auth_methods_supported": ["client_secret_basic"]}')
        if seen.path == "/token":
            return Canned(200, b'{"access_token": "at-1", "expires_in": 600}')
        return Canned(200, b'{"Items": []}')

    app = ScriptedApp(idp)
    auth = OidcClientCredentials("my client", "s&cret")
    async with PiHttp("http://pi.test", auth, transport=app.transport()) as http:
        await http.get_json(PROBE)
    token_req = app.seen[1]
    assert token_req.headers["authorization"] == "Basic " + base64.b64encode(b"my%20client:s%26cret").decode()
    assert b"client_secret" not in token_req.body
    assert b"grant_type=client_credentials" in token_req.body
    assert app.seen[2].headers["authorization"] == "Bearer at-1"


async def test_concurrent_401s_fetch_one_new_token() -> None:
    import asyncio

    auth = OidcClientCredentials("piflow", "piflow-secret")
    app, http = emulator_http("oidc", auth)
    async with http:
        await http.get_json(PROBE)
        state_of(app).clock.advance(timedelta(hours=2))
        await asyncio.gather(*(http.get_json(PROBE) for _ in range(5)))
    assert auth.tokens_fetched == 2


async def test_oidc_survives_server_faults_on_token_and_data_calls() -> None:
    auth = OidcClientCredentials("piflow", "piflow-secret")
    app, http = emulator_http("oidc", auth, error_rate=0.3)
    async with http:
        for _ in range(15):
            await http.get_json(PROBE)
        assert http.retries == state_of(app).stats.faults > 0


# ---- Kerberos ----------------------------------------------------------------------------------------------------
def test_kerberos_without_pyspnego_is_a_clear_config_error(no_spnego: None) -> None:
    with pytest.raises(ConfigError, match=r"piflow\[kerberos\]"):
        KerberosAuth(hostname="pi.example.com")


async def test_kerberos_sends_a_negotiate_token_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspnego needs a KDC; a stand-in module gives tokens so the header plumbing is what is tested."""
    made: list[tuple[str, str, str]] = []

    class FakeContext:
        def __init__(self, n: int) -> None:
            self.n = n

        def step(self) -> bytes:
            return f"ticket-{self.n}".encode()

    def client(hostname: str, service: str, protocol: str) -> FakeContext:
        made.append((hostname, service, protocol))
        return FakeContext(len(made))

    monkeypatch.setitem(sys.modules, "spnego", types.SimpleNamespace(client=client))
    app = ScriptedApp([Canned(200, b'{"Items": []}')])
    async with PiHttp("http://pi.test", KerberosAuth(), transport=app.transport()) as http:
        await http.get_json(PROBE)
        await http.get_json(PROBE)
    assert made == [("pi.test", "HTTP", "negotiate")] * 2
    assert [s.headers["authorization"] for s in app.seen] == [
        "Negotiate " + base64.b64encode(b"ticket-1").decode(),
        "Negotiate " + base64.b64encode(b"ticket-2").decode(),
    ]
    assert "ticket" not in repr(KerberosAuth(hostname="h"))


async def test_kerberos_failure_to_get_a_ticket_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def client(hostname: str, service: str, protocol: str) -> Any:
        raise RuntimeError("No Kerberos credentials available (default cache: FILE:/tmp/krb5cc_0)")

    monkeypatch.setitem(sys.modules, "spnego", types.SimpleNamespace(client=client))
    app = ScriptedApp([Canned(200, b"{}")])
    async with PiHttp("http://pi.test", KerberosAuth(), transport=app.transport()) as http:
        with pytest.raises(AuthError, match="No Kerberos credentials"):
            await http.get_json(PROBE)
    assert app.seen == []
