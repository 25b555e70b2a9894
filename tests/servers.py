"""Small helpers for tests that start servers: a free loopback port, and certificate files for a TLS emulator."""

from __future__ import annotations

import socket
from pathlib import Path

import trustme


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tls_files(ca: trustme.CA, folder: Path, host: str = "127.0.0.1") -> tuple[str, str]:
    """A certificate for ``host`` issued by ``ca``, written as (chain file, key file) into ``folder``."""
    cert = ca.issue_cert(host)
    certfile, keyfile = folder / "server.pem", folder / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)
