"""``piflow doctor``: the connection check a user runs first, one verdict per step and a fix for each problem.

Steps, in order: settings, reachability, TLS, authentication, identity, version, capabilities, clock, data.
Once a step fails the steps after it are skipped, since they would fail for the same reason and bury the one
line that matters. The checks return typed results (:class:`Step`, :class:`Feature`); presentation (plain
lines, a table, JSON) is a separate set of pure functions at the end, and the CLI prints. Every text leaves
through :func:`_scrub` (the configured secrets, then :func:`piflow.logs.redact`), so no secret is shown.

A job assumes each optional feature until the server refuses it (:mod:`piflow.client.capabilities`); the
doctor probes every one on purpose, so that a user learns up front which fallbacks a run will use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from rich.table import Table
from rich.text import Text

from piflow.errors import (
    AuthError,
    BadRequestError,
    ConfigError,
    NetworkError,
    NotFoundError,
    PiApiError,
    PiflowError,
    ServerBusyError,
    UnreachableError,
)
from piflow.logs import redact

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

Verdict = Literal["ok", "warn", "fail", "skipped"]
STEPS = ("settings", "reachability", "tls", "authentication", "identity", "version", "capabilities", "clock",
         "data")
CLOCK_SKEW_WARN_S = 5.0
# PI Web API 2017 R2. The design notes target 2017-2023 deployments, and OSIsoft's own PI Web API tools of the
# time state "PI Web API 2017 R2+ ... if you are using an older version, some methods might not work".
OLDEST_VERSION = (1, 10)
PROBE_TIMEOUT_S = 20.0  # the doctor's requests are small: no need to wait as long as a job's recorded pages
PROBE_ATTEMPTS = 2
PAGE = 1000


@dataclass(frozen=True)
class Feature:
    """One optional feature of the server: works (True), missing (False) or untold (None), and the fallback."""

    name: str
    available: bool | None
    detail: str
    fallback: str | None = None


@dataclass(frozen=True)
class Step:
    """The verdict of one step; ``fix`` is one line for warn and fail, ``facts`` what was learned (JSON)."""

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    features: tuple[Feature, ...] = ()


@dataclass(frozen=True)
class Report:
    """Every step in order; failed when any step failed (warnings do not fail a check)."""

    steps: tuple[Step, ...]

    @property
    def failed(self) -> bool:
        return any(s.verdict == "fail" for s in self.steps)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for s in self.steps if s.verdict == verdict)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


# ---- step 1: settings ------------------------------------------------------------------------------------

_SETTING_FIXES = {
    "url": "pass --url https://pi.example.com/piwebapi, set PIFLOW_URL, or set url in piflow.toml",
    "username": "set username in piflow.toml or PIFLOW_USERNAME (a domain account is DOMAIN\\user)",
    "password": "set PIFLOW_PASSWORD in the environment or point password_file at a file holding it",
    "password_file": "point password_file at a readable, non-empty file, or use PIFLOW_PASSWORD instead",
    "token": "set PIFLOW_TOKEN in the environment or point token_file at a file holding it",
    "oidc_client_id": "set oidc_client_id in piflow.toml or PIFLOW_OIDC_CLIENT_ID",
    "oidc_client_secret": "set PIFLOW_OIDC_CLIENT_SECRET or point oidc_client_secret_file at a file holding it",
    "auth": "choose auth none, basic, bearer, oidc or kerberos (kerberos needs pip install 'piflow[kerberos]')",
    "ca_bundle": "point ca_bundle at the PEM file of the CA that signed the server's certificate",
    "config": "give --config an existing, valid TOML file",
}


def _setting_fix(exc: ConfigError) -> str:
    setting = exc.setting.split(".")[-1]
    if setting == "url" and "password" in exc.message:
        return "give the URL without user:password; the user goes in username, the password in PIFLOW_PASSWORD"
    return _SETTING_FIXES.get(setting, f"correct '{setting}' (its flag, PIFLOW_{setting.upper()} or piflow.toml)")


def _secret_source(settings: PiflowSettings, secret: str) -> str:
    """Where a secret came from, for messages (never the secret itself)."""
    from piflow.config import SECRET_FILES

    file_setting = SECRET_FILES[secret]
    path = getattr(settings, file_setting)
    if path is not None:
        return f"{file_setting} {path}"
    variable = f"PIFLOW_{secret.upper()}"
    return variable if variable in os.environ else "the settings object"


def _who(settings: PiflowSettings) -> str:
    if settings.auth == "basic":
        return f"auth basic, user '{settings.username}', password from {_secret_source(settings, 'password')}"
    if settings.auth == "bearer":
        return f"auth bearer, token from {_secret_source(settings, 'token')}"
    if settings.auth == "oidc":
        secret = _secret_source(settings, "oidc_client_secret")
        return f"auth oidc, client '{settings.oidc_client_id}', secret from {secret}"
    if settings.auth == "kerberos":
        return "auth kerberos, credentials from the Kerberos ticket cache (kinit) or keytab"
    return "auth none (anonymous)"


def check_settings(load: Callable[[], PiflowSettings]) -> tuple[Step, PiflowSettings | None]:
    """Settings load and are complete: a well-formed URL without credentials, and what the auth kind needs."""
    try:
        settings = load()
        url = settings.require_url()
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise ConfigError("url", "carries a user name or password; credentials never go into a URL")
        settings.make_auth()  # Kerberos without its extra fails here, not halfway through a job
    except ConfigError as exc:
        return Step("settings", "fail", str(exc), _setting_fix(exc)), None
    return Step("settings", "ok", f"url {url}; {_who(settings)}", facts={"url": url, "auth": settings.auth}), settings


# ---- steps 2-5: the first contact ------------------------------------------------------------------------

@dataclass(frozen=True)
class Contact:
    """The first request: ``system/userinfo``, or the API root where the server has no userinfo."""

    body: Any = None
    userinfo: bool = False
    error: PiflowError | None = None


async def first_contact(client: PiClient) -> Contact:
    try:
        return Contact(await client.http.get_json("system/userinfo"), userinfo=True)
    except NotFoundError:
        pass
    except PiflowError as exc:
        return Contact(error=exc)
    try:
        return Contact(await client.http.get_json(""))
    except PiflowError as exc:
        return Contact(error=exc)


def _is_tls(exc: PiflowError | None) -> bool:
    return isinstance(exc, ConfigError) and (exc.setting == "ca_bundle" or "TLS certificate" in exc.message)


def _answered(exc: PiflowError | None) -> bool:
    """The server answered with HTTP (any status), so it is reachable and TLS worked."""
    if exc is None:
        return True
    if isinstance(exc, UnreachableError | NetworkError):
        return exc.status is not None
    return isinstance(exc, PiApiError)


def _host(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def check_reachability(settings: PiflowSettings, contact: Contact) -> Step:
    url = settings.require_url()
    exc = contact.error
    if _answered(exc):
        status = f" (HTTP {exc.status})" if isinstance(exc, PiApiError) and exc.status else ""
        return Step("reachability", "ok", f"{_host(url)} answers{status}")
    if _is_tls(exc):
        return Step("reachability", "ok", f"{_host(url)} accepts connections (its TLS certificate: see tls)")
    assert exc is not None
    message = exc.message
    if isinstance(exc, UnreachableError):
        if "refused" in message:
            fix = "check the host and port in --url (PI Web API listens on 443 unless configured otherwise)"
        elif "unknown" in message:
            fix = "check the host name in --url, and that this machine resolves it (DNS, VPN)"
        elif "TLS" in message:
            fix = "use http:// for a plain http server, or the port where the server speaks https"
        else:
            fix = "check the host and port in --url"
        return Step("reachability", "fail", f"{_host(url)}: {message}", fix)
    if isinstance(exc, NetworkError):
        return Step("reachability", "fail", f"no answer from {_host(url)}: {message}",
                    "check that this machine may reach the server (firewall, proxy, VPN), or raise timeout_s")
    fix = _setting_fix(exc) if isinstance(exc, ConfigError) else "check --url"
    return Step("reachability", "fail", str(exc), fix)


def check_tls(settings: PiflowSettings, contact: Contact) -> Step:
    url = settings.require_url()
    exc = contact.error
    if _is_tls(exc):
        assert isinstance(exc, ConfigError)
        fix = (_SETTING_FIXES["ca_bundle"] + " (ca_bundle in piflow.toml or PIFLOW_CA_BUNDLE)"
               if exc.setting == "ca_bundle" else "use in --url the host name the certificate was issued for")
        return Step("tls", "fail", str(exc), fix)
    if url.startswith("http://"):
        what = "requests and the credentials" if settings.auth in ("basic", "bearer", "oidc") else "requests"
        return Step("tls", "warn", f"plain http: {what} cross the network unencrypted",
                    "use the server's https:// URL")
    if not settings.verify_tls:
        return Step("tls", "warn", "certificate verification is off (verify_tls = false): the server's identity "
                                   "is not checked",
                    "point ca_bundle at the CA that signed the server's certificate and drop verify_tls = false")
    trusted = f"ca_bundle {settings.ca_bundle}" if settings.ca_bundle is not None else "this machine's CAs"
    return Step("tls", "ok", f"certificate trusted ({trusted})")


_REFUSED: dict[str, tuple[str, str]] = {
    "none": ("the server demands credentials (HTTP 401) but auth is none",
             "set auth (basic, kerberos, bearer or oidc) and its credentials in piflow.toml or PIFLOW_AUTH"),
    "basic": ("the user name or password was refused",
              "check username and the password (PIFLOW_PASSWORD or password_file); a domain account is DOMAIN\\user"),
    "bearer": ("the token was refused (expired?)", "put a fresh token into PIFLOW_TOKEN or token_file"),
    "oidc": ("the OIDC client or its token was refused",
             "check oidc_client_id and the secret (PIFLOW_OIDC_CLIENT_SECRET or oidc_client_secret_file)"),
    "kerberos": ("the Kerberos credentials were refused",
                 "run kinit (or renew the keytab's ticket) and check the server's SPN is HTTP/<host>"),
}


def check_authentication(settings: PiflowSettings, contact: Contact) -> Step:
    exc = contact.error
    if exc is None:
        return Step("authentication", "ok", f"accepted ({_who(settings)})")
    if isinstance(exc, AuthError) and exc.status == 403:
        return Step("authentication", "fail",
                    f"the server knows the account but refuses it access (HTTP 403; {_who(settings)})",
                    "ask the PI administrator to give this account access to PI Web API")
    if isinstance(exc, AuthError):
        text, fix = _REFUSED[settings.auth]
        return Step("authentication", "fail", f"{text} (HTTP {exc.status}; {_who(settings)})", fix)
    if isinstance(exc, ServerBusyError):
        return Step("authentication", "fail", f"the server fails requests: {exc}",
                    "check the PI Web API service (its event log) or the proxy in front of it, then try again")
    return Step("authentication", "fail", f"the answer is not PI Web API's: {exc}",
                "check that --url is the PI Web API base (https://host/piwebapi) and that no login page or proxy "
                "answers in its place")


def check_identity(settings: PiflowSettings, contact: Contact) -> Step:
    if not contact.userinfo:
        return Step("identity", "ok", "not reported (the server has no system/userinfo)")
    body = contact.body if isinstance(contact.body, dict) else {}
    if not body:
        return Step("identity", "ok", "the server reports no identity (system/userinfo is empty)")
    name, kind = str(body.get("Name") or "?"), str(body.get("IdentityType") or "?")
    authenticated = body.get("IsAuthenticated") is True
    facts = {"name": name, "identity_type": kind, "is_authenticated": authenticated}
    if not authenticated and settings.auth != "none":
        return Step("identity", "warn", f"PI sees an unauthenticated user ({name}) although auth is {settings.auth}",
                    f"ask the PI administrator to enable {settings.auth} in PI Web API's AuthenticationMethods",
                    facts)
    return Step("identity", "ok", f"{name} ({kind}{'' if authenticated else ', not authenticated'})",
                facts=facts)


# ---- step 6: version -------------------------------------------------------------------------------------

async def probe_version(client: PiClient) -> tuple[str | None, str]:
    """(version, where it came from): ``system/versions``, else ``system``'s ProductVersion."""
    try:
        doc = await client.http.get_json("system/versions")
    except (NotFoundError, BadRequestError, AuthError):
        doc = None
    if isinstance(doc, dict):
        infos = [doc.get("OSIsoft.REST.Core"), *doc.values()]
        for info in infos:
            if isinstance(info, dict) and isinstance(info.get("FullVersion"), str):
                return info["FullVersion"], "system/versions"
    try:
        system = await client.http.get_json("system")
    except (NotFoundError, BadRequestError, AuthError):
        return None, ""
    if isinstance(system, dict) and isinstance(system.get("ProductVersion"), str):
        title = system.get("ProductTitle")
        return system["ProductVersion"], f"system, {title}" if isinstance(title, str) and title else "system"
    return None, ""


def version_tuple(text: str) -> tuple[int, ...] | None:
    """``1.13.0.6298`` -> (1, 13, 0, 6298); None when it does not start with two numbers."""
    found = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    return tuple(int(g) for g in found.groups() if g is not None) if found else None


def check_version(version: str | None, source: str) -> Step:
    if version is None:
        return Step("version", "ok", "unknown (the server answers neither system/versions nor system)",
                    facts={"version": None})
    facts = {"version": version, "source": source}
    parsed = version_tuple(version)
    if parsed is not None and parsed[:2] < OLDEST_VERSION:
        return Step("version", "warn", f"PI Web API {version} is older than 2017 R2 (1.10), the oldest release piflow "
                                       "is written for", "upgrade PI Web API; meanwhile the capabilities step says "
                                                         "what works", facts)
    return Step("version", "ok", f"PI Web API {version} (from {source})", facts=facts)


# ---- step 7: capabilities ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """The point the data probes use: the first one of the data server that matches the points filter."""

    server: str | None = None
    server_webid: str | None = None
    name: str | None = None
    webid: str | None = None
    error: PiflowError | None = None


async def find_point(client: PiClient, settings: PiflowSettings) -> Target:
    server: dict[str, Any] | None = None
    try:
        if settings.server:
            server = await client.dataserver_by_name(settings.server)
        else:
            servers = await client.dataservers()
            if not servers:
                return Target()
            server = servers[0]
        doc = await client.http.get_json(f"dataservers/{server['WebId']}/points", [
            ("nameFilter", settings.points), ("startIndex", 0), ("maxCount", 1)])
    except PiflowError as exc:
        return Target(server=server.get("Name") if server else settings.server, error=exc)
    items = doc.get("Items") if isinstance(doc, dict) else None
    found = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    return Target(server=str(server.get("Name")), server_webid=str(server.get("WebId")),
                  name=found.get("Name"), webid=found.get("WebId"))


@dataclass(frozen=True)
class ClockReading:
    """The server's clock as the jobs read it (:func:`piflow.jobs.common.server_now`) and this machine's."""

    server: datetime | None
    local: datetime
    source: str
    error: PiflowError | None = None


async def read_clock(client: PiClient) -> ClockReading:
    from piflow.jobs.common import server_now

    try:
        when = await server_now(client)
    except PiflowError as exc:
        return ClockReading(None, datetime.now(UTC), "", exc)
    local = datetime.now(UTC)
    if client.caps.system_status:
        return ClockReading(when, local, "system/status")
    if client.http.server_date() is not None:
        return ClockReading(when, local, "the Date header")
    return ClockReading(None, local, "this machine")


_REFUSALS = (NotFoundError, BadRequestError, AuthError)


def _refused(exc: PiflowError) -> str:
    return f"HTTP {exc.status}" if isinstance(exc, PiApiError) and exc.status else type(exc).__name__


def feature_system_status(client: PiClient, clock: ClockReading) -> Feature:
    if client.caps.system_status:
        return Feature("system/status", True, "gives the server's time")
    if clock.error is not None:
        return Feature("system/status", None, f"could not tell: {clock.error}")
    note = next((n for n in client.caps.notes if "system/status" in n), "system/status is not offered")
    fallback = ("the server's clock from the Date header of its answers" if clock.source == "the Date header"
                else "this machine's clock (the skew to PI is unknown)")
    return Feature("system/status", False, note.split(":")[0], fallback)


async def probe_batch(client: PiClient) -> Feature:
    sent = {"a": {"Method": "GET", "Resource": "dataservers"}, "b": {"Method": "GET", "Resource": "dataservers"}}
    try:
        answers = await client.batch(sent)
    except _REFUSALS as exc:
        return Feature("batch", False, f"POST batch is refused ({_refused(exc)})", "direct requests, one per call")
    if len(answers) < len(sent):
        return Feature("batch", False, f"answers only {len(answers)} of {len(sent)} requests of a batch",
                       "piflow sends the left-out requests again, then directly")
    bad = [a.status for a in answers.values() if not a.ok]
    if bad:
        return Feature("batch", False, f"batch items fail (HTTP {bad[0]})", "direct requests, one per call")
    return Feature("batch", True, f"answers {len(sent)} of {len(sent)} requests")


async def probe_streamsets(client: PiClient, target: Target) -> Feature:
    if target.webid is None:
        return Feature("streamsets", None, "not tried: no point found")
    try:
        await client.http.get_json("streamsets/value", [("webId", target.webid)])
    except _REFUSALS as exc:
        return Feature("streamsets", False, f"streamsets/value is refused ({_refused(exc)})",
                       "per-stream calls (one recorded call per point)")
    return Feature("streamsets", True, "streamsets/value answers")


async def probe_updates(client: PiClient, target: Target) -> Feature:
    from piflow.client.channels import register_updates

    if target.webid is None:
        return Feature("stream updates", None, "not tried: no point found")
    try:
        await register_updates(client.http, [target.webid])
    except _REFUSALS as exc:
        return Feature("stream updates", False, f"POST streamsets/updates is refused ({_refused(exc)})",
                       "polling recorded values when channels are not available")
    return Feature("stream updates", True, "registration returns a marker")


async def probe_channels(client: PiClient, settings: PiflowSettings, target: Target, updates: Feature) -> Feature:
    """A WebSocket handshake to ``streamsets/channel`` for one point, closed at once."""
    from piflow.client.channels import ChannelOptions, ChannelUnavailableError, open_channel

    if target.webid is None:
        return Feature("channels", None, "not tried: no point found")
    opts = ChannelOptions(verify=settings.verify, open_timeout_s=min(settings.timeout_s, PROBE_TIMEOUT_S),
                          ping_interval_s=None)
    try:
        async with open_channel(client.http, [target.webid], opts):
            pass
    except (ChannelUnavailableError, *_REFUSALS) as exc:
        fallback = "stream updates" if updates.available else "polling recorded values"
        return Feature("channels", False, f"the WebSocket handshake is refused ({_refused(exc)})", fallback)
    return Feature("channels", True, "the WebSocket handshake succeeds")


async def probe_paging(client: PiClient, target: Target) -> Feature:
    """Two one-item pages of the points list: does ``startIndex`` move on, or does the server page by links?"""
    if target.server_webid is None:
        return Feature("list paging", None, "not tried: no data server")
    path = f"dataservers/{target.server_webid}/points"
    pages = []
    for start in (0, 1):
        doc = await client.http.get_json(path, [("nameFilter", "*"), ("startIndex", start), ("maxCount", 1)])
        pages.append(doc if isinstance(doc, dict) else {})
    links = pages[0].get("Links")
    first = [(p.get("Items") or [{}])[0].get("WebId") for p in pages]
    if first[1] is not None and first[1] != first[0]:
        return Feature("list paging", True, "startIndex pages the points list")
    if isinstance(links, dict) and isinstance(links.get("Next"), str):
        return Feature("list paging", False, "startIndex is ignored; the server pages by Links.Next",
                       "piflow follows Links.Next")
    if first[1] is None:
        return Feature("list paging", None, "not tried: the data server has one point")
    return Feature("list paging", False, "startIndex is ignored and no Links.Next is given: lists stop after "
                                         "their first page")


async def probe_max_count(client: PiClient, target: Target) -> Feature:
    """A day of recorded values with maxCount=1000; a shorter page is read on from its last timestamp, and
    more values there mean the server cut the page below what was asked (a lower cap, silently)."""
    if target.webid is None:
        return Feature("maxCount", None, "not tried: no point found")
    path = f"streams/{target.webid}/recorded"
    doc = await client.http.get_json(path, [("startTime", "*-1d"), ("endTime", "*"), ("maxCount", PAGE)])
    items = doc.get("Items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        return Feature("maxCount", None, "not tried: no values in the last day")
    if len(items) >= PAGE:
        return Feature("maxCount", True, f"pages of {PAGE} values as asked")
    last = items[-1].get("Timestamp") if isinstance(items[-1], dict) else None
    if not isinstance(last, str):
        return Feature("maxCount", None, "could not tell: values without timestamps")
    at_last = sum(1 for v in items if isinstance(v, dict) and v.get("Timestamp") == last)
    more = await client.http.get_json(path, [("startTime", last), ("endTime", "*"), ("maxCount", at_last + 1)])
    again = more.get("Items") if isinstance(more, dict) else None
    if isinstance(again, list) and len(again) > at_last:
        return Feature("maxCount", False, f"pages hold at most {len(items)} values although {PAGE} were asked",
                       "piflow reads on from each page's last timestamp")
    return Feature("maxCount", True, f"{len(items)} values in the last day, all in one page")


async def _guarded(name: str, probe: Awaitable[Feature]) -> Feature:
    """A probe that fails for another reason than a refusal (a timeout, a 5xx) says so instead of raising."""
    try:
        return await probe
    except Exception as exc:  # any library's failure becomes one line, never a traceback
        return Feature(name, None, f"could not tell: {exc if isinstance(exc, PiflowError) else type(exc).__name__}")


async def probe_features(client: PiClient, settings: PiflowSettings, target: Target,
                         clock: ClockReading) -> tuple[Feature, ...]:
    updates = await _guarded("stream updates", probe_updates(client, target))
    return (
        feature_system_status(client, clock),
        await _guarded("batch", probe_batch(client)),
        await _guarded("streamsets", probe_streamsets(client, target)),
        await _guarded("channels", probe_channels(client, settings, target, updates)),
        updates,
        await _guarded("list paging", probe_paging(client, target)),
        await _guarded("maxCount", probe_max_count(client, target)),
    )


def check_capabilities(features: tuple[Feature, ...]) -> Step:
    missing = [f for f in features if f.available is False]
    stuck = [f for f in missing if f.fallback is None]
    works = sum(1 for f in features if f.available)
    detail = f"{works} of {len(features)} features work"
    if stuck:
        return Step("capabilities", "fail", f"{detail}; no fallback for: {', '.join(f.name for f in stuck)}",
                    "ask the PI administrator about the server's paging, or narrow --points so one page holds them",
                    features=features)
    if missing:
        return Step("capabilities", "warn", f"{detail}; fallbacks for {', '.join(f.name for f in missing)}",
                    "nothing needed: piflow uses the fallbacks shown; enabling the features makes runs faster",
                    features=features)
    return Step("capabilities", "ok", detail, features=features)


# ---- step 8: clock -------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    s = abs(seconds)
    if s < 60:
        return f"{s:.1f} s"
    parts = [(int(s // 86400), "d"), (int(s % 86400 // 3600), "h"), (int(s % 3600 // 60), "min"),
             (int(s % 60), "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown)


def check_clock(clock: ClockReading, threshold_s: float = CLOCK_SKEW_WARN_S) -> Step:
    if clock.error is not None:
        return Step("clock", "warn", f"could not read the server's clock: {clock.error}",
                    "run the doctor again; if it persists, check the server's system/status")
    if clock.server is None:
        return Step("clock", "warn", "the server gives its time neither in system/status nor in a Date header: "
                                     "piflow uses this machine's clock, so the skew is unknown",
                    "ask the PI administrator to enable system/status")
    skew = (clock.server - clock.local).total_seconds()
    facts = {"server_time": clock.server.isoformat(), "local_time": clock.local.isoformat(),
             "skew_s": round(skew, 3), "source": clock.source}
    if abs(skew) <= threshold_s:
        return Step("clock", "ok", f"the server and this machine agree within {threshold_s:g} s (server time from "
                                   f"{clock.source})", facts=facts)
    side = "ahead of" if skew > 0 else "behind"
    return Step("clock", "warn", f"the server's clock is {_duration(skew)} {side} this machine's (server time from "
                                 f"{clock.source})",
                "piflow takes 'now' from the server, so runs are right; synchronise the clocks (NTP) so that log "
                "and run times agree with PI's", facts)


# ---- step 9: data --------------------------------------------------------------------------------------

async def count_recorded(client: PiClient, webid: str, since: str) -> int:
    doc = await client.http.get_json(f"streams/{webid}/recorded",
                                     [("startTime", since), ("endTime", "*"), ("maxCount", PAGE)])
    items = doc.get("Items") if isinstance(doc, dict) else None
    return len(items) if isinstance(items, list) else 0


async def check_data(client: PiClient, settings: PiflowSettings, target: Target) -> Step:
    if target.error is not None:
        exc = target.error
        fix = ("ask the PI administrator for read access to the data server" if isinstance(exc, AuthError)
               else "check server (PIFLOW_SERVER) names a data server PI Web API lists" if settings.server
               else "check the data server in PI Web API")
        return Step("data", "fail", f"could not list the points of {target.server or 'the data server'}: {exc}", fix)
    if target.server is None:
        return Step("data", "fail", "the PI Web API lists no data servers",
                    "check PI Web API's data server list and the account's access to it")
    if target.webid is None:
        return Step("data", "warn", f"no point of {target.server} matches {settings.points!r}",
                    "check the points filter (--points or PIFLOW_POINTS; PI wildcards such as 'PLANT1*')",
                    {"server": target.server})
    facts: dict[str, Any] = {"server": target.server, "point": target.name}
    try:
        for since, span in (("*-1h", "hour"), ("*-1d", "day")):
            n = await count_recorded(client, target.webid, since)
            if n:
                shown = f"{n}+" if n >= PAGE else str(n)
                facts.update(values=n, span=span)
                return Step("data", "ok", f"{shown} recorded values of {target.name} ({target.server}) in the last "
                                          f"{span}", facts=facts)
    except PiflowError as exc:
        return Step("data", "fail", f"reading recorded values of {target.name} failed: {exc}",
                    "run the doctor again; if it persists, check the point's archive in PI", facts)
    return Step("data", "warn", f"{target.name} has no recorded values in the last day",
                "check that the point is archiving, or choose other points (--points)", facts)


# ---- the run -------------------------------------------------------------------------------------------

def _skipped(after: str, done: list[Step]) -> tuple[Step, ...]:
    names = {s.name for s in done}
    return tuple(Step(n, "skipped", f"skipped: the {after} step failed") for n in STEPS if n not in names)


_URL_CREDENTIALS = re.compile(r"(//)[^/@\s]+@")


def _scrub(report: Report, secrets: tuple[str, ...]) -> Report:
    """The report with every secret, credential-looking value and URL user:password masked."""
    def clean(text: str) -> str:
        for s in secrets:
            text = text.replace(s, "***")
        return redact(_URL_CREDENTIALS.sub(r"\1***@", text))

    def step(s: Step) -> Step:
        features = tuple(replace(f, detail=clean(f.detail), fallback=clean(f.fallback) if f.fallback else None)
                         for f in s.features)
        facts = {k: clean(v) if isinstance(v, str) else v for k, v in s.facts.items()}
        return replace(s, detail=clean(s.detail), fix=clean(s.fix) if s.fix else None, facts=facts,
                       features=features)

    return Report(tuple(step(s) for s in report.steps))


def _secrets(settings: PiflowSettings | None) -> tuple[str, ...]:
    if settings is None:
        return ()
    values = (settings.password, settings.token, settings.oidc_client_secret)
    return tuple(v.get_secret_value() for v in values if v is not None and v.get_secret_value())


def open_doctor_client(settings: PiflowSettings) -> PiClient:
    """A client like a job's, with short timeouts and one retry: the doctor should answer quickly."""
    from piflow.client.api import PiClient
    from piflow.client.retry import RetryPolicy

    return PiClient(settings.require_url(), settings.make_auth(), verify=settings.verify,
                    timeout_s=min(settings.timeout_s, PROBE_TIMEOUT_S), max_connections=4,
                    retry=RetryPolicy(max_attempts=min(settings.retries + 1, PROBE_ATTEMPTS)))


async def run_doctor(load: Callable[[], PiflowSettings]) -> Report:
    """Every step in order; ``load`` gives the settings (or raises ConfigError, the settings step's failure)."""
    settings_step, settings = check_settings(load)
    steps = [settings_step]
    if settings is not None:
        await _connected_steps(settings, steps)
    failed = next((s.name for s in steps if s.verdict == "fail"), None)
    if failed is not None:
        steps.extend(_skipped(failed, steps))
    return _scrub(Report(tuple(steps)), _secrets(settings))


async def _connected_steps(settings: PiflowSettings, steps: list[Step]) -> None:
    async with open_doctor_client(settings) as client:
        contact = await first_contact(client)
        for check in (check_reachability, check_tls, check_authentication, check_identity):
            steps.append(check(settings, contact))
            if steps[-1].verdict == "fail":
                return
        try:
            steps.append(check_version(*await probe_version(client)))
            target = await find_point(client, settings)
            clock = await read_clock(client)
            steps.append(check_capabilities(await probe_features(client, settings, target, clock)))
            steps.append(check_clock(clock))
            steps.append(await check_data(client, settings, target))
        except PiflowError as exc:  # the server failed between steps: say where, skip the rest
            name = STEPS[len(steps)]
            steps.append(Step(name, "fail", str(exc), "run the doctor again; if it persists, check the PI Web API "
                                                       "service"))


# ---- presentation (pure) -------------------------------------------------------------------------------

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


def feature_line(f: Feature) -> str:
    mark = {True: "yes", False: "no", None: "?"}[f.available]
    return f"{f.name}: {mark}, {f.detail}" + (f" -> {f.fallback}" if f.fallback else "")


def summary_line(report: Report) -> str:
    counts = ", ".join(f"{report.count(v)} {v}" for v in ("ok", "warn", "fail", "skipped") if report.count(v))
    if report.failed:
        first = next(s.name for s in report.steps if s.verdict == "fail")
        return f"doctor: {counts}; fix the {first} step first"
    tail = " (see the warnings)" if report.count("warn") else ""
    return f"doctor: {counts}; piflow can read from this server{tail}"


def report_lines(report: Report) -> list[str]:
    """Plain lines: ``step  verdict  detail``, the fix and the features indented under it, then the summary."""
    width = max(len(n) for n in STEPS)
    lines: list[str] = []
    for s in report.steps:
        lines.append(f"{s.name:<{width}}  {s.verdict:<7}  {s.detail}")
        lines.extend(f"{'':<{width}}             {feature_line(f)}" for f in s.features)
        if s.fix:
            lines.append(f"{'':<{width}}           fix: {s.fix}")
    lines.append(summary_line(report))
    return lines


def report_table(report: Report) -> Table:
    table = Table(title="piflow doctor", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("verdict")
    table.add_column("detail", overflow="fold")
    for s in report.steps:
        detail = Text(s.detail)
        for f in s.features:
            detail.append("\n  " + feature_line(f), style="" if f.available is not False else "yellow")
        if s.fix:
            detail.append(f"\nfix: {s.fix}", style="italic")
        table.add_row(s.name, Text(s.verdict, style=_STYLE[s.verdict]), detail)
    return table


def report_json(report: Report) -> dict[str, Any]:
    return {
        "ok": not report.failed,
        "summary": summary_line(report),
        "steps": [{"step": s.name, "verdict": s.verdict, "detail": s.detail, "fix": s.fix, "facts": s.facts,
                   "features": [{"name": f.name, "available": f.available, "detail": f.detail,
                                 "fallback": f.fallback} for f in s.features]} for s in report.steps],
    }
