"""TLS against the emulator served over HTTPS with a throw-away CA (real handshakes on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from piflow.client.http import PiHttp
from piflow.client.retry import RetryPolicy
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.errors import ConfigError
from tests.servers import tls_files


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    certfile, keyfile = tls_files(ca, tmp_path_factory.mktemp("tls"))
    with EmulatorServer(EmulatorSettings(points=10), certfile=certfile, keyfile=keyfile) as server:
        yield server


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


ONE_TRY = RetryPolicy(max_attempts=1)


async def test_a_ca_bundle_setting_verifies_the_server(tls_server: EmulatorServer, ca_bundle: str) -> None:
    assert tls_server.url.startswith("https://")
    async with PiHttp(tls_server.url, verify=ca_bundle, retry=ONE_TRY) as http:
        doc = await http.get_json("system/status")
    assert "ServerTime" in doc


async def test_an_unknown_certificate_is_refused_by_default_and_not_retried(tls_server: EmulatorServer) -> None:
    async with PiHttp(tls_server.url) as http:  # the default retry policy: a TLS failure is not retried
        with pytest.raises(ConfigError, match=r"setting 'ca_bundle'.*signed by a CA this machine does not trust"):
            await http.get_json("system/status")
        assert http.requests == 1


async def test_a_plain_http_client_never_reaches_https_unverified(tls_server: EmulatorServer) -> None:
    """A client made for an http:// server (no CA bundle loaded) asked for an https:// link fails closed."""
    with EmulatorServer(EmulatorSettings(points=10)) as plain:
        async with PiHttp(plain.url, retry=ONE_TRY) as http:
            assert "ServerTime" in await http.get_json("system/status")
            with pytest.raises(ConfigError, match=r"setting 'url'.*base URL is plain http://"):
                await http.get_json(f"{tls_server.url}/system/status")


async def test_a_certificate_for_another_name_says_so(tls_server: EmulatorServer, ca_bundle: str) -> None:
    other_name = tls_server.url.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
    async with PiHttp(other_name, verify=ca_bundle, retry=ONE_TRY) as http:
        with pytest.raises(ConfigError, match=r"setting 'url'.*issued for another host name"):
            await http.get_json("system/status")


async def test_a_hashed_ca_directory_verifies_the_server(tls_server: EmulatorServer, ca: trustme.CA,
                                                         tmp_path: Path) -> None:
    """``ca_bundle`` may name an OpenSSL CA directory (files named by subject hash, as c_rehash makes)."""
    import subprocess

    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(pem)], capture_output=True,
                                  text=True, check=True).stdout.strip()
    (tmp_path / f"{subject_hash}.0").symlink_to(pem)
    async with PiHttp(tls_server.url, verify=str(tmp_path), retry=ONE_TRY) as http:
        assert "ServerTime" in await http.get_json("system/status")


async def test_turning_verification_off_reaches_the_server(tls_server: EmulatorServer) -> None:
    async with PiHttp(tls_server.url, verify=False, retry=ONE_TRY) as http:
        assert "ServerTime" in await http.get_json("system/status")
