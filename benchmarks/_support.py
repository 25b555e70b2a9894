"""What every benchmark needs: a free loopback port and an emulator process that is answering."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx2

NOW_ISO = "2026-01-01T00:00:00Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_child(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``python script --child SPEC`` in a new process (so its CPU and peak RSS are its own); the JSON report it
    prints last."""
    out = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def emulator_cmd(port: int, points: int, *extra: str, seed: int = 7) -> list[str]:
    """``python -m piflow emulator`` on ``port`` (the CLI a user would run)."""
    return [sys.executable, "-m", "piflow", "emulator", "--port", str(port), "--points", str(points), "--seed",
            str(seed), "--now", NOW_ISO, *extra]


@contextmanager
def serving(cmd: Sequence[str], port: int, *, timeout_s: float = 60.0, env: dict[str, str] | None = None
            ) -> Iterator[str]:
    """Start a server process, wait until its ``system/status`` answers, yield its base URL, then stop it."""
    with serving_process(cmd, port, timeout_s=timeout_s, env=env) as (url, _):
        yield url


@contextmanager
def serving_process(cmd: Sequence[str], port: int, *, timeout_s: float = 60.0, env: dict[str, str] | None = None
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`serving`, yielding the process too (for a benchmark that measures its CPU)."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}/piwebapi"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx2.get(f"{url}/system/status", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise RuntimeError(f"emulator did not start: {err}")
            time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
