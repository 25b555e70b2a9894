"""piflow: AVEVA PI System (PI Web API) into Delta Lake tables.

The names below are the public API: settings, the jobs, their run record, the client and the errors. Everything
else (the modules under ``piflow.jobs``, ``piflow.client``, ``piflow.sinks``, ...) is internal and may change
between versions; ``piflow.emulator`` and ``piflow.spark`` document their own entry points.

``import piflow`` stays light (the CLI's start-up): the jobs and the client are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from piflow.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    ConflictError,
    DecodeError,
    NetworkError,
    NotFoundError,
    PiApiError,
    PiflowError,
    RateLimitedError,
    ServerBusyError,
    SinkError,
    StateError,
    TooManyItemsError,
    TransientError,
    UnreachableError,
    WriteConflictError,
)

if TYPE_CHECKING:
    from piflow.client import BasicAuth, BearerAuth, KerberosAuth, OidcClientCredentials, PiClient, RetryPolicy
    from piflow.config import PiflowSettings, load_settings
    from piflow.jobs.af.events import run_events
    from piflow.jobs.af.job import run_af
    from piflow.jobs.af.views import run_view
    from piflow.jobs.backfill import run_backfill
    from piflow.jobs.discover import run_discover
    from piflow.jobs.optimize import run_optimize
    from piflow.jobs.runs import RunResult
    from piflow.jobs.stream.job import run_stream
    from piflow.jobs.stream.options import StreamOptions
    from piflow.jobs.sync import run_sync


# The one version source: the build reads it from here (pyproject.toml: [tool.hatch.version]). A literal, not
# importlib.metadata, which costs every command about 35 ms of start-up.
__version__ = "0.1.0"

# name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "PiflowSettings": "piflow.config", "load_settings": "piflow.config",
    "run_discover": "piflow.jobs.discover", "run_backfill": "piflow.jobs.backfill", "run_sync": "piflow.jobs.sync",
    "run_stream": "piflow.jobs.stream.job", "StreamOptions": "piflow.jobs.stream.options",
    "run_af": "piflow.jobs.af.job", "run_events": "piflow.jobs.af.events", "run_view": "piflow.jobs.af.views",
    "run_optimize": "piflow.jobs.optimize",
    "RunResult": "piflow.jobs.runs",
    "PiClient": "piflow.client", "BasicAuth": "piflow.client", "BearerAuth": "piflow.client",
    "KerberosAuth": "piflow.client", "OidcClientCredentials": "piflow.client", "RetryPolicy": "piflow.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'piflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthError",
    "BadRequestError",
    "BadResponseError",
    "BasicAuth",
    "BearerAuth",
    "ConfigError",
    "ConflictError",
    "DecodeError",
    "KerberosAuth",
    "NetworkError",
    "NotFoundError",
    "OidcClientCredentials",
    "PiApiError",
    "PiClient",
    "PiflowError",
    "PiflowSettings",
    "RateLimitedError",
    "RetryPolicy",
    "RunResult",
    "ServerBusyError",
    "SinkError",
    "StateError",
    "StreamOptions",
    "TooManyItemsError",
    "TransientError",
    "UnreachableError",
    "WriteConflictError",
    "__version__",
    "load_settings",
    "run_af",
    "run_backfill",
    "run_discover",
    "run_events",
    "run_optimize",
    "run_stream",
    "run_sync",
    "run_view",
]
