"""The ``piflow`` command line (typer).

The CLI is a thin shell: it loads settings, configures logging and the progress display (the library never
does either), calls one job function and prints its result. Job modules are imported inside each command so
the CLI starts fast and still works while a job is missing.

Bad input never shows a traceback. Every option is checked before anything runs: an empty value for any
option of any command (:class:`CheckedGroup`), each value by its option's callback or by the settings, and
the target folder by :func:`check_writable_target` before a command writes to it. A
:class:`~piflow.errors.PiflowError` ends a command with one red line on stderr; any other exception (a bug)
also ends it with one line, naming its type and pointing at ``--debug``, which shows the traceback.

Exit codes: 0 done; 1 an error, or a run that failed; 2 a usage error or a command that is not available;
3 a run that finished ``partial`` (some points could not be read); 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import re
import signal
import sys
import traceback
import typing
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

if TYPE_CHECKING:
    from piflow.config import PiflowSettings
    from piflow.progress import Progress


class CheckedGroup(TyperGroup):
    """A command group whose commands refuse an empty option value (``--target ""``, often an unset shell
    variable) before they parse anything; every option of every command, including ones added later."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, TyperGroup):
            refuse_empty_values(command, rest)
        return name, command, rest


def refuse_empty_values(command: Any, args: list[str]) -> None:
    """A usage error naming the first option of ``command`` given an empty value in ``args``."""
    takes_value: dict[str, Any] = {}
    for param in command.params:
        if param.param_type_name == "option" and not getattr(param, "is_flag", False):
            takes_value.update(dict.fromkeys([*param.opts, *param.secondary_opts], param))
    i = 0
    while i < len(args) and args[i] != "--":
        name, eq, inline = args[i].partition("=")
        param = takes_value.get(name)
        if param is not None and (eq or i + 1 < len(args)):
            value = inline if eq else args[i + 1]
            i += 0 if eq else 1
            if not value.strip():
                raise typer.BadParameter(f"must not be empty{option_example(param)}", param_hint=f"'{name}'")
        i += 1


def option_example(param: Any) -> str:
    """`` (e.g. ...)``: from the option's help text, else its choices or its default."""
    found = re.search(r"e\.g\.,?\s*(.+?)\s*(?:[;()]|, |\.\s|\.?$)", str(getattr(param, "help", "") or ""))
    if found:
        return f" (e.g. {found.group(1)})"
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    choices = [c for a in (annotation, *typing.get_args(annotation)) if typing.get_origin(a) is Literal
               for c in typing.get_args(a)]
    if choices:
        return f" (one of {', '.join(map(str, choices))})"
    default = getattr(param, "default", None)
    return "" if default is None or isinstance(default, bool) or default == "" else f" (e.g. {default})"


app = typer.Typer(
    name="piflow",
    help="AVEVA PI System (PI Web API) to Delta Lake tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CheckedGroup,
)

EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2
EXIT_PARTIAL = 3  # the run finished, but some points could not be read (deleted on the server, say)
PIPED_WIDTH = 240
RESULT_FIELDS = ("run_id", "job", "status", "points", "values_written", "requests", "retries", "errors",
                 "duration_s", "message")

AuthKind = Literal["none", "basic", "bearer", "oidc", "kerberos"]
ProgressMode = Literal["auto", "always", "never"]
EmulatorAuth = Literal["anonymous", "basic", "bearer", "oidc", "kerberos"]

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="TOML settings file, e.g. piflow.toml (default: ./piflow.toml if it exists).")]
UrlOpt = Annotated[str | None, typer.Option(help="PI Web API base, e.g. https://pi.example.com/piwebapi.")]
TargetOpt = Annotated[str | None, typer.Option(
    help="Folder or object-store URI holding the Delta tables, e.g. ./lake or s3://bucket/pi.")]
PointsOpt = Annotated[str | None, typer.Option(help="PI point name filter, e.g. 'PLANT1*'.")]
StartOpt = Annotated[str | None, typer.Option(help="Start time (PI time string, e.g. '*-1d', ISO-8601).")]
EndOpt = Annotated[str | None, typer.Option(help="End time (PI time string, e.g. '*').")]
AuthOpt = Annotated[AuthKind | None, typer.Option(help="Authentication to the PI Web API.")]
ProgressOpt = Annotated[ProgressMode | None, typer.Option(
    help="Progress bar: auto (when stderr is a terminal), always, never.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


# --- plumbing ---------------------------------------------------------------------------------------------


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    """Results on stdout; when piped, wide enough that no table cell (a WebID, a name) is cut short."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, PIPED_WIDTH))
    return console


@contextmanager
def _errors_handled(debug: bool) -> Iterator[None]:
    """Any error -> one red line on stderr and exit 1 (the traceback too with ``--debug``): a PiflowError in its
    own words, anything else (a bug, a Rust panic in delta-rs) as its type and message with a pointer to
    ``--debug``. Signals end the command with 128 + the signal number."""
    from piflow.errors import PiflowError
    from piflow.logs import redact

    def terminated(signum: int, frame: object) -> None:
        raise Interrupted(signum, [])  # SIGTERM stops a command as Ctrl-C does (async jobs install their own)

    with contextlib.suppress(ValueError):  # not in the main thread (tests calling the app in a thread)
        signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    except PiflowError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        message = redact(" ".join(str(exc).split()))  # one line, and never a credential
        _stderr().print(Text(f"error: {message}", style="bold red"), soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    except Interrupted as exc:
        _stderr().print(Text(interrupted_line(exc), style="red"), soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _stderr().print(Text("interrupted", style="red"))
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # typer's own: an exit code, or a usage error it prints itself
    except Exception as exc:
        _unexpected(exc, debug)
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # pyo3's, for a panic inside delta-rs
            raise
        _unexpected(exc, debug)


def _unexpected(exc: BaseException, debug: bool) -> NoReturn:
    """One line for an exception piflow did not expect, and exit 1."""
    from piflow.logs import exception_line

    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "the traceback is above" if debug else "rerun with --debug to see the traceback"
    _stderr().print(Text(f"error: unexpected {exception_line(exc)} ({hint})", style="bold red"), soft_wrap=True)
    raise typer.Exit(EXIT_ERROR) from None


class Interrupted(Exception):
    """The command was stopped by SIGINT or SIGTERM; carries the runs it recorded and the exit code."""

    def __init__(self, signum: int, runs: list[Any]) -> None:
        self.signum = signum
        self.runs = runs
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def run_until_signalled(job: Coroutine[Any, Any, Any]) -> Any:
    """Run a job's coroutine; SIGINT or SIGTERM cancels it, so that it stops where it is, leaves every table
    as its last commit left it and records its run as interrupted; then :class:`Interrupted` is raised."""
    from piflow.jobs.runs import on_stop_signals, recorded_runs

    received: list[int] = []

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        with on_stop_signals(stop):
            return await job

    with recorded_runs() as runs:
        try:
            return asyncio.run(main())
        except (asyncio.CancelledError, KeyboardInterrupt):
            if not received:
                raise
            raise Interrupted(received[0], runs) from None


def interrupted_line(exc: Interrupted) -> str:
    """One line: which signal stopped the command and what its runs had committed by then."""
    stopped = [f"{r.job} run {r.run_id} had committed {r.values_written:,} values" for r in exc.runs
               if r.status == "interrupted"]
    finished = [f"{r.job} run {r.run_id} finished" for r in exc.runs if r.status != "interrupted"]
    head = f"interrupted by {signal.Signals(exc.signum).name}"
    if stopped:
        head += ": " + "; ".join(stopped) + (f" (before it, {', '.join(finished)})" if finished else "")
    elif finished:
        head += f" after {', '.join(finished)}"
    return f"{head}; every table is as its last commit left it, and running the command again continues from there"


def _unavailable(command: str, why: str) -> NoReturn:
    _stderr().print(Text(f"piflow {command}: {why}", style="yellow"), soft_wrap=True)
    raise typer.Exit(EXIT_UNAVAILABLE)


def _job_function(module: str, name: str) -> Callable[..., Any]:
    """``<module>.<name>``, imported when the command runs (``piflow --help`` stays fast)."""
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


def _setup(config: Path | None, overrides: dict[str, object], debug: bool = False) -> PiflowSettings:
    """Settings plus logging, in that order (the log format is itself a setting); the secrets' values are
    registered for redaction, so that none of them can reach a log line or an error message."""
    from piflow.config import load_settings
    from piflow.logs import configure_logging, register_secrets

    settings = load_settings(config, overrides)
    register_secrets(*(s.get_secret_value() if s is not None else None
                       for s in (settings.password, settings.token, settings.oidc_client_secret)),
                     username=settings.username)
    configure_logging(settings.log_level, settings.log_json, tracebacks=debug)
    if not settings.verify_tls:
        logging.getLogger("piflow").warning(
            "TLS certificate verification is OFF (verify_tls = false): use ca_bundle for an internal CA")
    return settings


def _common(url: str | None = None, target: str | None = None, points: str | None = None,
            start: str | None = None, end: str | None = None, auth: str | None = None,
            progress: str | None = None, **more: object) -> dict[str, object]:
    """Flag values as settings overrides (None: the flag was not given)."""
    return {"url": url, "target": target, "points": points, "start": start, "end": end, "auth": auth,
            "progress": progress, **more}


def _progress_for(settings: PiflowSettings) -> Progress:
    from piflow.progress import make_progress

    return make_progress(settings.progress)


def check_writable_target(target: str, *, create: bool = True) -> None:
    """A ConfigError naming ``target`` when a local target folder cannot be written (read-only, no permission,
    a path where no folder can be made, such as under /proc), before a job reads PI for nothing and delta-rs
    fails half-way (with panics of its worker threads on stderr). The folder is created, as the job would; a
    probe file is made in it and removed. Object stores are left to the sink, which translates their errors."""
    import os
    import tempfile
    from urllib.parse import unquote, urlsplit

    from piflow.errors import ConfigError

    if "://" in target and not target.lower().startswith("file://"):
        return
    folder = Path(unquote(urlsplit(target).path) if "://" in target else target).expanduser()
    why = "choose a folder this user can write to, e.g. ./lake, or fix its permissions"
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            return
        fd, probe = tempfile.mkstemp(prefix=".piflow-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        tables = sorted(p for p in folder.iterdir() if (p / "_delta_log").is_dir())
    except OSError as exc:
        raise ConfigError("target", f"cannot write to {target} ({exc.strerror or exc}); {why}") from None
    for table in tables:
        if not (os.access(table, os.W_OK) and os.access(table / "_delta_log", os.W_OK)):
            raise ConfigError("target", f"the table {table.name} in {target} is read-only; {why}")


def exit_for(result: object) -> None:
    """Exit 1 for a run that ended ``failed``, 3 for ``partial`` (some points could not be read: a script
    must notice), nothing for ``ok``. A job that fails raises instead, after recording its run as failed."""
    status = str(getattr(result, "status", "")).lower()
    if status == "failed":
        raise typer.Exit(EXIT_ERROR)
    if status == "partial":
        raise typer.Exit(EXIT_PARTIAL)


def _run_async_job(module: str, function: str, config: Path | None, overrides: dict[str, object],
                   debug: bool, **job_kwargs: Any) -> None:
    """The shape of every data command: settings, job(settings, progress, ...), result table, exit code."""
    with _errors_handled(debug):
        settings = _setup(config, overrides, debug)
        settings.require_url()
        job = _job_function(module, function)
        check_writable_target(settings.target)
        progress = _progress_for(settings)
        try:
            result = run_until_signalled(job(settings, progress, **job_kwargs))
        finally:
            progress.close()
        _print_result(result)
        exit_for(result)


def result_rows(result: object) -> list[tuple[str, str]]:
    """A RunResult as (field, text) rows: the fields people read, in a stable order."""
    return [(f, _fmt(getattr(result, f))) for f in RESULT_FIELDS if hasattr(result, f)]


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) if value else "-"
    return "-" if value is None or value == "" else str(value)


def _print_result(result: object) -> None:
    """The end-of-command summary of a job run."""
    table = Table(title=f"{getattr(result, 'job', 'run')} run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for field, text in result_rows(result):
        table.add_row(field, text)
    _stdout().print(table)


def _as_row(item: object) -> dict[str, object] | None:
    if isinstance(item, dict):
        return {str(k): v for k, v in item.items()}
    if hasattr(item, "run_id"):
        return dict(result_rows(item))
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return None


def summary_tables(summary: dict[str, object]) -> list[Table]:
    """A job's summary dict as tables: scalars in one key/value table, each list of records in its own."""
    pairs = Table(show_header=False)
    pairs.add_column(style="bold")
    pairs.add_column()
    tables = [pairs]
    for key, value in summary.items():
        rows = [_as_row(v) for v in value] if isinstance(value, list) and value else None
        if rows and all(r is not None for r in rows):
            tables.append(records_table(key, [r for r in rows if r is not None]))
        else:
            pairs.add_row(key, _fmt(value))
    return tables if pairs.row_count else tables[1:]


def records_table(title: str, rows: list[dict[str, object]]) -> Table:
    """One row per record, columns in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    return table


# --- option checks (click callbacks: a bad value is a usage error naming the option) ------------------------


def _interval(value: str | None, *, positive: bool) -> str | None:
    from piflow.pitime import interval_text, parse_interval

    if value is None:
        return None
    try:
        seconds = parse_interval(value).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if positive and seconds <= 0:
        raise typer.BadParameter(f"must be longer than zero, got {value!r} (e.g. 5s)")
    return interval_text(value)  # "2" -> "2s": the jobs pass some intervals to PI, which wants a unit


def positive_interval(value: str | None) -> str | None:
    """An interval such as ``5s`` or ``2`` (seconds), longer than zero."""
    return _interval(value, positive=True)


def interval(value: str | None) -> str | None:
    """An interval such as ``1h`` or ``3600`` (seconds), zero allowed."""
    return _interval(value, positive=False)


def folder_path(value: Path | None) -> Path | None:
    """A folder to write into: neither a file nor a path through one."""
    from piflow.config import file_in_the_way

    if value is None:
        return None
    blocker = file_in_the_way(value.expanduser())
    if blocker is not None:
        where = "is a file" if blocker == value.expanduser() else f"goes through {blocker}, which is a file"
        raise typer.BadParameter(f"{value} {where}, not a folder (e.g. piflow_bundle)")
    return value


def sql_name(value: str | None) -> str | None:
    """A Unity Catalog catalog or schema name: one name, not a dotted path."""
    if value is not None and ("." in value or value != value.strip()):
        raise typer.BadParameter(f"{value!r} is not a single name (e.g. main, pi)")
    return value


def view_table(value: str | None) -> str | None:
    """A view's table name: plain, and not one of piflow's own tables (the job's own rule)."""
    from piflow.errors import ConfigError
    from piflow.jobs.af.views import checked_table_name

    if value is None:
        return None
    try:
        return checked_table_name(value)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message.removeprefix("setting 'table': ")) from None


def http_url(value: str | None) -> str | None:
    """An http(s) URL with a host and no credentials in it (a workspace URL)."""
    from piflow.config import split_http_url, without_userinfo
    from piflow.errors import ConfigError

    if value is None:
        return None
    if without_userinfo(value) != value:
        raise typer.BadParameter(f"must not carry a user name or password ({without_userinfo(value)!r}): the "
                                 "workspace login comes from DATABRICKS_TOKEN or a --profile")
    try:
        split_http_url("workspace", value)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message.removeprefix("setting 'workspace': ")) from None
    return value


def storage_uri(value: str | None) -> str | None:
    """An object-store URI (``s3://``, ``abfss://``, ``gs://``) for external tables."""
    if value is not None and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://\S+$", value.strip()):
        raise typer.BadParameter(f"{value!r} is not a storage URI (e.g. s3://bucket/pi)")
    return value


def uc_tables(value: str | None) -> str | None:
    """Comma-separated names of piflow tables that Unity Catalog registration knows (None: all of them)."""
    from piflow.spark.unity import TABLES as known

    if value is None:
        return None
    names = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise typer.BadParameter(f"unknown table {(unknown or [value])[0]!r}; give some of {','.join(known)}")
    return value


# --- commands ---------------------------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """AVEVA PI System (PI Web API) to Delta Lake tables."""
    if version:
        from piflow import __version__

        typer.echo(f"piflow {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=1, max=65535)] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    points: Annotated[int | None, typer.Option(help="Number of PI points per data server.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the deterministic data.")] = None,
    now: Annotated[str | None, typer.Option(help="Virtual time at start (ISO-8601).")] = None,
    frozen: Annotated[bool | None, typer.Option("--frozen", help="Do not let the virtual clock run.")] = None,
    data_servers: Annotated[int | None, typer.Option(help="Number of data servers.")] = None,
    late_share: Annotated[float | None, typer.Option(help="Share of values that arrive late.")] = None,
    edit_share: Annotated[float | None, typer.Option(help="Share of values edited afterwards.")] = None,
    max_returned_items: Annotated[int | None, typer.Option(help="MaxReturnedItemsPerCall.")] = None,
    auth: Annotated[EmulatorAuth | None, typer.Option(help="Authentication the emulator demands.")] = None,
    latency_ms: Annotated[float | None, typer.Option(help="Added latency per request (ms).")] = None,
    latency_jitter_ms: Annotated[float | None, typer.Option(help="Random extra latency (ms).")] = None,
    error_rate: Annotated[float | None, typer.Option(help="Share of requests answered 5xx.")] = None,
    rate_limit_rps: Annotated[float | None, typer.Option(help="Requests/s before 429 (0 = off).")] = None,
    drop_rate: Annotated[float | None, typer.Option(help="Share of responses dropped mid-body.")] = None,
    slow_body_ms: Annotated[float | None, typer.Option(help="Delay between body chunks (ms).")] = None,
    channel_close_every_s: Annotated[float | None, typer.Option(help="Close channels after N s.")] = None,
    profile: Annotated[str | None, typer.Option(
        help="Named server profile: how far it departs from a complete PI Web API (e.g. minimal, old, "
             "no-batch, links-paging; docs/emulator.md lists them).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML file whose [emulator] table sets defaults for these flags.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Serve the PI Web API emulator (deterministic data, PI's limits, auth modes, faults)."""
    with _errors_handled(debug):
        from piflow.config import load_emulator_settings

        flags: dict[str, object] = {
            "points": points, "seed": seed, "now": _parse_now(now), "frozen": frozen,
            "data_servers": data_servers, "late_share": late_share, "edit_share": edit_share,
            "max_returned_items": max_returned_items, "auth": auth, "latency_ms": latency_ms,
            "latency_jitter_ms": latency_jitter_ms, "error_rate": error_rate,
            "rate_limit_rps": rate_limit_rps, "drop_rate": drop_rate, "slow_body_ms": slow_body_ms,
            "channel_close_every_s": channel_close_every_s, "profile": profile,
        }
        settings = load_emulator_settings(config, flags)  # an unknown profile: one line naming the valid ones
        try:
            server = importlib.import_module("piflow.emulator.server")
        except ModuleNotFoundError as exc:
            if exc.name != "piflow.emulator.server":
                raise
            _unavailable("emulator", "the emulator server is not part of this build")
        warning = server.exposure_warning(host)
        if warning:
            typer.echo(warning, err=True)

        typer.echo(f"http://{host}:{port}/piwebapi")
        sys.stdout.flush()
        server.serve(settings, host, port, log_level=log_level)


def _parse_now(text: str | None) -> datetime | None:
    from piflow.errors import ConfigError
    from piflow.pitime import from_ticks, parse_iso_ticks

    if text is None:
        return None
    try:
        return from_ticks(parse_iso_ticks(text))
    except ValueError:
        raise ConfigError("now", f"not an ISO-8601 timestamp: {text!r}") from None


@app.command()
def demo(
    target: TargetOpt = None, config: ConfigOpt = None, progress: ProgressOpt = None, debug: DebugOpt = False,
) -> None:
    """Start an emulator, load its data into Delta tables under TARGET, and summarise them."""
    with _errors_handled(debug):
        settings = _setup(config, _common(target=target, progress=progress), debug)
        run_demo = _job_function("piflow.jobs.demo", "run_demo")
        check_writable_target(settings.target)
        mode = settings.progress

        def progress_factory(*_: object) -> Progress:
            from piflow.progress import make_progress

            return make_progress(mode)

        summary = run_demo(settings.target, progress_factory)
        out = _stdout()
        out.print(f"demo: Delta tables written to {settings.target}", soft_wrap=True)
        for table in summary_tables(summary or {}):
            out.print(table)


@app.command()
def discover(
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None, points: PointsOpt = None,
    auth: AuthOpt = None, progress: ProgressOpt = None, debug: DebugOpt = False,
) -> None:
    """Read the point catalog into pi_points (new, changed and deleted points)."""
    _run_async_job("piflow.jobs.discover", "run_discover", config,
                   _common(url, target, points, None, None, auth, progress), debug)


@app.command()
def backfill(
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None, points: PointsOpt = None,
    start: StartOpt = None, end: EndOpt = None, auth: AuthOpt = None, progress: ProgressOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Load recorded values from START to END into pi_values (resumable)."""
    _run_async_job("piflow.jobs.backfill", "run_backfill", config,
                   _common(url, target, points, start, end, auth, progress), debug)


@app.command()
def sync(
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None, points: PointsOpt = None,
    start: Annotated[str | None, typer.Option(
        help="Where points without a watermark start (PI time string, e.g. '*-1d').")] = None,
    auth: AuthOpt = None, progress: ProgressOpt = None, debug: DebugOpt = False,
) -> None:
    """Load what is new since each point's watermark, up to the server's now minus safety_lag, into pi_values
    (exactly once)."""
    _run_async_job("piflow.jobs.sync", "run_sync", config,
                   _common(url, target, points, start, None, auth, progress), debug)


@app.command()
def stream(
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None, points: PointsOpt = None,
    start: Annotated[str | None, typer.Option(
        help="Where points without a watermark start (PI time string, e.g. '*-10m').")] = None,
    auth: AuthOpt = None, progress: ProgressOpt = None,
    commit_interval: Annotated[str | None, typer.Option(
        help="How often values are committed, e.g. 5s (a bare number is seconds).",
        callback=positive_interval)] = None,
    debug: DebugOpt = False,
) -> None:
    """Stream new values through PI channels into pi_values until Ctrl-C or SIGTERM (then a final commit)."""
    with _errors_handled(debug):
        settings = _setup(config, _common(url, target, points, start, None, auth, progress,
                                          commit_interval=commit_interval), debug)
        settings.require_url()
        from piflow.jobs.stream.job import run_stream
        from piflow.jobs.stream.options import StreamOptions

        options = StreamOptions.from_settings(settings)
        check_writable_target(settings.target)
        bar = _progress_for(settings)

        async def until_signalled() -> Any:
            # SIGINT/SIGTERM stop the stream with a final commit from the moment the loop runs (run_stream's own
            # handlers would only be installed once its points are read and its client is open).
            from piflow.jobs.runs import on_stop_signals

            stop = asyncio.Event()
            with on_stop_signals(lambda _: stop.set()):
                return await run_stream(settings, bar, options=options, stop=stop)

        try:
            result = asyncio.run(until_signalled())
        finally:
            bar.close()
        _print_result(result)
        exit_for(result)


DatabaseOpt = Annotated[str | None, typer.Option(
    help="AF database name or \\\\SERVER\\Database, e.g. Plant (default: all).")]


@app.command()
def af(
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None, auth: AuthOpt = None,
    progress: ProgressOpt = None, database: DatabaseOpt = None, debug: DebugOpt = False,
) -> None:
    """Read the AF asset model into pi_af_elements and pi_af_attributes (merge, tombstones)."""
    _run_async_job("piflow.jobs.af.job", "run_af", config, _common(url, target, None, None, None, auth, progress),
                   debug, database=database)


@app.command()
def events(
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None,
    start: StartOpt = None, end: EndOpt = None, auth: AuthOpt = None, progress: ProgressOpt = None,
    database: DatabaseOpt = None,
    template: Annotated[str | None, typer.Option(help="Event frame template name, e.g. Downtime.")] = None,
    category: Annotated[str | None, typer.Option(help="Event frame category, e.g. Alarms.")] = None,
    name: Annotated[str | None, typer.Option(help="Event frame name filter, e.g. 'Batch*'.")] = None,
    referenced_element: Annotated[str | None, typer.Option(
        help="Referenced element name filter, e.g. 'PMP*'.")] = None,
    overlap: Annotated[str, typer.Option(
        help="How far each run re-reads before the last one's end, e.g. 1h (a bare number is seconds).",
        callback=interval)] = "1h",
    no_attributes: Annotated[bool, typer.Option("--no-attributes", help="Skip frame attribute values.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Read event frames into pi_event_frames and pi_event_frame_attributes (incremental, merge)."""
    _run_async_job("piflow.jobs.af.events", "run_events", config,
                   _common(url, target, None, start, end, auth, progress), debug, database=database,
                   template=template, category=category, name=name,
                   referenced_element=referenced_element, overlap=overlap, attributes=not no_attributes)


@app.command()
def view(
    template: Annotated[str, typer.Option(help="Element template whose elements become rows, e.g. Pump.")],
    config: ConfigOpt = None, url: UrlOpt = None, target: TargetOpt = None,
    start: StartOpt = None, end: EndOpt = None, auth: AuthOpt = None, progress: ProgressOpt = None,
    interval: Annotated[str, typer.Option(
        help="Interpolation interval, e.g. 1m, 1h (a bare number is seconds).", callback=positive_interval)] = "1h",
    database: DatabaseOpt = None,
    table: Annotated[str | None, typer.Option(
        help="Table name, e.g. pi_view_pump (default pi_view_<template>).", callback=view_table)] = None,
    debug: DebugOpt = False,
) -> None:
    """Write an asset view: one row per element and interval, one column per attribute of a template."""
    _run_async_job("piflow.jobs.af.views", "run_view", config, _common(url, target, None, start, end, auth, progress),
                   debug, template=template, interval=interval, database=database, table=table)


@app.command()
def status(
    config: ConfigOpt = None, target: TargetOpt = None, points: PointsOpt = None, url: UrlOpt = None,
    auth: AuthOpt = None,
    every: Annotated[bool, typer.Option("--all", help="List every selected point, not only the worst 20.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Summarise how current the points are: counts by state, lag percentiles against the PI server's clock
    (when a URL is set), the 20 worst points and each table's size."""
    with _errors_handled(debug):
        from piflow.jobs.status import server_clock, status_report

        settings = _setup(config, _common(url=url, target=target, points=points, auth=auth), debug)
        now, clock = asyncio.run(server_clock(settings))
        report = status_report(settings, now, clock, every_point=every)
        if json_output:
            typer.echo(json.dumps(report, indent=2, default=_json_default))
            return
        out = _stdout()
        if not report["points"]:
            which = "" if settings.points == "*" else f" matching {settings.points!r}"
            out.print(f"no points{which} in {settings.target} yet (run discover, then backfill or sync)",
                      soft_wrap=True)
            return
        for renderable in status_renderables(report):
            out.print(renderable)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return _fmt(value)  # the same UTC text as the tables the CLI prints
    raise TypeError(f"{type(value).__name__} is not JSON")


def status_renderables(report: dict[str, Any]) -> list[Text | Table]:
    """The report for people: one line of where and when, the states, the lag, the worst points, the tables."""
    limits = report["thresholds_s"]
    states = report["states"]
    lag = report["lag_s"]
    head = Text(f"{report['points']:,} points matching {report['filter']!r} in {report['target']}, "
                f"at {_fmt(report['now'])} by {report['clock']}")
    counts = Table(title="points by state")
    for col in ("never read", f"current (lag <= {limits['current']:,.0f} s)", "lagging",
                f"stale (lag > {limits['stale']:,.0f} s)", "error (could not be read)"):
        counts.add_column(col, justify="right")
    counts.add_row(*(f"{states[s]:,}" for s in ("never_read", "current", "lagging", "stale", "error")))
    lags = Text("lag of the points read: " + ("none read yet" if lag["max"] is None else
                ", ".join(f"{k} {v:,.1f} s" for k, v in lag.items())))
    if "all" in report:
        points = status_table(report["all"], f"{len(report['all']):,} points")
    else:  # names are enough to find a point; --all and --json give the WebIDs too
        worst = [{k: v for k, v in row.items() if k != "webid"} for row in report["worst"]]
        points = status_table(worst, f"the {len(worst):,} points furthest behind")
    tables = Table(title="tables")
    for col in ("table", "version", "files", "bytes", "rows"):
        tables.add_column(col, justify="left" if col == "table" else "right")
    for t in report["tables"]:
        tables.add_row(*(_fmt(t[c]) for c in ("table", "version", "files", "bytes", "rows")))
    return [head, counts, lags, points, tables]


def status_table(rows: list[dict[str, object]], title: str) -> Table:
    """Watermarks and lag, one row per point, columns in the order the rows give them."""
    table = Table(title=title)
    columns = list(rows[0]) if rows else ["webid", "name", "watermark", "lag_s"]
    for col in columns:
        table.add_column(col, justify="right" if col == "lag_s" else "left")
    for row in rows:
        table.add_row(*(_fmt_lag(row.get(c)) if c == "lag_s" else _fmt(row.get(c)) for c in columns))
    return table


def _fmt_lag(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, int | float) else _fmt(value)


@app.command()
def optimize(config: ConfigOpt = None, target: TargetOpt = None, debug: DebugOpt = False) -> None:
    """Compact the Delta tables under TARGET and vacuum old files."""
    with _errors_handled(debug):
        settings = _setup(config, _common(target=target), debug)
        run_optimize = _job_function("piflow.jobs.optimize", "run_optimize")
        check_writable_target(settings.target, create=False)
        summary: dict[str, object] = run_optimize(settings)
        out = _stdout()
        if not summary:
            out.print(f"no Delta tables in {settings.target}: nothing to optimize", soft_wrap=True)
            return
        out.print(optimize_table(summary, settings.target))


def optimize_table(summary: dict[str, object], target: str) -> Table:
    """Per table: files compacted, bytes before and after, files vacuumed (delta-rs metric names)."""
    table = Table(title=f"optimize {target}", title_justify="left")
    for col in ("table", "files removed", "files added", "bytes removed", "bytes added", "vacuumed files"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, stats in summary.items():
        m = stats if isinstance(stats, dict) else {}
        removed, added = m.get("filesRemoved"), m.get("filesAdded")
        table.add_row(
            name, _fmt(m.get("numFilesRemoved")), _fmt(m.get("numFilesAdded")),
            _fmt(_total_size(removed)), _fmt(_total_size(added)), _fmt(m.get("vacuumed_files")),
        )
    return table


def _total_size(files: object) -> object:
    """delta-rs reports file stats as a dict or as its JSON text."""
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except ValueError:
            return None
    return files.get("totalSize") if isinstance(files, dict) else None


@app.command()
def doctor(
    config: ConfigOpt = None, url: UrlOpt = None, points: PointsOpt = None, auth: AuthOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Check the connection to PI step by step: settings, network, TLS, login, version, features, clock, data.
    Exit code 1 when a step failed (warnings allowed)."""
    with _errors_handled(debug):
        from piflow.doctor import report_json, report_lines, report_table, run_doctor, summary_line

        report = asyncio.run(run_doctor(lambda: _setup(config, _common(url=url, points=points, auth=auth))))
        out = _stdout()
        if json_output:
            typer.echo(json.dumps(report_json(report), indent=2))
        elif out.is_terminal:
            out.print(report_table(report))
            out.print(Text(summary_line(report)))
        else:
            for line in report_lines(report):
                out.print(Text(line), soft_wrap=True)
        if report.failed:
            raise typer.Exit(EXIT_ERROR)


# --- Databricks: bundle and Unity Catalog (piflow.spark; databricks-sdk only for `uc register`) -------------

BundleMode = Literal["batch", "continuous"]


@app.command()
def bundle(
    shards: Annotated[int, typer.Option("--shards", min=1, help="Number of jobs the points are spread over.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder to write the bundle into, e.g. piflow_bundle.", callback=folder_path)] = Path(
        "piflow_bundle"),
    mode: Annotated[BundleMode, typer.Option(help="batch: scheduled AvailableNow runs; continuous: always on.")] = (
        "batch"),
    catalog: Annotated[str, typer.Option(
        help="Unity Catalog catalog of the tables, e.g. main.", callback=sql_name)] = "main",
    schema: Annotated[str, typer.Option(help="Schema of the tables, e.g. pi.", callback=sql_name)] = "pi",
    spark_version: Annotated[str | None, typer.Option(
        help="Databricks Runtime of the job clusters (Apache Spark 4.2 or later), e.g. 17.3.x-scala2.13.")] = None,
    secret_scope: Annotated[str, typer.Option(
        help="Secret scope holding the PI credentials, e.g. piflow.")] = "piflow",  # noqa: S107
    force: Annotated[bool, typer.Option("--force", help="Overwrite generated files.")] = False,
    config: ConfigOpt = None, url: UrlOpt = None, points: PointsOpt = None, start: StartOpt = None,
    auth: AuthOpt = None, debug: DebugOpt = False,
) -> None:
    """Generate a Databricks Asset Bundle: SHARDS jobs each streaming a disjoint shard of the points into
    pi_values, plus one job for points, AF and event frames."""
    with _errors_handled(debug):
        settings = _setup(config, _common(url, None, points, start, None, auth, None), debug)
        from piflow.spark.bundle import config_from_settings, write_bundle

        cfg = config_from_settings(settings, shards=shards, mode=mode, catalog=catalog, schema=schema,
                                   spark_version=spark_version, secret_scope=secret_scope)
        for path in write_bundle(cfg, output, overwrite=force):
            _stdout().print(str(path), soft_wrap=True)


uc_app = typer.Typer(name="uc", help="Unity Catalog.", no_args_is_help=True, cls=CheckedGroup)
app.add_typer(uc_app)


@uc_app.command("register")
def uc_register(
    catalog: Annotated[str, typer.Option(
        help="Catalog to register the tables in, e.g. main.", callback=sql_name)],
    schema: Annotated[str, typer.Option(
        help="Schema, e.g. pi (created if missing, unless --no-create-schema).", callback=sql_name)],
    warehouse_id: Annotated[str, typer.Option(help="SQL warehouse that runs the DDL, e.g. 1234567890abcdef.")],
    location: Annotated[str | None, typer.Option(
        help="Root of external tables (<location>/<table>), e.g. s3://bucket/pi; omit for managed tables.",
        callback=storage_uri)] = None,
    create_schema: Annotated[bool, typer.Option("--create-schema/--no-create-schema")] = True,
    tables: Annotated[str | None, typer.Option(
        help="Comma-separated tables, e.g. pi_values,pi_points (default: every piflow table).",
        callback=uc_tables)] = None,
    host: Annotated[str | None, typer.Option(
        help="Workspace URL, e.g. https://adb-1234.5.azuredatabricks.net (default: DATABRICKS_HOST / profile).",
        callback=http_url)] = None,
    profile: Annotated[str | None, typer.Option(help="Databricks config profile, e.g. DEFAULT.")] = None,
    config: ConfigOpt = None, url: UrlOpt = None, points: PointsOpt = None, debug: DebugOpt = False,
) -> None:
    """Register piflow's tables in Unity Catalog with comments from the contract and source tags."""
    with _errors_handled(debug):
        settings = _setup(config, _common(url, None, points, None, None, None, None), debug)
        from piflow.spark.unity import register_from_settings

        try:
            importlib.import_module("databricks.sdk")
        except ModuleNotFoundError as exc:
            _unavailable("uc register", f"needs the databricks extra (pip install 'piflow[databricks]'): {exc}")
        result = register_from_settings(
            settings, catalog=catalog, schema=schema, warehouse_id=warehouse_id, location=location,
            create_schema=create_schema, host=host, profile=profile,
            tables=None if tables is None else [t.strip() for t in tables.split(",") if t.strip()])
        out = _stdout()
        if result.schema_created:
            out.print(f"created schema {catalog}.{schema}", soft_wrap=True)
        for name in result.tables:
            out.print(f"registered {name}", soft_wrap=True)


def main() -> None:
    """Console-script entry point (``piflow``) and ``python -m piflow``."""
    app(prog_name="piflow")
