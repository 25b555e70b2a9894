"""The public API: what ``piflow`` exports is a deliberate list, every name resolves, importing it stays light,
and the version has one source (``piflow.__version__``, which the build reads)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import piflow

# Changing this list changes the public API: the README and CHANGELOG must say so.
PUBLIC = {
    "PiflowSettings", "load_settings", "run_discover", "run_backfill", "run_sync", "run_stream", "StreamOptions",
    "run_af", "run_events", "run_view", "run_optimize", "RunResult", "PiClient", "BasicAuth", "BearerAuth",
    "KerberosAuth", "OidcClientCredentials", "RetryPolicy", "__version__",
    "PiflowError", "ConfigError", "PiApiError", "TransientError", "RateLimitedError", "ServerBusyError",
    "NetworkError", "UnreachableError", "BadResponseError", "AuthError", "NotFoundError", "TooManyItemsError",
    "BadRequestError", "ConflictError", "DecodeError", "SinkError", "WriteConflictError", "StateError",
}


def test_the_exports_are_the_public_list() -> None:
    assert set(piflow.__all__) == PUBLIC
    assert len(piflow.__all__) == len(PUBLIC)


def test_every_export_resolves_to_what_its_module_defines() -> None:
    import piflow.jobs.backfill
    import piflow.jobs.runs

    for name in piflow.__all__:
        assert getattr(piflow, name) is not None, name
    assert piflow.run_backfill is piflow.jobs.backfill.run_backfill
    assert piflow.RunResult is piflow.jobs.runs.RunResult


def test_errors_are_one_tree() -> None:
    for name in piflow.__all__:
        value = getattr(piflow, name)
        if isinstance(value, type) and name.endswith("Error"):
            assert issubclass(value, piflow.PiflowError), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        piflow.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_import_piflow_does_not_load_the_jobs_or_the_http_and_delta_libraries() -> None:
    code = ("import sys, piflow\n"
            "heavy = ('piflow.jobs', 'piflow.client', 'deltalake', 'httpx2', 'pyarrow')\n"
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_version_has_one_source() -> None:
    # pyproject.toml names no version of its own: the build reads piflow.__version__, so the installed
    # distribution and the module agree.
    from importlib import metadata

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/piflow/__init__.py"
    assert metadata.version("piflow") == piflow.__version__


def test_every_job_the_cli_names_resolves() -> None:
    # The CLI imports each job by its dotted name when the command runs; a module move must not leave a name
    # that only fails when a user runs that command.
    import ast
    import importlib

    import piflow.cli

    tree = ast.parse(Path(piflow.cli.__file__).read_text())
    named = [(c.args[0].value, c.args[1].value) for c in ast.walk(tree)
             if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
             and c.func.id in {"_job_function", "_run_async_job"}
             and len(c.args) >= 2 and all(isinstance(a, ast.Constant) for a in c.args[:2])]
    assert len(named) >= 8  # demo, discover, backfill, sync, af, events, view, optimize
    for module, name in named:
        assert callable(getattr(importlib.import_module(module), name)), (module, name)
