"""A throw-away MIT Kerberos realm on loopback: a real KDC process, a user with a password, an HTTP service
principal with its keytab. Built in a temporary directory from the Debian packages krb5-kdc,
krb5-admin-server and krb5-user (the Makefile installs them), nothing system-wide is touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REALM = "PIFLOW.TEST"
SERVICE_HOST = "localhost"
# The KDC's tools live in /usr/sbin, which a non-login PATH may lack.
_PATH = {"PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}


@dataclass(frozen=True)
class Realm:
    dir: Path
    env: dict[str, str]  # KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5_KTNAME, KRB5CCNAME for this realm
    user: str
    password: str

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=True,
                              env={**os.environ, **_PATH, **self.env}, timeout=60)

    def kinit(self) -> None:
        """Get the user a ticket in the realm's own credential cache."""
        self.run("kinit", f"{self.user}@{REALM}", stdin=self.password + "\n")

    def kdestroy(self) -> None:
        subprocess.run(["kdestroy", "-q"], env={**os.environ, **_PATH, **self.env}, check=False,
                       capture_output=True)


def _free_port() -> int:
    """A port free for both TCP and UDP (the KDC listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


@contextmanager
def kdc(tmp: Path) -> Iterator[Realm]:
    port = _free_port()
    (tmp / "krb5.conf").write_text(f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{port}
    }}
[domain_realm]
    {SERVICE_HOST} = {REALM}
""")
    (tmp / "kdc.conf").write_text(f"""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}
[realms]
    {REALM} = {{
        database_name = {tmp}/principal
        key_stash_file = {tmp}/stash
        acl_file = {tmp}/kadm5.acl
        max_life = 1h
    }}
[logging]
    kdc = FILE:{tmp}/kdc.log
""")
    (tmp / "kadm5.acl").write_text("")
    missing = [b for b in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
               if shutil.which(b, path=_PATH["PATH"]) is None]
    if missing:
        raise RuntimeError(f"MIT Kerberos tools missing: {', '.join(missing)} (Debian: apt-get install krb5-kdc "
                           "krb5-admin-server krb5-user; `make test` does this)")
    env = {"KRB5_CONFIG": str(tmp / "krb5.conf"), "KRB5_KDC_PROFILE": str(tmp / "kdc.conf"),
           "KRB5_KTNAME": f"FILE:{tmp}/http.keytab", "KRB5CCNAME": f"FILE:{tmp}/ccache"}
    realm = Realm(tmp, env, "alice", "Alice-Test-Passw0rd")
    realm.run("kdb5_util", "create", "-s", "-r", REALM, "-P", "master-password-for-a-test-realm")
    realm.run("kadmin.local", "-r", REALM, "-q", f"addprinc -pw {realm.password} {realm.user}")
    realm.run("kadmin.local", "-r", REALM, "-q", f"addprinc -randkey HTTP/{SERVICE_HOST}")
    realm.run("kadmin.local", "-r", REALM, "-q", f"ktadd -k {tmp}/http.keytab HTTP/{SERVICE_HOST}")
    proc = subprocess.Popen(["krb5kdc", "-n", "-r", REALM], env={**os.environ, **_PATH, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate(timeout=10)
                raise RuntimeError(f"krb5kdc did not start: {err!r}")
            time.sleep(0.05)
        yield realm
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # waits, and closes the stderr pipe
