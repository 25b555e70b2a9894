"""The options of the ``pi`` source (Spark ``.option(...)`` and Lakeflow connection/table options).

Option names are case-insensitive (Spark lower-cases them); ``snake_case`` and ``camelCase`` spellings are
both accepted. Credentials (``password``, ``token``, ``oidc_client_secret``) may be given as options, or
better, named by ``*_env`` options (``password_env=PI_PASSWORD``) or left to ``PIFLOW_PASSWORD`` & co: then
the secret is read from the environment of the process that makes the request (on Databricks a cluster
environment variable set to ``{{secrets/scope/key}}``) and never travels with the query. Either way a secret
never appears in a ``repr``, a plan, a log line or an error message: :class:`SourceOptions` keeps them in a
private mapping that its ``repr`` leaves out, and errors name the option, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from piflow.errors import ConfigError
from piflow.pitime import TICKS_PER_SECOND, parse_interval
from piflow.spark.plan import Shard

if TYPE_CHECKING:
    from piflow.client.api import PiClient

SECRET_OPTIONS = ("password", "token", "oidc_client_secret")
AUTH_OPTIONS = ("auth", "username", "oidc_client_id", "oidc_token_url", "oidc_scope", "verify_tls", "ca_bundle")
TABLE_ALIASES = {
    "values": "pi_values", "pi_values": "pi_values",
    "points": "pi_points", "pi_points": "pi_points",
    "af_elements": "pi_af_elements", "pi_af_elements": "pi_af_elements",
    "af_attributes": "pi_af_attributes", "pi_af_attributes": "pi_af_attributes",
    "event_frames": "pi_event_frames", "pi_event_frames": "pi_event_frames",
}


def _norm(key: str) -> str:
    """``pointsPerPartition``, ``points_per_partition`` and ``POINTSPERPARTITION`` are one option."""
    return key.replace("_", "").replace("-", "").replace(".", "").lower()


_SECRET_KEYS = {_norm(k) for k in SECRET_OPTIONS}


def _ticks(name: str, text: str, *, allow_zero: bool = False) -> int:
    if allow_zero and text.strip() in ("0", "0s"):
        return 0
    try:
        ticks = int(parse_interval(text).total_seconds() * TICKS_PER_SECOND)
    except ValueError:
        raise ConfigError(name, f"must be an interval such as 1h or 30m, got {text!r}") from None
    if ticks <= 0 and not allow_zero:
        raise ConfigError(name, f"must be longer than zero, got {text!r}")
    return ticks


def _int(name: str, text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {text!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


class _Lookup:
    """Case- and separator-insensitive access to a string mapping."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._values = {_norm(str(k)): ("" if v is None else str(v)) for k, v in raw.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._values.get(_norm(name))
        return default if value is None or value == "" else value

    def items(self) -> list[tuple[str, str]]:
        return list(self._values.items())


@dataclass(frozen=True)
class SourceOptions:
    """Parsed, validated options. Pickled to executors; secrets live in ``_secrets`` (not in the repr)."""

    url: str
    table: str = "pi_values"
    points: str = "*"
    server: str | None = None
    database: str | None = None
    start: str = "*-1d"
    end: str = "*"
    window_ticks: int = 86400 * TICKS_PER_SECOND
    points_per_partition: int = 100
    max_batch_window_ticks: int = 7 * 86400 * TICKS_PER_SECOND
    safety_lag_ticks: int = 30 * TICKS_PER_SECOND
    shard: Shard | None = None
    max_items: int = 150_000
    points_refresh_s: float = 300.0
    timeout_s: float = 60.0
    retries: int = 8
    auth: dict[str, str] = field(default_factory=dict)
    _secrets: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _secret_envs: dict[str, str] = field(default_factory=dict, compare=False)
    _raw: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SourceOptions:
        """Options from a Spark/Lakeflow mapping; one ConfigError naming the option on any problem."""
        o = _Lookup(raw)
        url = o.get("url")
        if not url:
            raise ConfigError("url", "is required: .option('url', 'https://pi.example.com/piwebapi')")
        table_name = (o.get("table") or o.get("tableName") or "pi_values").lower()
        if table_name not in TABLE_ALIASES:
            raise ConfigError("table", f"unknown table {table_name!r}; one of {sorted(set(TABLE_ALIASES.values()))}")
        shard_text = o.get("shard")
        try:
            shard = Shard.parse(shard_text) if shard_text else None
        except ValueError as exc:
            raise ConfigError("shard", str(exc)) from None
        return cls(
            url=_checked_url(url), table=TABLE_ALIASES[table_name], points=o.get("points") or "*",
            server=o.get("server"), database=o.get("database"), start=o.get("start") or "*-1d",
            end=o.get("end") or "*",
            window_ticks=_ticks("window", o.get("window") or "1d"),
            points_per_partition=_int("pointsPerPartition", o.get("pointsPerPartition") or "100"),
            max_batch_window_ticks=_ticks("maxBatchWindow", o.get("maxBatchWindow") or "7d"),
            safety_lag_ticks=_ticks("safetyLag", o.get("safetyLag") or "30s", allow_zero=True),
            shard=shard, max_items=_int("maxItems", o.get("maxItems") or "150000"),
            points_refresh_s=_ticks("pointsRefresh", o.get("pointsRefresh") or "5m", allow_zero=True)
            / TICKS_PER_SECOND,
            timeout_s=float(_int("timeout", o.get("timeout") or "60")),
            retries=_int("retries", o.get("retries") or "8", minimum=0),
            auth={k: v for k in AUTH_OPTIONS if (v := o.get(k)) is not None},
            _secrets={k: v for k in SECRET_OPTIONS if (v := o.get(k)) is not None},
            _secret_envs={k: v for k in SECRET_OPTIONS if (v := o.get(f"{k}_env")) is not None},
            _raw={k: v for k, v in o.items() if k not in _SECRET_KEYS},
        )

    def with_table(self, raw: Mapping[str, Any]) -> SourceOptions:
        """These (connection) options overlaid with per-table options (the Lakeflow ``table_options``)."""
        merged: dict[str, Any] = {**self._raw, **self._secrets}
        merged.update({_norm(str(k)): v for k, v in raw.items()})
        return SourceOptions.parse(merged)

    # ---- the client ---------------------------------------------------------------------------------------
    def secret(self, name: str) -> str | None:
        """A secret from the options, else from the environment variable its ``*_env`` option names."""
        if name in self._secrets:
            return self._secrets[name]
        env = self._secret_envs.get(name)
        if env is None:
            return None
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{name}_env", f"environment variable {env} is not set in this process")
        return value

    def client(self) -> PiClient:
        """A new client (each Spark task makes its own; nothing is shared between processes)."""
        from piflow.client.api import PiClient
        from piflow.client.retry import RetryPolicy
        from piflow.config import PiflowSettings, config_error_from

        fields: dict[str, Any] = {"url": self.url, "retries": self.retries, "timeout_s": self.timeout_s}
        fields.update(self.auth)
        for name in SECRET_OPTIONS:
            value = self.secret(name)
            if value is not None:
                fields[name] = value
        try:
            settings = PiflowSettings(**fields)
        except ValidationError as exc:
            raise config_error_from(exc) from None
        return PiClient(settings.require_url(), settings.make_auth(), verify=settings.verify,
                        timeout_s=settings.timeout_s, max_connections=8,
                        retry=RetryPolicy(max_attempts=settings.retries + 1))


def _checked_url(url: str) -> str:
    from piflow.config import normalise_url

    return normalise_url(url)
