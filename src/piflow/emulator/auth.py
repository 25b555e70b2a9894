"""Authentication and CSRF defence as ASGI middleware, plus the OpenID Connect discovery and token endpoints.

The emulator speaks the authentication methods a client meets in the field (``settings.auth.mode``):
anonymous, Basic (domain accounts as ``DOMAIN\\user``), a static Bearer token, OpenID Connect client
credentials (PI Web API 2023+), and Kerberos through SPNEGO (checked by GSSAPI against the keytab of a real
KDC's service principal). OIDC tokens are opaque and deterministic (a keyed hash of seed, client and issue
number) and expire on the VIRTUAL clock, so a test expires one by advancing the clock. WebSocket handshakes
are checked like any request and refused before they are accepted.

CSRF: POST, PUT, PATCH and DELETE under ``/piwebapi`` need an ``X-Requested-With`` header, as PI requires.
Nothing here logs a header, a user name with its password, a secret or a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote_plus

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from piflow.emulator.responses import error_response, json_response
from piflow.emulator.settings import AuthSettings
from piflow.emulator.state import EmulatorState
from piflow.pitime import TICKS_PER_SECOND

_log = logging.getLogger(__name__)

BASE = "/piwebapi"
DISCOVERY_PATH = "/piwebapi/.well-known/openid-configuration"
TOKEN_PATH = "/identity/connect/token"
JWKS_PATH = "/identity/.well-known/openid-configuration/jwks"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BASIC_CHALLENGE = 'Basic realm="PI Web API"'
DENIED = "Authorization has been denied for this request."
MAX_TOKENS = 100_000


@dataclass(frozen=True)
class Refusal:
    """Why a request may not pass: status, challenge header and PI error message."""

    status: int
    message: str
    challenge: str | None = None

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge} if self.challenge else {}


class TokenIssuer:
    """OIDC access tokens: opaque, deterministic per (seed, client, issue number), expiring in virtual time."""

    def __init__(self, seed: int) -> None:
        self._key = hashlib.blake2b(f"piflow-emulator-oidc|{seed}".encode(), digest_size=32).digest()
        self._serial = 0
        self._expiry: dict[str, int] = {}
        self._lock = threading.Lock()

    def issue(self, client_id: str, now_ticks: int, ttl_s: float) -> str:
        with self._lock:
            self._serial += 1
            msg = f"{client_id}|{self._serial}|{now_ticks}".encode()
            token = base64.urlsafe_b64encode(hmac.digest(self._key, msg, "sha256")).rstrip(b"=").decode()
            self._forget_expired(now_ticks)
            self._expiry[token] = now_ticks + int(ttl_s * TICKS_PER_SECOND)
            while len(self._expiry) > MAX_TOKENS:
                del self._expiry[next(iter(self._expiry))]
            return token

    def valid(self, token: str, now_ticks: int) -> bool:
        with self._lock:
            expiry = self._expiry.get(token)
        return expiry is not None and now_ticks < expiry

    def _forget_expired(self, now_ticks: int) -> None:
        for token in [t for t, exp in self._expiry.items() if exp <= now_ticks]:
            del self._expiry[token]


# ---- credential checks (pure) -----------------------------------------------------------------------------

def _split_scheme(authorization: str | None) -> tuple[str, str]:
    if not authorization:
        return "", ""
    scheme, _, rest = authorization.strip().partition(" ")
    return scheme.lower(), rest.strip()


def _canonical_user(name: str) -> str:
    """``DOMAIN\\user`` and ``user@DOMAIN`` name the same account; Windows names ignore case."""
    if "\\" not in name and "@" in name:
        user, _, domain = name.rpartition("@")
        name = f"{domain}\\{user}"
    return name.lower()


def decode_basic(credentials: str) -> tuple[str, str] | None:
    """``user:password`` from a Basic credential, or None when it is not valid base64/UTF-8 with a colon."""
    try:
        text = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def check_basic(users: dict[str, str], authorization: str | None) -> Refusal | None:
    scheme, rest = _split_scheme(authorization)
    pair = decode_basic(rest) if scheme == "basic" else None
    if pair is not None:
        wanted = _canonical_user(pair[0])
        for name, password in users.items():
            if _canonical_user(name) == wanted and hmac.compare_digest(password.encode(), pair[1].encode()):
                return None
    return Refusal(401, DENIED, BASIC_CHALLENGE)


def check_bearer(settings: AuthSettings, authorization: str | None) -> Refusal | None:
    scheme, token = _split_scheme(authorization)
    if scheme == "bearer" and hmac.compare_digest(token.encode(), settings.bearer_token.encode()):
        return None
    return Refusal(401, DENIED, "Bearer")


def check_oidc(tokens: TokenIssuer, authorization: str | None, now_ticks: int) -> Refusal | None:
    scheme, token = _split_scheme(authorization)
    if scheme != "bearer" or not token:
        return Refusal(401, DENIED, "Bearer")
    if not tokens.valid(token, now_ticks):
        return Refusal(401, "The access token is invalid or has expired.", 'Bearer error="invalid_token"')
    return None


def check_negotiate(authorization: str | None) -> Refusal | None:
    """A Kerberos SPNEGO token, accepted by GSSAPI with the service keytab (``KRB5_KTNAME``)."""
    scheme, token = _split_scheme(authorization)
    if scheme != "negotiate" or not token:
        return Refusal(401, DENIED, "Negotiate")
    try:
        import spnego
    except ImportError:
        _log.error("auth mode kerberos needs the optional extra piflow[kerberos] (pyspnego with gssapi)")
        return Refusal(401, DENIED, "Negotiate")
    try:
        ctx = spnego.server(protocol="negotiate")
        ctx.step(base64.b64decode(token, validate=True))
        accepted = ctx.complete
    except Exception:  # no extra installed, a bad token, an unknown service key, a replay: all refusals
        accepted = False
    return None if accepted else Refusal(401, DENIED, "Negotiate")


def check(state: EmulatorState, tokens: TokenIssuer, authorization: str | None) -> Refusal | None:
    """None when the request is authenticated under the configured mode."""
    settings = state.settings.auth
    if settings.mode == "basic":
        return check_basic(settings.users, authorization)
    if settings.mode == "bearer":
        return check_bearer(settings, authorization)
    if settings.mode == "oidc":
        return check_oidc(tokens, authorization, state.clock.now_ticks())
    if settings.mode == "kerberos":
        return check_negotiate(authorization)
    return None


def protected(path: str) -> bool:
    low = path.lower()
    return (low == BASE or low.startswith(BASE + "/")) and low != DISCOVERY_PATH


def csrf(scope: Scope, headers: Headers) -> Refusal | None:
    """PI's CSRF defence: state-changing methods must carry ``X-Requested-With`` (any value)."""
    if scope["type"] == "http" and scope.get("method", "GET").upper() in UNSAFE_METHODS \
            and "x-requested-with" not in headers:
        return Refusal(400, "A request with this method requires an 'X-Requested-With' header "
                            "(cross-site request forgery defence).")
    return None


# ---- middleware --------------------------------------------------------------------------------------------

class AuthMiddleware:
    def __init__(self, app: ASGIApp, state: EmulatorState, tokens: TokenIssuer) -> None:
        self.app = app
        self.state = state
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = check(self.state, self.tokens, headers.get("authorization")) or csrf(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send, refusal)
        else:
            await error_response(refusal.status, refusal.message, headers=refusal.headers())(scope, receive, send)


async def refuse_websocket(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    """Answer the handshake with the HTTP refusal when the server supports that, else close before accepting."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]})
        return
    reply = error_response(refusal.status, refusal.message, headers=refusal.headers())
    await send({"type": "websocket.http.response.start", "status": reply.status_code,
                "headers": reply.raw_headers})
    await send({"type": "websocket.http.response.body", "body": reply.body, "more_body": False})


# ---- OIDC endpoints ----------------------------------------------------------------------------------------

def _issuer(request: Request) -> TokenIssuer:
    tokens: TokenIssuer = request.app.state.emulator_oidc
    return tokens


def _oidc_enabled(request: Request) -> bool:
    st: EmulatorState = request.app.state.emulator
    return st.settings.auth.mode == "oidc"


def _not_enabled() -> Response:
    return error_response(404, "OpenID Connect is not enabled on this server.")


async def discovery(request: Request) -> Response:
    """The OpenID configuration a client reads to find the token endpoint (absolute URLs of this server)."""
    if not _oidc_enabled(request):
        return _not_enabled()
    base = str(request.base_url)
    return json_response({
        "issuer": base + "identity",
        "token_endpoint": base + TOKEN_PATH.lstrip("/"),
        "jwks_uri": base + JWKS_PATH.lstrip("/"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["token"],
        "scopes_supported": ["piwebapi"],
    })


async def jwks(request: Request) -> Response:
    """Tokens are opaque (checked by this server), so there are no signing keys to publish."""
    if not _oidc_enabled(request):
        return _not_enabled()
    return json_response({"keys": []})


def _oauth_error(status: int, error: str, description: str, challenge: bool = False) -> Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if challenge:
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return json_response({"error": error, "error_description": description}, status, headers)


def client_credentials(form: dict[str, list[str]], authorization: str | None) -> tuple[str, str, bool] | None:
    """(client_id, secret, came from the Basic header) per RFC 6749 section 2.3.1, or None when absent."""
    scheme, rest = _split_scheme(authorization)
    if scheme == "basic":
        pair = decode_basic(rest)
        return (unquote_plus(pair[0]), unquote_plus(pair[1]), True) if pair else None
    cid, secret = form.get("client_id", [""])[0], form.get("client_secret", [""])[0]
    return (cid, secret, False) if cid else None


async def token(request: Request) -> Response:
    """The client-credentials grant: form-encoded, client authenticated in the form or with Basic."""
    if not _oidc_enabled(request):
        return _not_enabled()
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request", "The body must be application/x-www-form-urlencoded.")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    if form.get("grant_type", [""])[0] != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "Only the client_credentials grant is supported.")
    creds = client_credentials(form, request.headers.get("authorization"))
    st: EmulatorState = request.app.state.emulator
    known = st.settings.auth.oidc_clients.get(creds[0]) if creds else None
    if creds is None or known is None or not hmac.compare_digest(known.encode(), creds[1].encode()):
        return _oauth_error(401, "invalid_client", "Client authentication failed.", bool(creds and creds[2]))
    ttl = st.settings.auth.token_ttl_s
    access = _issuer(request).issue(creds[0], st.clock.now_ticks(), ttl)
    body = {"access_token": access, "token_type": "Bearer", "expires_in": int(ttl)}
    if "scope" in form:
        body["scope"] = form["scope"][0]
    return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def install(app: FastAPI, state: EmulatorState) -> None:
    """Add the OIDC routes and the middleware, INSIDE the fault middleware whatever the install order, so
    that faults (and the request counter) see refused requests too, as a proxy in front of PI would."""
    if app.middleware_stack is not None:
        raise RuntimeError("install the auth middleware before the app starts")
    tokens = TokenIssuer(state.settings.seed)
    app.state.emulator_oidc = tokens
    app.add_api_route(DISCOVERY_PATH, discovery, methods=["GET"], include_in_schema=False)
    app.add_api_route(TOKEN_PATH, token, methods=["POST"], include_in_schema=False)
    app.add_api_route(JWKS_PATH, jwks, methods=["GET"], include_in_schema=False)
    app.user_middleware.append(Middleware(AuthMiddleware, state=state, tokens=tokens))
