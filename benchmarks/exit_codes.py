"""Exit codes over many runs: ``piflow status`` and the README's read-back snippet, N times each (default 200).

Monitoring reads exit codes, so a command that prints the right answer and then aborts at interpreter exit
("terminate called without an active exception", exit 134) pages someone for nothing. The baseline is the
plain ``DeltaTable(path).to_pyarrow_table()`` read, which scans through deltalake's Python filesystem handler
and aborts now and then on this machine. Prints counts; asserts nothing.

    python benchmarks/exit_codes.py [--runs 200]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _support import emulator_cmd, free_port, serving

ROOT = Path(__file__).resolve().parent.parent
NAIVE = 'from deltalake import DeltaTable\nprint(DeltaTable("lake/pi_values").to_pyarrow_table().num_rows)\n'


def readme_snippet() -> str:
    """The README's read-back example, as a user would paste it."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index("Reading it back"):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "the README has no read-back snippet"
    return match.group(1)


def loop(name: str, cmd: list[str], runs: int, cwd: Path) -> None:
    codes: collections.Counter[int] = collections.Counter()
    t0 = time.monotonic()
    last_err = ""
    for _ in range(runs):
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        codes[done.returncode] += 1
        if done.returncode:
            last_err = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    bad = runs - codes[0]
    print(f"{name:<34} {runs:>5} runs  {bad:>4} non-zero exit codes  {dict(codes)}  "
          f"{(time.monotonic() - t0) / runs:.2f} s/run{'  last: ' + last_err if last_err else ''}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        port = free_port()
        with serving(emulator_cmd(port, 300, "--frozen", seed=11), port) as url:
            load = [sys.executable, "-m", "piflow", "backfill", "--url", url, "--target", "lake",
                    "--start", "2025-12-29T00:00:00Z", "--end", "2026-01-01T00:00:00Z", "--progress", "never"]
            subprocess.run(load, cwd=cwd, check=True, capture_output=True)
        (cwd / "readme_snippet.py").write_text(readme_snippet())
        (cwd / "naive.py").write_text(NAIVE)
        print(f"300 points x 3 days in {cwd}/lake; {args.runs} runs of each command")
        loop("piflow status", [sys.executable, "-m", "piflow", "status", "--target", "lake"], args.runs, cwd)
        loop("README read-back snippet", [sys.executable, "readme_snippet.py"], args.runs, cwd)
        loop("baseline: to_pyarrow_table()", [sys.executable, "naive.py"], args.runs, cwd)


if __name__ == "__main__":
    main()
