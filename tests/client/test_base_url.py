"""One URL normaliser: the client's (``normalise_base_url``) and the settings' (``normalise_url``) give the same
base for every URL users paste, and both refuse credentials in a URL without echoing them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from piflow.client import PiHttp
from piflow.config import normalise_url
from piflow.errors import ConfigError
from piflow.urls import normalise_base_url

CASES = [
    ("https://pi.example.com", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/piwebapi", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/piwebapi/", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/piwebapi/dataservers", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/piwebapi/points/F1DPabc/recorded/", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/PIWEBAPI", "https://pi.example.com/piwebapi"),
    ("HTTPS://pi.example.com:8443/PIWebAPI/dataservers", "https://pi.example.com:8443/piwebapi"),
    ("https://gw.example.com/pi/piwebapi", "https://gw.example.com/pi/piwebapi"),
    ("https://gw.example.com/pi/piwebapi/dataservers/", "https://gw.example.com/pi/piwebapi"),
    ("https://gw.example.com/pi", "https://gw.example.com/pi/piwebapi"),
    ("  http://127.0.0.1:8080  ", "http://127.0.0.1:8080/piwebapi"),
]


@pytest.mark.parametrize(("given", "expected"), CASES)
def test_client_and_settings_normalise_alike(given: str, expected: str) -> None:
    assert normalise_base_url(given) == expected
    assert normalise_url(given) == expected
    assert normalise_base_url(expected) == expected  # a normalised base stays as it is


async def test_the_client_uses_the_normalised_base() -> None:
    async with PiHttp("https://pi.example.com/piwebapi/dataservers") as http:
        assert http.base_url == "https://pi.example.com/piwebapi"
        assert http.url_for("points") == "https://pi.example.com/piwebapi/points"


@pytest.mark.parametrize("normalise", [normalise_base_url, normalise_url])
def test_credentials_in_the_url_are_refused_by_both_without_echoing_them(normalise: Callable[[str], str]) -> None:
    with pytest.raises(ConfigError, match="user name or password") as info:
        normalise("https://alice:s3cret-pw@pi.example.com/piwebapi")
    assert info.value.setting == "url"
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.parametrize("bad", ["ftp://pi.example.com/piwebapi", "pi.example.com/piwebapi", "https:///piwebapi"])
def test_what_is_not_an_http_url_is_refused_by_both(bad: str) -> None:
    for normalise in (normalise_base_url, normalise_url):
        with pytest.raises(ConfigError) as info:
            normalise(bad)
        assert info.value.setting == "url"
