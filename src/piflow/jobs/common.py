"""What the jobs share besides their run skeleton (:mod:`piflow.jobs.runs`): the point selection, the server's
clock and PI time strings, and running coroutines all or none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow.compute as pc

from piflow.errors import AuthError, BadRequestError, ConfigError, NotFoundError, PiflowError
from piflow.pitime import from_ticks, parse_iso_ticks, parse_pi_time
from piflow.planner import PointRef
from piflow.sinks.delta import DeltaSink
from piflow.wildcards import wildcard

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings
    from piflow.progress import Progress

log = logging.getLogger(__name__)
T = TypeVar("T")


def selected_points(sink: DeltaSink, name_filter: str) -> list[PointRef]:
    """Live (not tombstoned) points of ``pi_points`` whose name matches the filter (PI's wildcards, as the
    server matched them for discover), ordered by name."""
    table = sink.read("pi_points", columns=["webid", "name", "point_type", "engineering_units", "is_deleted"])
    table = table.filter(pc.invert(table.column("is_deleted")))
    rx = wildcard(name_filter)
    refs = [
        PointRef(r["webid"], r["name"], r["point_type"], r["engineering_units"] or None)
        for r in table.to_pylist()
        if rx.fullmatch(r["name"])
    ]
    refs.sort(key=lambda p: p.name)
    return refs


async def points_to_read(settings: PiflowSettings, sink: DeltaSink, progress: Progress) -> list[PointRef]:
    """The points a job reads: from ``pi_points``, discovering them first if the table has none for the filter."""
    points = selected_points(sink, settings.points)
    if not points:
        from piflow.jobs.discover import run_discover

        progress.note("pi_points is empty for this filter: discovering points first")
        await run_discover(settings, progress)
        points = selected_points(sink, settings.points)
    if not points:
        raise ConfigError("points", f"no PI point matches {settings.points!r}")
    return points


async def server_now(client: PiClient) -> datetime:
    """The PI server's clock (jobs measure "now" where the data is, not on this machine).

    ``system/status`` gives it; a server without one (disabled, a gateway, another implementation) gives it in
    the ``Date`` header of any answer; failing both, this machine's clock is used with a warning, since the
    skew is then unknown. The choice is made once per client and noted.
    """
    caps = client.caps
    if caps.system_status is not False:
        try:
            status = await client.system_status()
        except (NotFoundError, BadRequestError, AuthError) as exc:
            if isinstance(exc, AuthError) and exc.status != 403:
                raise  # 401: the credentials are wrong, which every other call would say too
            caps.fallback("system_status", f"the server refuses system/status (HTTP {exc.status}): taking the "
                                           "server's time from the Date header of its answers")
        else:
            text = status.get("ServerTime")
            if text:
                caps.worked("system_status")
                return from_ticks(parse_iso_ticks(str(text)))
            caps.fallback("system_status", "system/status has no ServerTime: taking the server's time from the "
                                           "Date header of its answers")
    with contextlib.suppress(PiflowError):  # any answer carries the Date header, a refusal too
        await client.http.get_json("")
    date = client.http.server_date()
    if date is not None:
        return date
    caps.fallback("server_clock", "the server gives its time neither in system/status nor in a Date header: "
                                  "using this machine's clock, so the skew to the PI server is unknown")
    return datetime.now(UTC)


def resolve_time(setting: str, text: str, now: datetime) -> datetime:
    try:
        return parse_pi_time(text, now)
    except ValueError as exc:
        raise ConfigError(setting, f"cannot parse PI time {text!r}") from exc


async def all_or_none(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines at once and return their results in order; when one fails, the others are cancelled
    (and awaited) before its error is raised, so none keeps using a client that is about to close."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
