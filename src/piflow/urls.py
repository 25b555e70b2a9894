"""PI Web API base URLs (pure, standard library only): the one normaliser, used by the settings and the client,
and URLs fit for a message. Apart from the HTTP client so that loading settings does not import it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from piflow.errors import ConfigError

_MAX_SHOWN = 500  # characters of a URL shown in a message


def normalise_base_url(url: str) -> str:
    """The PI Web API base as ``scheme://host[:port][/prefix]/piwebapi``, without a trailing slash.

    The one normaliser (settings use it too, :func:`piflow.config.normalise_url`). Users paste what their
    browser shows: with or without ``/piwebapi``, a trailing slash, or a deeper page such as
    ``.../piwebapi/dataservers``; all of these name the same base, cut at the ``piwebapi`` segment (any case).
    A query string or fragment is dropped. Credentials in the URL are refused: httpx would send them as Basic
    auth, around the auth setting and the rule that secrets never come from a URL.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("url", f"not an http(s) URL: {display_url(text)!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("url", f"{display_url(text)!r} carries a user name or password; give the URL without "
                                 "them and the credentials as settings (user, and the password in PIFLOW_PASSWORD "
                                 "or password_file), never in a URL")
    segments = [s for s in parts.path.split("/") if s]
    lowered = [s.lower() for s in segments]
    if "piwebapi" in lowered:
        segments = segments[:lowered.index("piwebapi")]
    return urlunsplit((parts.scheme, parts.netloc, "/".join(["", *segments, "piwebapi"]), "", ""))


def display_url(url: str) -> str:
    """A URL fit for a message: no user:password part, and not endlessly long."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url if len(url) <= _MAX_SHOWN else url[:_MAX_SHOWN] + "..."
