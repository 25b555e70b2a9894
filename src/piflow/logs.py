"""Logging set-up for the CLI (the library only calls ``logging.getLogger(__name__)``, never this).

Human lines or JSON lines on stderr, so stdout stays free for results. A redaction filter on the handler
scrubs ``Authorization`` headers, bearer/basic credentials and ``password=``/``token=`` values from every
record: secrets should never reach a log call, but a log line is the worst place to find out that one did.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

REDACTED = "***"
_NOISY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "hpack", "websockets")

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()) | {
    "message", "asctime", "taskName"}

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: <anything up to the end of the value>
    (re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\n,;}]+"), r"\1" + REDACTED),
    # key=value / key: value / "key": "value" for the usual secret names
    (re.compile(r"(?i)(\b(?:\w*password|passwd|pwd|\w*token|\w*secret|api_?key)[\"']?\s*[:=]\s*[\"']?)"
                r"[^\s\"',;&}]+"), r"\1" + REDACTED),
    # a bare credential after an auth scheme; words like "Basic authentication" are not credentials
    # (a credential has a digit, a symbol or a lower-to-upper case change)
    (re.compile(r"\b(Bearer|Basic|Negotiate)\s+(?=[A-Za-z0-9._~+/=-]*(?:[0-9+/=._~-]|[a-z][A-Z]))"
                r"[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with credential-looking values replaced by ``***``."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and string extras) with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then any ``extra=`` fields (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in obj:
                obj[key] = value
        if record.exc_info:
            obj["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(obj, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners and rich swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str | int = "INFO", json: bool = False) -> None:
    """Install piflow's single stderr handler on the root logger (idempotent: replaces a previous one)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # The HTTP stack logs one INFO line per request; a backfill makes millions. Keep them for DEBUG.
    noisy = logging.getLevelName(root.level) != "DEBUG"
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if noisy else logging.NOTSET)
