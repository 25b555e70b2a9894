"""Faults on the wire during a backfill: retried to the same table, or a clear error naming point and window."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from piflow.emulator import AuthSettings, EmulatorSettings, FaultSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.jobs.backfill import run_backfill
from piflow.jobs.common import selected_points
from piflow.jobs.discover import run_discover
from piflow.sinks.delta import DeltaSink
from tests.rows import assert_same_rows

from .conftest import T0, settings_for, table_of

pytestmark = pytest.mark.loopback


def expected(srv: EmulatorServer, target: Path, start, end, exclude: set[str] = frozenset()):  # type: ignore[no-untyped-def]
    refs = [r for r in selected_points(DeltaSink(str(target)), "BRK.A0.*") if r.webid not in exclude]
    t = recorded_truth(srv.state, [srv.state.model.point_by_webid(r.webid) for r in refs], start, end)  # type: ignore[misc]
    return t.filter(pc.less(t.column("timestamp"), end))


@pytest.mark.parametrize(
    "faults",
    [
        FaultSettings(error_rate=0.25),  # 500/502/503 storms (502 as an HTML proxy page)
        FaultSettings(drop_rate=0.2),  # connections dropped mid-body
        FaultSettings(rate_limit_rps=8),  # 429 with Retry-After
    ],
    ids=["5xx", "dropped", "429"],
)
def test_backfill_through_faults_equals_truth(faults: FaultSettings, tmp_path: Path) -> None:
    settings = EmulatorSettings(points=1000, seed=3, now=T0, frozen=True, faults=faults, max_returned_items=30_000)
    with EmulatorServer(settings) as srv:
        start, end = T0 - timedelta(hours=6), T0
        s = settings_for(srv, tmp_path, start=start.isoformat(), end=end.isoformat(), retries=12,
                         points_per_request=20, window="2h")
        result = asyncio.run(run_backfill(s))
        assert result.status == "ok"
        assert result.retries > 0  # the faults really happened and were retried
        assert srv.state.stats.faults > 0
        assert_same_rows(table_of(tmp_path), expected(srv, tmp_path, start, end))


def test_token_expiry_mid_run_is_refreshed(tmp_path: Path) -> None:
    auth = AuthSettings(mode="oidc", token_ttl_s=600)
    with EmulatorServer(EmulatorSettings(points=1000, seed=5, now=T0, frozen=True, auth=auth)) as srv:
        s = settings_for(srv, tmp_path, auth="oidc", oidc_client_id="piflow", oidc_client_secret="piflow-secret")
        asyncio.run(run_discover(s))
        srv.state.clock.advance(timedelta(hours=2))  # every token issued so far has expired: 401 mid-run
        start, end = T0 - timedelta(hours=3), T0
        s2 = settings_for(srv, tmp_path, auth="oidc", oidc_client_id="piflow", oidc_client_secret="piflow-secret",
                          start=start.isoformat(), end=end.isoformat())
        assert asyncio.run(run_backfill(s2)).status == "ok"
        assert_same_rows(table_of(tmp_path), expected(srv, tmp_path, start, end))


def test_wrong_password_is_one_clear_error_without_the_secret(tmp_path: Path) -> None:
    auth = AuthSettings(mode="basic", users={"PIDEMO\\piuser": "right-one"})
    with EmulatorServer(EmulatorSettings(points=50, now=T0, frozen=True, auth=auth)) as srv:
        s = settings_for(srv, tmp_path, auth="basic", username="PIDEMO\\piuser", password="wrong-secret-value")
        from piflow.errors import AuthError

        with pytest.raises(AuthError) as info:
            asyncio.run(run_discover(s))
        assert "wrong-secret-value" not in str(info.value)
        assert "401" in str(info.value)
        runs = sorted(table_of(tmp_path, "pi_ingest_runs").to_pylist(), key=lambda r: r["started_at"])
        assert runs[-1]["status"] == "failed"
        assert "wrong-secret-value" not in runs[-1]["message"]


def test_point_deleted_mid_run_is_reported_and_others_land(tmp_path: Path) -> None:
    with EmulatorServer(EmulatorSettings(points=1000, seed=9, now=T0, frozen=True)) as srv:
        start, end = T0 - timedelta(hours=4), T0
        s = settings_for(srv, tmp_path, start=start.isoformat(), end=end.isoformat())
        asyncio.run(run_discover(s))
        victim = selected_points(DeltaSink(str(tmp_path)), "BRK.A0.*")[7]
        p = srv.state.model.point_by_webid(victim.webid)
        assert p is not None
        srv.state.deleted_points.add((p.server.index, p.index))
        result = asyncio.run(run_backfill(s))
        assert result.status == "partial"
        assert victim.name in result.message
        assert_same_rows(table_of(tmp_path), expected(srv, tmp_path, start, end, exclude={victim.webid}))
        # Discover now tombstones it, and a re-run completes without it.
        asyncio.run(run_discover(s))
        assert asyncio.run(run_backfill(s)).status == "ok"
