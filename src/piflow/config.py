"""piflow settings: one object, from defaults < ``piflow.toml`` < environment (``PIFLOW_*``) < CLI flags.

Every problem becomes exactly one :class:`~piflow.errors.ConfigError` naming the setting, so that a user sees
one clear line instead of a pydantic report. Secrets (password, token, OIDC client secret) are accepted only
from the environment or from a file named by the matching ``*_file`` setting, never from the TOML itself:
config files get committed, copied and pasted into tickets. For the same reason a URL carrying credentials
(``https://user:password@host``) is refused wherever it comes from, and a TOML table other than ``[piflow]``
and ``[emulator]`` is refused as the typo it is. Messages give an example of a valid value (:data:`EXAMPLES`).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from piflow.errors import ConfigError
from piflow.pitime import interval_text, parse_interval, parse_pi_time
from piflow.urls import normalise_base_url

if TYPE_CHECKING:
    from piflow.client.auth import Auth
    from piflow.emulator.settings import EmulatorSettings

DEFAULT_CONFIG = Path("piflow.toml")
# Up to this many points, `recheck_every = "auto"` re-reads the lookback on every sync (10,000 points and an
# hour's lookback: 3.1 s a run); beyond, once per `lookback` (benchmarks/scale.py, docs/performance.md).
AUTO_RECHECK_POINTS = 20_000
AuthKind = Literal["none", "basic", "bearer", "oidc", "kerberos"]
ProgressMode = Literal["auto", "always", "never"]

# secret setting -> the file setting that may hold it instead
SECRET_FILES: dict[str, str] = {
    "password": "password_file",
    "token": "token_file",
    "oidc_client_secret": "oidc_client_secret_file",
}

# Tables a config file may hold: piflow's own and the emulator's (``piflow emulator --config``).
SECTIONS = ("piflow", "emulator")

# A valid value of each setting, for the one line that says what is wrong with a given one.
EXAMPLES: dict[str, str] = {
    "url": "https://pi.example.com/piwebapi", "auth": "basic", "username": "PLANT\\svc-piflow",
    "password_file": "/run/secrets/pi-password", "token_file": "/run/secrets/pi-token",
    "oidc_client_id": "piflow", "oidc_client_secret_file": "/run/secrets/pi-oidc-secret",
    "oidc_token_url": "https://idp.example.com/oauth2/token", "oidc_scope": "piwebapi", "verify_tls": "true",
    "ca_bundle": "/etc/ssl/certs/internal-ca.pem", "target": "./lake or s3://bucket/pi", "points": "PLANT1.*",
    "server": "PISRV01", "start": "*-1d, t, 2025-01-01 or 2025-01-01T06:00:00Z", "end": "* or 2026-01-01",
    "window": "1d (or auto)", "concurrency": "8", "max_rps": "50", "points_per_request": "100",
    "commit_rows": "500000", "commit_interval": "5s", "points_per_socket": "500", "heartbeat_rate": "5",
    "poll_interval": "30s", "stream_modes": "channels,updates,poll", "safety_lag": "30s", "lookback": "1h",
    "recheck_every": "auto, always or 1h", "log_retention": "30d",
    "timeout_s": "60", "retries": "8", "log_json": "true", "log_level": "INFO", "progress": "auto",
    "workspace": "https://adb-1234.5.azuredatabricks.net",  # uc register --host
}

# The URI schemes delta-rs (deltalake 1.x) opens; anything else is a typo, never a place to write to.
DELTA_SCHEMES = frozenset({
    "file", "memory", "s3", "s3a", "gs", "gcs", "az", "azure", "azdls", "azblob", "abfs", "abfss", "adl", "hdfs",
    "viewfs", "webhdfs", "lakefs", "dbfs", "uc", "oss", "obs", "cos", "tos", "b2", "hf", "fs", "sftp", "swift",
    "webdav",
})

# Values read from piflow.toml for the settings object being built right now (see load_settings).
_TOML_VALUES: ContextVar[dict[str, Any]] = ContextVar("_TOML_VALUES", default={})  # noqa: B039


class PiflowSettings(BaseSettings):
    """Everything a piflow job needs to know; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="PIFLOW_", extra="forbid", validate_default=True, case_sensitive=False,
    )

    url: str | None = None
    auth: AuthKind = "none"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_client_secret_file: Path | None = None
    oidc_token_url: str | None = None
    oidc_scope: str | None = None
    verify_tls: bool = True
    ca_bundle: Path | None = None
    target: str = "./lake"
    points: str = "*"
    server: str | None = None
    start: str = "*-1d"
    end: str = "*"
    window: str | None = None
    concurrency: int = Field(default=8, ge=1)
    max_rps: float = Field(default=0.0, ge=0)
    points_per_request: int = Field(default=0, ge=0)
    commit_rows: int = Field(default=500_000, ge=1)
    commit_interval: str = "5s"
    points_per_socket: int = Field(default=500, ge=1)
    heartbeat_rate: int = Field(default=5, ge=1)
    poll_interval: str = "30s"
    stream_modes: str = "channels,updates,poll"
    safety_lag: str = "30s"
    lookback: str = "1h"
    # How often sync re-reads the lookback (between such runs it reads from each watermark): "always", an
    # interval, or "auto" (always up to AUTO_RECHECK_POINTS points, else every `lookback`).
    recheck_every: str = "auto"
    # How long `optimize` keeps Delta log entries (the tables' delta.logRetentionDuration; Delta's default).
    log_retention: str = "30d"
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=8, ge=0)
    log_json: bool = False
    log_level: str = "INFO"
    progress: ProgressMode = "auto"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) beat the environment, which beats the TOML; no .env or secrets-dir magic."""
        return init_settings, env_settings, InitSettingsSource(settings_cls, dict(_TOML_VALUES.get()))

    # --- field checks -------------------------------------------------------------------------------------

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else normalise_url(v)

    @field_validator("oidc_token_url")
    @classmethod
    def _check_token_url(cls, v: str | None) -> str | None:
        if v is not None:
            split_http_url("oidc_token_url", v)
        return v

    @field_validator("target")
    @classmethod
    def _check_target(cls, v: str) -> str:
        return checked_target(v)

    @field_validator("points")
    @classmethod
    def _check_points(cls, v: str) -> str:
        if not v.strip():
            raise ConfigError("points", "is empty: give a PI point name filter, e.g. PLANT1.* (or * for all)")
        return v.strip()

    @field_validator("start", "end")
    @classmethod
    def _check_time(cls, v: str) -> str:
        parse_pi_time(v, datetime.now(UTC))  # ValueError names the string
        return v

    @field_validator("log_retention")
    @classmethod
    def _check_retention(cls, v: str) -> str:
        return interval_text(v)

    @field_validator("window", "safety_lag", "lookback")
    @classmethod
    def _check_interval(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("", "auto"):
            return None
        return interval_text(v)  # a bare number is seconds

    @field_validator("recheck_every")
    @classmethod
    def _check_recheck(cls, v: str) -> str:
        word = v.strip().lower()
        if word in ("auto", "always"):
            return word
        if parse_interval(v).total_seconds() <= 0:
            raise ValueError(f"must be auto, always or an interval longer than zero, got {v!r}")
        return interval_text(v)

    @field_validator("window", "commit_interval", "poll_interval")
    @classmethod
    def _check_positive_interval(cls, v: str | None) -> str | None:
        """A window or a period of zero would never move on (``0`` is a valid interval: zero seconds)."""
        if v is None or v.strip().lower() == "auto":
            return v
        if parse_interval(v).total_seconds() <= 0:
            raise ValueError(f"must be longer than zero, got {v!r}")
        return interval_text(v)

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        level = v.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _resolve(self) -> PiflowSettings:
        """Read secret files, then check that the chosen auth has what it needs (ConfigError propagates)."""
        for secret, file_setting in SECRET_FILES.items():
            path: Path | None = getattr(self, file_setting)
            if path is None:
                continue
            if getattr(self, secret) is not None:
                raise ConfigError(file_setting, f"both {secret} and {file_setting} are set; use one")
            setattr(self, secret, SecretStr(_read_secret_file(file_setting, path)))
        self._check_auth()
        self._check_tls()
        if self.safety_lag is None:
            raise ConfigError("safety_lag", "must be an interval such as 30s")
        if self.lookback is None:
            raise ConfigError("lookback", "must be an interval such as 1h")
        return self

    def _check_auth(self) -> None:
        if self.auth == "basic":
            if not self.username:
                raise ConfigError("username", "auth=basic needs a username (PIFLOW_USERNAME or in the TOML)")
            if self.password is None:
                raise ConfigError("password", "auth=basic needs a password: " + _secret_hint("password"))
        elif self.auth == "bearer" and self.token is None:
            raise ConfigError("token", "auth=bearer needs a token: " + _secret_hint("token"))
        elif self.auth == "oidc":
            if not self.oidc_client_id:
                raise ConfigError("oidc_client_id", "auth=oidc needs a client id (PIFLOW_OIDC_CLIENT_ID)")
            if self.oidc_client_secret is None:
                hint = _secret_hint("oidc_client_secret")
                raise ConfigError("oidc_client_secret", "auth=oidc needs a client secret: " + hint)

    def _check_tls(self) -> None:
        if self.ca_bundle is None:
            return
        if not self.verify_tls:
            raise ConfigError("ca_bundle", "is set but verify_tls is false; drop one of them")
        if not self.ca_bundle.expanduser().is_file():
            raise ConfigError("ca_bundle", f"no such file: {self.ca_bundle}")

    # --- helpers for the jobs -----------------------------------------------------------------------------

    @property
    def verify(self) -> bool | str:
        """What the HTTP client's ``verify`` takes: False, True, or the CA bundle path."""
        if not self.verify_tls:
            return False
        return str(self.ca_bundle.expanduser()) if self.ca_bundle is not None else True

    @property
    def window_delta(self) -> timedelta | None:
        """The backfill window, or None for "auto" (one day, the backfill's default)."""
        return None if self.window is None else parse_interval(self.window)

    @property
    def safety_lag_delta(self) -> timedelta:
        return parse_interval(self.safety_lag)

    @property
    def lookback_delta(self) -> timedelta:
        return parse_interval(self.lookback)

    @property
    def log_retention_delta(self) -> timedelta:
        return parse_interval(self.log_retention)

    def recheck_interval(self, points: int) -> timedelta | None:
        """How often sync re-reads the lookback for ``points`` points; None: every run."""
        if self.recheck_every == "always" or (self.recheck_every == "auto" and points <= AUTO_RECHECK_POINTS):
            return None
        if self.recheck_every == "auto":
            return max(self.lookback_delta, timedelta(minutes=1))
        return parse_interval(self.recheck_every)

    def require_url(self) -> str:
        """The PI Web API base URL, or a ConfigError saying how to give it."""
        if self.url is None:
            raise ConfigError("url", "is required: pass --url, set PIFLOW_URL or set url in piflow.toml")
        return self.url

    def make_auth(self) -> Auth:
        """The client auth object for ``auth`` (imported lazily so that settings load without the client)."""
        from piflow.client import auth as client_auth

        if self.auth == "basic":
            assert self.username is not None
            assert self.password is not None
            return client_auth.BasicAuth(self.username, self.password.get_secret_value())
        if self.auth == "bearer":
            assert self.token is not None
            return client_auth.BearerAuth(self.token.get_secret_value())
        if self.auth == "oidc":
            assert self.oidc_client_id is not None
            assert self.oidc_client_secret is not None
            return client_auth.OidcClientCredentials(
                self.oidc_client_id, self.oidc_client_secret.get_secret_value(),
                self.oidc_token_url, self.oidc_scope,
            )
        if self.auth == "kerberos":
            return client_auth.KerberosAuth()
        return client_auth.NoAuth()


# --- URL --------------------------------------------------------------------------------------------------


_USERINFO = re.compile(r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?)[^/?#\s]*@")


def without_userinfo(url: str) -> str:
    """``url`` with anything before an ``@`` in its authority replaced, for echoing it in a message."""
    return _USERINFO.sub(r"\1***@", url)


def split_http_url(setting: str, url: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path) of an http(s) URL; a ConfigError that never echoes a password otherwise.

    Credentials in the URL (``https://user:password@host``) are refused: httpx would send them as Basic auth,
    bypassing ``auth`` and the rule that secrets never come from the config file or a command line.
    """
    shown = without_userinfo(url)
    parts = urlsplit(url.strip())
    if "@" in parts.netloc or shown != url:
        raise ConfigError(setting, f"must not carry a user name or password ({shown!r}): use auth = basic with "
                                   "username (PIFLOW_USERNAME or the TOML) and, for the password, "
                                   + _secret_hint("password"))
    example = f"(e.g. {EXAMPLES.get(setting, EXAMPLES['url'])})"
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(setting, f"must start with http:// or https://, got {url!r} {example}")
    if not parts.hostname:
        raise ConfigError(setting, f"has no host name: {url!r} {example}")
    if parts.query or parts.fragment:
        raise ConfigError(setting, f"must not carry a query string or fragment: {url!r} {example}")
    return parts.scheme.lower(), parts.netloc, parts.path


# --- target -----------------------------------------------------------------------------------------------


def checked_target(target: str) -> str:
    """The target folder or URI, refused when it cannot hold tables: empty, an unknown URI scheme (``foo://``,
    which delta-rs would report as "no table there"), or a local path that is, or goes through, a file."""
    text = target.strip()
    example = f"e.g. {EXAMPLES['target']}"
    if not text:
        raise ConfigError("target", f"is empty: give a folder or an object-store URI, {example}")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is None:
        path = Path(text).expanduser()
    elif scheme.group(1).lower() in DELTA_SCHEMES:
        if scheme.group(1).lower() != "file":
            return text
        path = Path(unquote(urlsplit(text).path))
    else:
        raise ConfigError("target", f"{scheme.group(1)}:// is not a storage scheme Delta tables can live in; give "
                                    f"a folder or an object-store URI (s3://, abfss://, gs://, ...), {example}")
    blocker = file_in_the_way(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"goes through {blocker}, which is a file"
        raise ConfigError("target", f"{text} {where}, not a folder: give a folder for the Delta tables, {example}")
    return text


def file_in_the_way(path: Path) -> Path | None:
    """The existing non-folder that ``path`` is or goes through (``/etc/hostname``, ``notes.txt/lake``), if any."""
    for folder in (path, *path.parents):
        try:
            if not folder.exists():
                continue
        except OSError:
            return None  # cannot look (no permission): writing there will say what is wrong
        return None if folder.is_dir() else folder
    return None


def normalise_url(url: str) -> str:
    """The PI Web API base as ``scheme://host[:port][/prefix]/piwebapi`` without a trailing slash.

    Users paste what their browser shows: with or without ``/piwebapi``, with a trailing slash, or a deeper
    page such as ``.../piwebapi/dataservers``; all of these name the same base. The settings' checks come
    first (their messages give an example, and a query string is refused); the normalising itself is
    :func:`piflow.urls.normalise_base_url`, the client's too, so that a URL given to the client directly ends
    up the same.
    """
    split_http_url("url", url)
    return normalise_base_url(url)


# --- TOML -------------------------------------------------------------------------------------------------


def read_toml(config_path: Path | None) -> dict[str, Any]:
    """The whole TOML document; {} when no path was given and ``./piflow.toml`` does not exist."""
    path = config_path
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return {}
        path = DEFAULT_CONFIG
    try:
        with path.expanduser().open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"no such file: {path}") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def check_sections(doc: dict[str, Any]) -> None:
    """Refuse a table other than ``[piflow]`` and ``[emulator]``: a typo (``[piflo]``) whose settings would
    silently not apply."""
    for name, value in doc.items():
        if isinstance(value, dict) and _key(name) not in SECTIONS:
            close = difflib.get_close_matches(_key(name), SECTIONS, n=1)
            hint = f"did you mean [{close[0]}]? " if close else ""
            raise ConfigError("config", f"unknown section [{name}] in the config file ({hint}valid sections: "
                                        f"{', '.join(f'[{s}]' for s in SECTIONS)}, or settings at the top level)")


def piflow_table(doc: dict[str, Any]) -> dict[str, Any]:
    """piflow's keys from a TOML document: top-level scalars plus the ``[piflow]`` table (which wins).

    ``[emulator]`` is left to ``piflow emulator``; any other table is a typo (``[piflo]``) whose settings would
    silently not apply, so it is refused. Keys may use ``-`` for ``_``.
    """
    check_sections(doc)
    values = {_key(k): v for k, v in doc.items() if not isinstance(v, dict)}
    table = doc.get("piflow", {})
    if not isinstance(table, dict):
        raise ConfigError("piflow", "must be a table ([piflow])")
    values.update({_key(k): v for k, v in table.items()})
    for key in values:
        if key in SECRET_FILES:
            raise ConfigError(key, "secrets are not read from the config file; " + _secret_hint(key))
    _reject_unknown(values, set(PiflowSettings.model_fields), "config file")
    return values


def _reject_unknown(values: dict[str, Any], known: set[str], where: str) -> None:
    """A typo in a config file must not silently fall back to a default."""
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (docs/configuration.md lists every setting)"
            raise ConfigError(key, f"unknown setting in the {where}{hint}")


def _key(key: str) -> str:
    return key.strip().replace("-", "_").lower()


def _secret_hint(secret: str) -> str:
    return (f"set PIFLOW_{secret.upper()} in the environment or point {SECRET_FILES[secret]} "
            f"(PIFLOW_{SECRET_FILES[secret].upper()}) at a file holding it")


def _read_secret_file(setting: str, path: Path) -> str:
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    if not text:
        raise ConfigError(setting, f"{path} is empty")
    return text


# --- loading ----------------------------------------------------------------------------------------------


def load_settings(
    config_path: Path | None = None, overrides: dict[str, object] | None = None
) -> PiflowSettings:
    """Settings from defaults < TOML < ``PIFLOW_*`` environment < ``overrides`` (CLI flags; None = unset)."""
    toml_values = piflow_table(read_toml(config_path))
    flags: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _TOML_VALUES.set(toml_values)
    try:
        return PiflowSettings(**flags)
    except ValidationError as exc:
        raise config_error_from(exc) from None
    finally:
        _TOML_VALUES.reset(token)


def config_error_from(exc: ValidationError) -> ConfigError:
    """The first problem of a pydantic report as one ConfigError naming the setting (secrets not echoed)."""
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ())]
    setting = ".".join(loc) if loc else "settings"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown setting"
    elif (loc and loc[0] not in SECRET_FILES and isinstance(err.get("input"), str | int | float | bool)
          and repr(err["input"]) not in msg):
        msg = f"{msg} (got {err['input']!r})"
    example = EXAMPLES.get(setting)
    if example and "e.g." not in msg and "such as" not in msg:
        msg = f"{msg}; e.g. {example}"
    return ConfigError(setting, msg)


# --- emulator ---------------------------------------------------------------------------------------------

_FAULT_KEYS = ("latency_ms", "latency_jitter_ms", "error_rate", "rate_limit_rps", "drop_rate", "slow_body_ms",
               "channel_close_every_s")


def load_emulator_settings(config_path: Path | None, overrides: dict[str, object]) -> EmulatorSettings:
    """Emulator settings from the TOML's ``[emulator]`` table, then flat CLI flags (None = unset).

    Flags are flat (``--auth basic``, ``--error-rate 0.1``); they land in ``auth.mode`` and ``faults.*``.
    """
    from piflow.emulator.settings import EmulatorSettings

    doc = read_toml(config_path) if config_path is not None else {}
    check_sections(doc)
    table = doc.get("emulator", {})
    if not isinstance(table, dict):
        raise ConfigError("emulator", "must be a table ([emulator])")
    data: dict[str, Any] = {_key(k): v for k, v in table.items()}
    _reject_unknown(data, set(EmulatorSettings.model_fields), "[emulator] table")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "auth":
            data.setdefault("auth", {})["mode"] = value
        elif key in _FAULT_KEYS:
            data.setdefault("faults", {})[key] = value
        else:
            data[key] = value
    try:
        return EmulatorSettings.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc) from None
