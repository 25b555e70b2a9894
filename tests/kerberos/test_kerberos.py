"""Kerberos end to end: a real KDC, a ticket from kinit, SPNEGO tokens from pyspnego, and the emulator
checking them with GSSAPI against the service keytab."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from piflow.client.auth import KerberosAuth
from piflow.client.http import PiHttp
from piflow.client.retry import RetryPolicy
from piflow.config import PiflowSettings
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.settings import AuthSettings
from piflow.errors import AuthError
from piflow.jobs.discover import run_discover

from .kdc import SERVICE_HOST, Realm, kdc

pytestmark = pytest.mark.loopback


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    with kdc(tmp_path_factory.mktemp("krb5")) as r:
        yield r


@pytest.fixture
def krb_env(realm: Realm, monkeypatch: pytest.MonkeyPatch) -> Realm:
    """This realm's configuration, keytab and credential cache for everything in this process."""
    for k, v in realm.env.items():
        monkeypatch.setenv(k, v)
    return realm


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorSettings(points=20, auth=AuthSettings(mode="kerberos"))) as srv:
        yield srv


ONE_TRY = RetryPolicy(max_attempts=2)


async def test_a_ticket_from_kinit_opens_the_api(krb_env: Realm, server: EmulatorServer) -> None:
    krb_env.kinit()
    async with PiHttp(server.url, KerberosAuth(hostname=SERVICE_HOST), retry=ONE_TRY) as http:
        doc = await http.get_json("dataservers")
    assert doc["Items"]


async def test_no_ticket_is_a_clear_auth_error(krb_env: Realm, server: EmulatorServer) -> None:
    krb_env.kdestroy()
    async with PiHttp(server.url, KerberosAuth(hostname=SERVICE_HOST), retry=ONE_TRY) as http:
        with pytest.raises(AuthError, match=rf"Kerberos gave no token for HTTP/{SERVICE_HOST}"):
            await http.get_json("dataservers")


async def test_a_service_the_keytab_does_not_hold_is_refused(krb_env: Realm, server: EmulatorServer) -> None:
    krb_env.kinit()
    krb_env.run("kadmin.local", "-q", "addprinc -randkey HTTP/elsewhere")  # known to the KDC, not in the keytab
    async with PiHttp(server.url, KerberosAuth(hostname="elsewhere"), retry=ONE_TRY) as http:
        with pytest.raises(AuthError) as caught:
            await http.get_json("dataservers")
    assert caught.value.status == 401


async def test_anonymous_requests_get_the_negotiate_challenge(krb_env: Realm, server: EmulatorServer) -> None:
    async with PiHttp(server.url, retry=ONE_TRY) as http:
        with pytest.raises(AuthError) as caught:
            await http.get_json("dataservers")
    assert caught.value.status == 401


def test_a_job_runs_with_auth_kerberos(krb_env: Realm, server: EmulatorServer, tmp_path: Path) -> None:
    krb_env.kinit()
    result = asyncio.run(run_discover(PiflowSettings(url=server.url.replace("127.0.0.1", SERVICE_HOST),
                                                     auth="kerberos", target=str(tmp_path), points="*")))
    assert result.status == "ok"
    assert result.points == 20
