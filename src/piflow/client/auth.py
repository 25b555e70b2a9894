"""Authentication for the PI Web API: none, Basic, Bearer, OIDC client credentials, Kerberos (Negotiate).

An auth object adds headers to each request (:meth:`Auth.apply`) and, after a 401, says whether one more
attempt is worth it (:meth:`Auth.refresh`). It never shows a secret: ``repr`` masks them and
:meth:`Auth.secrets` lists them so that the HTTP layer can scrub them from any error text it builds.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from piflow.errors import AuthError, BadRequestError, ConfigError, PiApiError

MASK = "***"


class AuthHttp(Protocol):
    """What an auth object may ask of the HTTP layer: the base URL and unauthenticated calls (tokens)."""

    @property
    def base_url(self) -> str: ...

    async def fetch_unauthenticated(
        self, method: str, url: str, *, form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any: ...


class Auth:
    """Base class: no headers, nothing to refresh, no secrets."""

    async def apply(self, headers: dict[str, str], http: AuthHttp) -> None:
        """Add this scheme's headers to one outgoing request."""

    async def refresh(self, failed_headers: Mapping[str, str] | None = None) -> bool:
        """Called once after a 401 (with the headers that failed); True if a new attempt may succeed."""
        return False

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a log line or an exception message."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAuth(Auth):
    """Anonymous access (PI Web API ``AuthenticationMethods`` = Anonymous)."""


class BasicAuth(Auth):
    """HTTP Basic; a domain account is written ``DOMAIN\\user``. Retrying the same password is pointless."""

    def __init__(self, username: str, password: str) -> None:
        if not username:
            raise ConfigError("auth.username", "is empty")
        self.username = username
        self._password = password
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    async def apply(self, headers: dict[str, str], http: AuthHttp) -> None:
        headers["Authorization"] = self._header

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._password, self._header.split(" ", 1)[1]) if s)

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password={MASK})"


class BearerAuth(Auth):
    """A static bearer token (for example one issued out of band); it cannot be refreshed."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("auth.token", "is empty")
        self._token = token

    async def apply(self, headers: dict[str, str], http: AuthHttp) -> None:
        headers["Authorization"] = f"Bearer {self._token}"

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def __repr__(self) -> str:
        return f"BearerAuth(token={MASK})"


def _errors_of(exc: PiApiError) -> str:
    return "; ".join(exc.errors) or exc.message


class OidcClientCredentials(Auth):
    """OpenID Connect client-credentials grant (PI Web API 2023 and later).

    The token endpoint is discovered from ``{base}/.well-known/openid-configuration`` unless given. A token is
    renewed *before* it expires (at ``refresh_fraction`` of its lifetime or ``refresh_margin_s`` before the
    end, whichever is earlier) so that long runs do not stall on 401s; a 401 still forces a new token once.
    ``clock`` is injectable (monotonic seconds) so that tests can move time.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_url: str | None = None,
        scope: str | None = None,
        *,
        refresh_fraction: float = 0.8,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not client_id:
            raise ConfigError("auth.client_id", "is empty")
        self.client_id = client_id
        self._secret = client_secret
        self.token_url = token_url
        self.scope = scope
        self.refresh_fraction = refresh_fraction
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._use_basic = False
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    async def apply(self, headers: dict[str, str], http: AuthHttp) -> None:
        headers["Authorization"] = f"Bearer {await self._current(http)}"

    async def refresh(self, failed_headers: Mapping[str, str] | None = None) -> bool:
        # Several requests may fail with the same stale token: only the first one drops it.
        if failed_headers is None or failed_headers.get("Authorization") == f"Bearer {self._token}":
            self._token = None
        return True

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._secret, self._token) if s)

    def __repr__(self) -> str:
        return (f"OidcClientCredentials(client_id={self.client_id!r}, client_secret={MASK}, "
                f"token_url={self.token_url!r}, scope={self.scope!r})")

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._renew_at

    async def _current(self, http: AuthHttp) -> str:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._fetch(http)
        assert self._token is not None
        return self._token

    async def _discover(self, http: AuthHttp) -> str:
        url = f"{http.base_url}/.well-known/openid-configuration"
        doc = await http.fetch_unauthenticated("GET", url)
        endpoint = doc.get("token_endpoint") if isinstance(doc, dict) else None
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigError("auth.token_url", f"not given and {url} names no token_endpoint")
        methods = doc.get("token_endpoint_auth_methods_supported") or []
        self._use_basic = "client_secret_basic" in methods and "client_secret_post" not in methods
        return endpoint

    def _token_request(self) -> tuple[dict[str, str], dict[str, str]]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        headers: dict[str, str] = {}
        if self._use_basic:
            pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        return form, headers

    async def _fetch(self, http: AuthHttp) -> None:
        if self.token_url is None:
            self.token_url = await self._discover(http)
        form, headers = self._token_request()
        try:
            body = await http.fetch_unauthenticated("POST", self.token_url, form=form, headers=headers)
        except (AuthError, BadRequestError) as exc:
            raise AuthError(
                f"OIDC token request for client '{self.client_id}' was refused: {_errors_of(exc)}",
                status=exc.status, url=exc.url, errors=exc.errors,
            ) from exc
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"OIDC token response for client '{self.client_id}' has no access_token",
                            url=self.token_url)
        ttl = float(body.get("expires_in") or 3600.0)
        self._token = token
        lifetime = max(0.0, min(ttl * self.refresh_fraction, ttl - self.refresh_margin_s))
        self._renew_at = self._clock() + lifetime
        self.tokens_fetched += 1


class KerberosAuth(Auth):
    """Kerberos through SPNEGO (``Authorization: Negotiate ...``), the PI Web API default.

    Needs the optional extra ``piflow[kerberos]`` (pyspnego), imported only when this class is used. Each
    request gets a fresh security context so that replay caches on the server never reject a reused token.
    Credentials come from the Kerberos ticket cache (``kinit``) or a keytab, never from piflow settings.
    """

    def __init__(self, service: str = "HTTP", hostname: str | None = None, *,
                 protocol: str = "negotiate") -> None:
        try:
            import spnego
        except ImportError as exc:
            raise ConfigError(
                "auth", "Kerberos needs the optional dependency pyspnego: pip install 'piflow[kerberos]'"
            ) from exc
        self._spnego: Any = spnego
        self.service = service
        self.hostname = hostname
        self.protocol = protocol

    def _token(self, hostname: str) -> bytes:
        try:
            ctx = self._spnego.client(hostname=hostname, service=self.service, protocol=self.protocol)
            token = ctx.step()
        except Exception as exc:  # pyspnego raises its own tree (no credentials, unknown server, ...)
            raise AuthError(f"Kerberos gave no token for {self.service}/{hostname}: {exc}") from exc
        if not token:
            raise AuthError(f"Kerberos produced no token for {self.service}/{hostname}")
        return bytes(token)

    async def apply(self, headers: dict[str, str], http: AuthHttp) -> None:
        host = self.hostname or urlsplit(http.base_url).hostname or ""
        token = await asyncio.to_thread(self._token, host)
        headers["Authorization"] = "Negotiate " + base64.b64encode(token).decode("ascii")

    async def refresh(self, failed_headers: Mapping[str, str] | None = None) -> bool:
        # A new context may pick up a renewed ticket (kinit/keytab) after the old one expired.
        return True

    def __repr__(self) -> str:
        return f"KerberosAuth(service={self.service!r}, hostname={self.hostname!r})"
