"""Settings: precedence, URL normalisation, secrets, validation errors naming one setting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from piflow.config import PiflowSettings, load_emulator_settings, load_settings, normalise_url
from piflow.errors import ConfigError

WriteToml = Callable[..., Path]


def test_defaults_without_any_source() -> None:
    s = load_settings(None, {})
    assert s.url is None
    assert (s.auth, s.target, s.points, s.start, s.end) == ("none", "./lake", "*", "*-1d", "*")
    assert (s.concurrency, s.max_rps, s.points_per_request, s.timeout_s, s.retries) == (8, 0.0, 0, 60.0, 8)
    assert (s.safety_lag, s.lookback, s.window, s.progress, s.log_level) == ("30s", "1h", None, "auto", "INFO")
    assert s.verify_tls is True
    assert s.log_json is False


def test_precedence_defaults_toml_env_flags(write_toml: WriteToml, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_toml(
        'concurrency = 3\ntarget = "/toml/lake"\npoints = "TOML*"\nstart = "*-7d"\n', name="other.toml"
    )
    monkeypatch.setenv("PIFLOW_TARGET", "/env/lake")
    monkeypatch.setenv("PIFLOW_POINTS", "ENV*")
    s = load_settings(cfg, {"points": "FLAG*", "end": None})
    assert s.retries == 8  # default: nobody set it
    assert s.concurrency == 3  # toml beats default
    assert s.start == "*-7d"
    assert s.target == "/env/lake"  # env beats toml
    assert s.points == "FLAG*"  # flag beats env
    assert s.end == "*"  # a flag left unset (None) does not override


def test_default_config_file_is_read_from_working_directory(write_toml: WriteToml) -> None:
    write_toml('[piflow]\nurl = "http://localhost:8080/piwebapi"\nmax-rps = 50\n')
    s = load_settings(None, {})
    assert s.url == "http://localhost:8080/piwebapi"
    assert s.max_rps == 50.0


def test_piflow_table_beats_top_level_and_other_tables_are_ignored(write_toml: WriteToml) -> None:
    cfg = write_toml('retries = 1\n[piflow]\nretries = 2\n[emulator]\npoints = 10\n')
    assert load_settings(cfg, {}).retries == 2


def test_explicit_config_that_does_not_exist() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(Path("nope.toml"), {})
    assert exc.value.setting == "config"
    assert "nope.toml" in str(exc.value)


def test_invalid_toml_is_a_config_error(write_toml: WriteToml) -> None:
    cfg = write_toml("url = \n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, {})
    assert exc.value.setting == "config"


def test_unknown_key_in_toml_is_named_with_a_suggestion(write_toml: WriteToml) -> None:
    cfg = write_toml("concurency = 4\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, {})
    assert exc.value.setting == "concurency"
    assert "concurrency" in str(exc.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://pi.example.com/piwebapi", "https://pi.example.com/piwebapi"),
        ("https://pi.example.com/piwebapi/", "https://pi.example.com/piwebapi"),
        ("https://pi.example.com", "https://pi.example.com/piwebapi"),
        ("https://pi.example.com/", "https://pi.example.com/piwebapi"),
        ("  http://127.0.0.1:8080  ", "http://127.0.0.1:8080/piwebapi"),
        ("HTTPS://pi.example.com:8443/PIWebAPI/dataservers", "https://pi.example.com:8443/piwebapi"),
        ("https://gw.example.com/plant1/piwebapi", "https://gw.example.com/plant1/piwebapi"),
        ("https://gw.example.com/plant1", "https://gw.example.com/plant1/piwebapi"),
    ],
)
def test_url_normalisation(given: str, expected: str) -> None:
    assert normalise_url(given) == expected
    assert load_settings(None, {"url": given}).url == expected


@pytest.mark.parametrize(
    "bad", ["ftp://pi.example.com/piwebapi", "pi.example.com/piwebapi", "https:///piwebapi",
            "https://pi.example.com/piwebapi?x=1"],
)
def test_bad_urls_name_the_url_setting(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"url": bad})
    assert exc.value.setting == "url"


def test_require_url_explains_how_to_give_it() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {}).require_url()
    assert exc.value.setting == "url"
    assert "--url" in str(exc.value)
    assert "PIFLOW_URL" in str(exc.value)


@pytest.mark.parametrize(
    ("secret", "file_setting"),
    [("password", "password_file"), ("token", "token_file"), ("oidc_client_secret", "oidc_client_secret_file")],
)
def test_secret_in_toml_is_rejected_naming_the_setting(
    write_toml: WriteToml, secret: str, file_setting: str
) -> None:
    cfg = write_toml(f'[piflow]\n{secret} = "hunter2"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, {})
    assert exc.value.setting == secret
    message = str(exc.value)
    assert f"PIFLOW_{secret.upper()}" in message
    assert file_setting in message
    assert "hunter2" not in message


def test_basic_auth_without_password_names_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_USERNAME", "PIDEMO\\piuser")
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"auth": "basic"})
    assert exc.value.setting == "password"


def test_basic_auth_without_username_names_username(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_PASSWORD", "pipass")
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"auth": "basic"})
    assert exc.value.setting == "username"


def test_bearer_needs_token_and_oidc_needs_client(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"auth": "bearer"})
    assert exc.value.setting == "token"
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"auth": "oidc"})
    assert exc.value.setting == "oidc_client_id"
    monkeypatch.setenv("PIFLOW_OIDC_CLIENT_ID", "piflow")
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"auth": "oidc"})
    assert exc.value.setting == "oidc_client_secret"


def test_secrets_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_AUTH", "basic")
    monkeypatch.setenv("PIFLOW_USERNAME", "PIDEMO\\piuser")
    monkeypatch.setenv("PIFLOW_PASSWORD", "pipass")
    s = load_settings(None, {})
    assert s.auth == "basic"
    assert s.password is not None
    assert s.password.get_secret_value() == "pipass"


def test_secret_files_are_read_and_stripped(tmp_path: Path, write_toml: WriteToml) -> None:
    (tmp_path / "pw").write_text("  pipass\n", encoding="utf-8")
    (tmp_path / "tok").write_text("tok-123\n", encoding="utf-8")
    (tmp_path / "cs").write_text("piflow-secret\n\n", encoding="utf-8")
    cfg = write_toml(
        f'auth = "basic"\nusername = "u"\npassword_file = "{tmp_path / "pw"}"\n'
        f'token_file = "{tmp_path / "tok"}"\noidc_client_secret_file = "{tmp_path / "cs"}"\n'
    )
    s = load_settings(cfg, {})
    assert s.password is not None
    assert s.token is not None
    assert s.oidc_client_secret is not None
    assert s.password.get_secret_value() == "pipass"
    assert s.token.get_secret_value() == "tok-123"
    assert s.oidc_client_secret.get_secret_value() == "piflow-secret"


def test_missing_or_empty_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {})
    assert exc.value.setting == "token_file"
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    monkeypatch.setenv("PIFLOW_TOKEN_FILE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {})
    assert exc.value.setting == "token_file"


def test_secret_and_its_file_together_is_ambiguous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("one", encoding="utf-8")
    monkeypatch.setenv("PIFLOW_PASSWORD", "two")
    monkeypatch.setenv("PIFLOW_PASSWORD_FILE", str(tmp_path / "pw"))
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {})
    assert exc.value.setting == "password_file"


def test_repr_str_and_dump_never_show_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cs").write_text("cs-s3cr3t-value", encoding="utf-8")
    monkeypatch.setenv("PIFLOW_PASSWORD", "pw-s3cr3t-value")
    monkeypatch.setenv("PIFLOW_TOKEN", "tok-s3cr3t-value")
    monkeypatch.setenv("PIFLOW_OIDC_CLIENT_SECRET_FILE", str(tmp_path / "cs"))
    s = load_settings(None, {"auth": "basic", "url": "http://localhost", "username": "u"})
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert "s3cr3t" not in text
    assert s.password is not None
    assert s.password.get_secret_value() == "pw-s3cr3t-value"


def test_invalid_value_from_env_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_CONCURRENCY", "lots")
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {})
    assert exc.value.setting == "concurrency"
    assert "lots" in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("concurrency", 0), ("max_rps", -1), ("retries", -1), ("timeout_s", 0), ("auth", "ntlm"),
     ("progress", "sometimes"), ("start", "next tuesday-ish"), ("window", "1 fortnight"),
     ("safety_lag", "soon"), ("log_level", "LOUD")],
)
def test_invalid_values_name_their_setting(setting: str, value: object) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {setting: value})
    assert exc.value.setting == setting


def test_intervals_and_times_are_accepted() -> None:
    s = load_settings(None, {"window": "6h", "safety_lag": "45s", "lookback": "2h", "start": "2025-01-01T00:00:00Z",
                             "end": "t-1h", "log_level": "debug"})
    assert s.window_delta == timedelta(hours=6)
    assert s.safety_lag_delta == timedelta(seconds=45)
    assert s.lookback_delta == timedelta(hours=2)
    assert s.log_level == "DEBUG"
    assert load_settings(None, {"window": "auto"}).window_delta is None


def test_verify_property(tmp_path: Path) -> None:
    assert load_settings(None, {}).verify is True
    assert load_settings(None, {"verify_tls": False}).verify is False
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    assert load_settings(None, {"ca_bundle": bundle}).verify == str(bundle)
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"ca_bundle": tmp_path / "missing.pem"})
    assert exc.value.setting == "ca_bundle"
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"ca_bundle": bundle, "verify_tls": False})
    assert exc.value.setting == "ca_bundle"


def test_verify_tls_from_env_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_VERIFY_TLS", "false")
    assert load_settings(None, {}).verify is False


def test_emulator_settings_from_toml_table_and_flags(write_toml: WriteToml) -> None:
    cfg = write_toml('url = "http://x"\n[emulator]\npoints = 25\nseed = 3\n[emulator.faults]\nlatency_ms = 5.0\n')
    s = load_emulator_settings(cfg, {"seed": 11, "auth": "bearer", "error_rate": 0.25, "points": None})
    assert (s.points, s.seed) == (25, 11)
    assert s.auth.mode == "bearer"
    assert (s.faults.latency_ms, s.faults.error_rate) == (5.0, 0.25)


def test_emulator_settings_errors_name_the_setting(write_toml: WriteToml) -> None:
    with pytest.raises(ConfigError) as exc:
        load_emulator_settings(None, {"points": "many"})
    assert exc.value.setting == "points"
    cfg = write_toml("[emulator]\nlate-shares = 0.5\n")
    with pytest.raises(ConfigError) as exc:
        load_emulator_settings(cfg, {})
    assert exc.value.setting == "late_shares"
    assert "late_share" in str(exc.value).replace("late_shares", "")


@pytest.mark.parametrize(("flags", "setting"), [
    ({"late_share": 7.0}, "late_share"), ({"error_rate": -0.1}, "error_rate"), ({"points": 0}, "points"),
    ({"drop_rate": 1.5}, "drop_rate"), ({"max_returned_items": 0}, "max_returned_items"),
])
def test_emulator_shares_rates_and_counts_out_of_range_are_refused(flags: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_emulator_settings(None, flags)
    assert exc.value.setting.split(".")[-1] == setting  # faults land in [emulator.faults]


def test_emulator_config_with_a_misspelt_section_is_refused(write_toml: WriteToml) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[emulatr\].*did you mean \[emulator\]"):
        load_emulator_settings(write_toml("[emulatr]\npoints = 5\n"), {})


def test_settings_built_directly_read_env_but_no_toml(
    write_toml: WriteToml, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml("retries = 1\n")
    monkeypatch.setenv("PIFLOW_CONCURRENCY", "2")
    s = PiflowSettings()
    assert (s.concurrency, s.retries) == (2, 8)


def test_make_auth_builds_the_client_auth_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import base64

    from piflow.client import auth as client_auth

    def headers_of(a: client_auth.Auth) -> dict[str, str]:
        headers: dict[str, str] = {}
        asyncio.run(a.apply(headers, None))  # type: ignore[arg-type]  # basic/bearer never call the http layer
        return headers

    assert isinstance(load_settings(None, {}).make_auth(), client_auth.NoAuth)

    monkeypatch.setenv("PIFLOW_PASSWORD", "pipass")
    basic = load_settings(None, {"auth": "basic", "username": "PIDEMO\\piuser"}).make_auth()
    assert isinstance(basic, client_auth.BasicAuth)
    expected = "Basic " + base64.b64encode(b"PIDEMO\\piuser:pipass").decode()
    assert headers_of(basic) == {"Authorization": expected}

    monkeypatch.setenv("PIFLOW_TOKEN", "emulator-static-token")
    bearer = load_settings(None, {"auth": "bearer"}).make_auth()
    assert headers_of(bearer) == {"Authorization": "Bearer emulator-static-token"}

    monkeypatch.setenv("PIFLOW_OIDC_CLIENT_ID", "piflow")
    monkeypatch.setenv("PIFLOW_OIDC_CLIENT_SECRET", "piflow-secret")
    oidc = load_settings(None, {"auth": "oidc", "oidc_token_url": "https://idp.example.com/token",
                                "oidc_scope": "piwebapi"}).make_auth()
    assert isinstance(oidc, client_auth.OidcClientCredentials)
    assert (oidc.client_id, oidc.token_url, oidc.scope) == ("piflow", "https://idp.example.com/token", "piwebapi")
    assert "piflow-secret" in oidc.secrets()
