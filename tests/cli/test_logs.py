"""Logging set-up: JSON lines, human lines, levels, and redaction of credentials."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest

from piflow.logs import configure_logging, redact


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""  # logs never go to stdout
    return [line for line in captured.err.splitlines() if line]


def test_json_lines_have_ts_level_logger_msg_and_extras(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    logging.getLogger("piflow.jobs.backfill").info("wrote %d values", 1500, extra={"point": "SINUSOID", "run": 7})
    (line,) = _lines(capsys)
    obj = json.loads(line)
    assert obj["level"] == "INFO"
    assert obj["logger"] == "piflow.jobs.backfill"
    assert obj["msg"] == "wrote 1500 values"
    assert obj["point"] == "SINUSOID"
    assert obj["run"] == 7
    assert obj["ts"].endswith("Z")
    assert datetime.fromisoformat(obj["ts"].replace("Z", "+00:00")).tzinfo is not None


def test_json_carries_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("piflow").exception("failed")
    (line,) = _lines(capsys)
    obj = json.loads(line)
    assert obj["level"] == "ERROR"
    assert "ValueError: boom" in obj["exc"]


def test_level_filters_and_reconfiguring_does_not_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", json=False)
    configure_logging("WARNING", json=False)
    log = logging.getLogger("piflow.client")
    log.info("hidden")
    log.warning("shown")
    lines = _lines(capsys)
    assert len(lines) == 1
    assert "WARNING" in lines[0]
    assert "piflow.client" in lines[0]
    assert lines[0].endswith("shown")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("headers={'Authorization': 'Bearer eyJhbGciOi.abc.def'}", "eyJhbGciOi"),
        ("Authorization: Basic UElERU1PXHBpdXNlcjpwaXBhc3M=", "UElERU1PXHBpdXNlcjpwaXBhc3M="),
        ("retrying with Bearer tok-123456789", "tok-123456789"),
        ("login failed: user=u password=hunter2 host=pi", "hunter2"),
        ('{"client_secret": "piflow-secret", "grant_type": "client_credentials"}', "piflow-secret"),
        ("token=abc123&scope=x", "abc123"),
        ("access_token: QWxhZGRpbjpvcGVu", "QWxhZGRpbjpvcGVu"),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    clean = redact(text)
    assert secret not in clean
    assert "***" in clean


def test_redact_keeps_ordinary_words() -> None:
    text = "Basic authentication failed for user PIDEMO\\piuser; token_url=https://idp/token"
    assert redact(text) == text


def test_redaction_applies_to_log_records_and_extras(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    logging.getLogger("piflow.client.http").warning(
        "request headers %s", {"Authorization": "Bearer s3cr3t.t0ken"}, extra={"detail": "password=s3cr3t"}
    )
    (line,) = _lines(capsys)
    assert "s3cr3t" not in line
    obj = json.loads(line)
    assert obj["msg"].startswith("request headers")


def test_logging_the_settings_object_shows_no_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from piflow.config import load_settings

    monkeypatch.setenv("PIFLOW_PASSWORD", "pw-9f8e7d")
    monkeypatch.setenv("PIFLOW_TOKEN", "tk-9f8e7d")
    settings = load_settings(None, {"auth": "basic", "username": "u"})
    configure_logging("INFO", json=False)
    logging.getLogger("piflow").info("settings: %r / %s", settings, settings)
    err = capsys.readouterr().err
    assert "settings: PiflowSettings(" in err
    assert "9f8e7d" not in err
