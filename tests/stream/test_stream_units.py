"""Pure parts of streaming: which pushed values may go in as they are, socket planning, handshake answers."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piflow import decode, schema
from piflow.client.channels import (
    ChannelOptions,
    ChannelUnavailableError,
    channel_url,
    chunk_params,
    handshake_error,
    plan_sockets,
    ws_base,
)
from piflow.errors import AuthError, ConfigError, NotFoundError, RateLimitedError, ServerBusyError
from piflow.jobs.stream.news import NewsBuffer, Pushed, classify_news, dedupe_latest, news_table
from piflow.jobs.stream.options import StreamOptions
from piflow.jobs.stream.stats import Delays, StreamStats, status_line
from piflow.planner import PointRef

A, B = "F1DPaaaa", "F1DPbbbb"
US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def rows(*items: tuple[str, int, int]) -> pa.Table:
    """A pi_values table of (webid, microseconds after T0, seq) rows holding the number 1.0."""
    n = len(items)
    ts = pa.array([US + t for _, t, _ in items], pa.int64()).cast(schema.TS)
    return pa.table({
        "webid": [w for w, _, _ in items],
        "timestamp": ts,
        "seq": pa.array([s for _, _, s in items], pa.int32()),
        "date": pc.cast(ts, pa.date32()),
        "value_kind": ["number"] * n, "value_double": [float(i) for i in range(n)],
        "value_string": pa.nulls(n, pa.string()), "state_code": pa.nulls(n, pa.int32()),
        "state_name": pa.nulls(n, pa.string()), "is_system": [False] * n, "good": [True] * n,
        "questionable": [False] * n, "substituted": [False] * n, "annotated": [False] * n,
        "units": ["bar"] * n, "source": ["channel"] * n,
        "ingested_at": pa.array([US] * n, pa.int64()).cast(schema.TS),
    }, schema=schema.PI_VALUES)


def keys(table: pa.Table) -> list[tuple[str, int]]:
    ts = table.column("timestamp").cast(pa.int64()).to_pylist()
    return [(w, t - US) for w, t in zip(table.column("webid").to_pylist(), ts, strict=True)]


# ---- classify_news ------------------------------------------------------------------------------------------
def test_new_values_of_a_point_go_in_directly() -> None:
    news = rows((A, 30, 0), (A, 10, 0), (B, 5, 0))  # out of order within A is fine: distinct and all new
    direct, reread = classify_news(news, {A: US + 9, B: US + 4})
    assert keys(direct) == [(A, 30), (A, 10), (B, 5)]
    assert reread == {}


def test_a_value_at_or_before_the_watermark_sends_its_point_to_reread() -> None:
    # A late value (10 <= watermark 20) and a new one (30): the whole point is re-read over [10, 30].
    news = rows((A, 30, 0), (A, 10, 0), (B, 40, 0))
    direct, reread = classify_news(news, {A: US + 20, B: US + 20})
    assert keys(direct) == [(B, 40)]
    assert reread == {A: (US + 10, US + 30)}


def test_an_edit_at_the_watermark_itself_is_reread() -> None:
    direct, reread = classify_news(rows((A, 20, 0)), {A: US + 20})
    assert direct.num_rows == 0
    assert reread == {A: (US + 20, US + 20)}


def test_two_pushed_values_sharing_a_timestamp_are_reread() -> None:
    # Which of the two is seq 0 is the server's order, which the pushes do not reliably carry.
    direct, reread = classify_news(rows((A, 50, 0), (A, 50, 1), (B, 50, 0)), {})
    assert keys(direct) == [(B, 50)]
    assert reread == {A: (US + 50, US + 50)}


def test_points_without_watermark_take_everything_new() -> None:
    direct, reread = classify_news(rows((A, -10**9, 0)), {})
    assert direct.num_rows == 1
    assert reread == {}


# ---- dedupe_latest -----------------------------------------------------------------------------------------
def test_dedupe_keeps_the_last_row_of_each_key_in_order() -> None:
    first = rows((A, 1, 0), (A, 2, 0), (B, 1, 0))
    later = rows((A, 2, 0), (A, 2, 1), (A, 3, 0))
    later = later.set_column(5, "value_double", pa.array([20.0, 21.0, 30.0]))
    out = dedupe_latest(pa.concat_tables([first, later]))
    got = {(w, t, s): v for (w, t), s, v in zip(keys(out), out.column("seq").to_pylist(),
                                               out.column("value_double").to_pylist(), strict=True)}
    assert got == {(A, 1, 0): 0.0, (A, 2, 0): 20.0, (A, 2, 1): 21.0, (A, 3, 0): 30.0, (B, 1, 0): 2.0}
    assert out.num_rows == 5


def test_dedupe_leaves_distinct_rows_alone() -> None:
    table = rows((A, 1, 0), (B, 1, 0), (A, 1, 1))
    assert dedupe_latest(table).equals(table)


# ---- buffer and decoding ---------------------------------------------------------------------------------------
def test_buffer_holds_points_whose_gap_is_not_committed() -> None:
    buf = NewsBuffer()
    v = [decode.PiValue(Timestamp="2026-01-01T00:00:01Z", Value=1.5)]
    buf.add(A, v, "bar", schema.SOURCE_CHANNEL)
    buf.add(B, v + v, None, schema.SOURCE_CHANNEL)
    buf.add(B, [], None, schema.SOURCE_CHANNEL)  # a stream item without values adds nothing
    assert buf.size == 3
    out = buf.drain({B: 1})
    assert list(out) == [A]
    assert buf.size == 2
    assert list(buf.drain({})) == [B]
    assert buf.size == 0


def test_delays_are_measured_per_value_from_arrival_to_commit() -> None:
    buf = NewsBuffer()
    v = decode.PiValue(Timestamp="2026-01-01T00:00:01Z", Value=1.0)
    buf.add(A, [v] * 3, None, schema.SOURCE_CHANNEL, arrived=100.0)
    buf.add(B, [v], None, schema.SOURCE_CHANNEL, arrived=104.0)
    delays = Delays()
    assert delays.quantile(0.5) is None
    delays.record(buf.drain({}), done=105.0)
    assert delays.quantile(0.5) == 5.0  # three of the four values waited 5 s
    assert delays.quantile(0.99) == 5.0
    assert delays.quantile(0.0) == 1.0


def test_news_table_decodes_by_point_type_and_source() -> None:
    points = {A: PointRef(A, "A", "Int32", "count"), B: PointRef(B, "B", "Digital", None)}
    news = {
        A: [Pushed(schema.SOURCE_CHANNEL, [decode.PiValue(Timestamp="2026-01-01T00:00:01.5Z", Value=7)], None, 0.0)],
        B: [Pushed(schema.SOURCE_UPDATE, [decode.PiValue(Timestamp="2026-01-01T00:00:02Z",
                                                         Value=decode.PiState(Name="Auto", Value=0))], "", 0.0)],
    }
    table = news_table(news, points).sort_by("webid")
    assert table.schema == schema.PI_VALUES
    got = table.select(["webid", "value_kind", "value_double", "state_name", "units", "source", "seq"]).to_pylist()
    assert got == [
        {"webid": A, "value_kind": "number", "value_double": 7.0, "state_name": None, "units": "count",
         "source": "channel", "seq": 0},
        {"webid": B, "value_kind": "digital", "value_double": None, "state_name": "Auto", "units": None,
         "source": "update", "seq": 0},
    ]


# ---- channel URLs and sockets --------------------------------------------------------------------------------
def test_ws_base_maps_schemes() -> None:
    assert ws_base("https://pi.example.com/piwebapi") == "wss://pi.example.com/piwebapi"
    assert ws_base("http://127.0.0.1:8080/piwebapi/") == "ws://127.0.0.1:8080/piwebapi"
    with pytest.raises(ConfigError):
        ws_base("ftp://pi.example.com/piwebapi")


def test_channel_url_carries_points_and_options() -> None:
    url = channel_url("https://pi/piwebapi", [A, "F1DP+/="], ChannelOptions(heartbeat_rate=3,
                                                                             extra_params=(("_pollSeconds", "0.1"),)))
    assert url == ("wss://pi/piwebapi/streamsets/channel?webId=F1DPaaaa&webId=F1DP%2B%2F%3D"
                   "&includeInitialValues=false&heartbeatRate=3&_pollSeconds=0.1")
    assert "heartbeatRate" not in channel_url("https://pi/piwebapi", [A], ChannelOptions(heartbeat_rate=0))


def test_sockets_are_bounded_by_count_and_by_url_length() -> None:
    ids = [f"F1DP{i:076d}" for i in range(250)]  # 80 characters each, like real Full WebIDs
    by_count = plan_sockets("http://h/piwebapi", ids, 100, max_url_chars=10**9)
    assert [len(s) for s in by_count] == [100, 100, 50]
    by_url = plan_sockets("http://h/piwebapi", ids, 500, max_url_chars=8000)
    assert [w for s in by_url for w in s] == ids  # every point once, order kept
    assert all(len(channel_url("http://h/piwebapi", s)) <= 8000 for s in by_url)
    assert len(by_url[0]) >= 90  # and the sockets are reasonably full
    assert len(channel_url("http://h/piwebapi", by_url[0] + [ids[len(by_url[0])]])) > 8000


def test_chunk_params_gives_a_long_value_its_own_chunk() -> None:
    assert chunk_params(["a", "x" * 50, "b"], "marker", 10, 5, max_url_chars=40) == [["a"], ["x" * 50], ["b"]]
    with pytest.raises(ValueError, match="at least 1"):
        chunk_params(["a"], "marker", 10, 0)


# ---- handshake answers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "kind"), [
    (401, AuthError), (403, AuthError), (404, NotFoundError), (429, RateLimitedError), (503, ServerBusyError),
    (502, ServerBusyError), (200, ChannelUnavailableError), (400, ChannelUnavailableError),
    (405, ChannelUnavailableError), (426, ChannelUnavailableError), (501, ChannelUnavailableError),
])
def test_handshake_answers_map_to_the_error_tree(status: int, kind: type[Exception]) -> None:
    exc = handshake_error(status, b'{"Errors": ["nope"]}', "ws://h/piwebapi/streamsets/channel", retry_after=2.0)
    assert type(exc) is kind
    assert exc.status == status
    if isinstance(exc, RateLimitedError):
        assert exc.retry_after == 2.0


def test_an_html_page_instead_of_an_upgrade_is_unavailable() -> None:
    exc = handshake_error(200, b"<html><body>Proxy says hello</body></html>", "ws://h/x")
    assert isinstance(exc, ChannelUnavailableError)
    assert "instead of an upgrade" in str(exc)


# ---- options and status -----------------------------------------------------------------------------------------
def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="commit_interval"):
        StreamOptions(commit_interval_s=0)
    with pytest.raises(ConfigError, match="stream_modes"):
        StreamOptions(modes=("carrier-pigeon",))
    with pytest.raises(ConfigError, match="points_per_socket"):
        StreamOptions(points_per_socket=0)


def test_status_line_names_mode_rate_lag_and_reconnects() -> None:
    stats = StreamStats(mode="channels", sockets=3, reconnects=2, inserted=90, updated=10, commits=4,
                        last_lag_s=3.25, waiting=7)
    line = status_line(120, stats, 41.6)
    assert line == ("stream [channels] 120 points, 3 sockets: 42 values/s, lag 3.2 s, 2 reconnects, "
                    "7 values waiting, 100 committed in 4 commits")
    assert "sockets" not in status_line(5, StreamStats(mode="poll"), 0.0)



def test_options_from_settings_and_overrides() -> None:
    class Settings:  # the fields the lead may add to PiflowSettings
        commit_interval = "2s"
        poll_interval = "1m"
        points_per_socket = 50
        heartbeat_rate = None
        stream_modes = "updates, poll"

    opts = StreamOptions.from_settings(Settings(), heartbeat_rate=None, dead_after_s=9.0)
    assert (opts.commit_interval_s, opts.poll_interval_s, opts.points_per_socket) == (2.0, 60.0, 50)
    assert opts.modes == ("updates", "poll")
    assert opts.heartbeat_rate == StreamOptions().heartbeat_rate  # None means "not set"
    assert opts.dead_after_s == 9.0
    assert StreamOptions.from_settings(object()) == StreamOptions()  # today's PiflowSettings: the defaults
    assert StreamOptions.from_settings(object(), commit_interval_s=1.0).commit_interval_s == 1.0

    class Broken:
        commit_interval = "soon"

    with pytest.raises(ConfigError, match="commit_interval"):
        StreamOptions.from_settings(Broken())
