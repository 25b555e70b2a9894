"""Progress display: silent unless a terminal (or always), and the bar shows values."""

from __future__ import annotations

import io

from piflow.progress import NullProgress, Progress, RichProgress, make_progress


class _Tty(io.StringIO):
    """A stream that says it is a terminal (what a user's stderr looks like)."""

    def isatty(self) -> bool:
        return True


def _exercise(progress: Progress) -> None:
    progress.start(3, "backfill windows")
    progress.advance(1, values=1000)
    progress.advance(2, values=500)
    progress.note("point SINUSOID was deleted")
    progress.start(None, "writing")
    progress.advance(values=7)
    progress.close()
    progress.close()  # idempotent


def test_never_and_non_terminal_auto_are_silent() -> None:
    for mode in ("never", "auto"):
        out = io.StringIO()
        progress = make_progress(mode, out)
        assert isinstance(progress, NullProgress)
        _exercise(progress)
        assert out.getvalue() == ""


def test_auto_on_a_terminal_draws() -> None:
    assert isinstance(make_progress("auto", _Tty()), RichProgress)
    assert isinstance(make_progress("never", _Tty()), NullProgress)


def test_always_draws_even_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = make_progress("always", out)
    assert isinstance(progress, RichProgress)
    _exercise(progress)
    text = out.getvalue()
    assert "backfill windows" in text
    assert "3/3" in text
    assert "1.5k values" in text  # the values carried, summed over advance() calls
    assert "7 values" in text  # a new phase counts from zero
    assert "/s" in text
    assert "point SINUSOID was deleted" in text
    assert "writing" in text


def test_both_implementations_satisfy_the_protocol() -> None:
    assert isinstance(NullProgress(), Progress)
    assert isinstance(make_progress("always", io.StringIO()), Progress)
