"""scripts/error_paths.py counts raise statements and except handlers run, from a coverage JSON report.

The script is the measurement the coverage figure in the notes quotes, so it is tested on a package small
enough to count by hand, with a coverage report written by coverage.py itself (not a made-up JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "error_paths.py"

MODULE = '''\
def check(x):
    if x < 0:
        raise ValueError("negative")   # line 3: run
    if x > 100:
        raise OverflowError("big")     # line 5: not run
    try:
        return 10 // x
    except ZeroDivisionError:          # line 8: run
        return 0
    except TypeError as exc:           # line 10: not run
        raise ValueError("not a number") from exc   # line 11: not run
'''


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def measured(tmp_path: Path) -> tuple[Path, Path]:
    """A package `pkg` (with a sub-package `skipped` to leave out), run under coverage; returns (src, report)."""
    src = tmp_path / "src" / "pkg"
    (src / "skipped").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "mod.py").write_text(MODULE)
    (src / "skipped" / "__init__.py").write_text("def f():\n    raise RuntimeError('never counted')\n")
    (src / "unimported.py").write_text("def g():\n    raise KeyError('never run')\n")
    driver = tmp_path / "drive.py"
    driver.write_text(textwrap.dedent("""\
        import sys
        sys.path.insert(0, "src")
        from pkg.mod import check
        for x in (-1, 0):
            try:
                check(x)
            except ValueError:
                pass
    """))
    data = tmp_path / ".coverage"
    report = tmp_path / "cov.json"
    # Its own coverage process, apart from any coverage measuring this test run (whose settings it would inherit).
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data}", "--branch",
                    f"--source={tmp_path / 'src'}", str(driver)], cwd=tmp_path, env=env, check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "coverage", "json", f"--data-file={data}", "-o", str(report)],
                   cwd=tmp_path, env=env, check=True, timeout=60, capture_output=True)
    return src, report


def test_counts_raises_and_handlers_run_and_lists_the_others(tmp_path: Path) -> None:
    src, report = measured(tmp_path)
    out = run_script(str(report), "--src", str(src), "--skip", "skipped")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["raise statements     1/4     25.0%", "except handlers      1/2     50.0%"]
    assert [line.strip() for line in lines[3:]] == [
        "not run (4):",
        "src/pkg/mod.py:5  raise OverflowError(\"big\")",
        "src/pkg/mod.py:10  except TypeError",
        "src/pkg/mod.py:11  raise ValueError(\"not a number\")",
        "src/pkg/unimported.py:2  raise KeyError('never run')",
    ]
    assert out.stderr == ""


def test_fail_under_and_a_report_that_does_not_match_the_source(tmp_path: Path) -> None:
    src, report = measured(tmp_path)
    assert run_script(str(report), "--src", str(src), "--skip", "skipped", "--fail-under", "50").returncode == 1
    assert run_script(str(report), "--src", str(src), "--skip", "skipped", "--fail-under", "25").returncode == 0
    # Lines moved after the measurement: the figures would be wrong, and the script says so.
    (src / "mod.py").write_text("\n\n" + MODULE)
    out = run_script(str(report), "--src", str(src), "--skip", "skipped")
    assert "warning: the report does not match the source of src/pkg/mod.py" in out.stderr
    # A missing or malformed report is one line, not a traceback.
    out = run_script(str(tmp_path / "nope.json"), "--src", str(src))
    assert out.returncode == 2
    assert out.stderr.startswith("error: cannot read the coverage report ")
    (tmp_path / "other.json").write_text(json.dumps({"totals": {}}))
    out = run_script(str(tmp_path / "other.json"), "--src", str(src))
    assert out.returncode == 1
    assert "not a coverage JSON report" in out.stderr
