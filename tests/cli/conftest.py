from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sigprof

REPO = Path(__file__).resolve().parents[2]

needs_native = pytest.mark.skipif(
    sigprof.native_unavailable_reason() is not None,
    reason=f"native sampler unavailable: {sigprof.native_unavailable_reason()}",
)


def sigprof_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 300,
    ignore_sigint: bool = False,
) -> subprocess.CompletedProcess:
    """`python -m sigprof ARGS` in a child process, as a person runs it (from
    a terminal: SIGINT at its default, whatever the test runner inherited)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    sigint = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    return subprocess.run(
        [sys.executable, "-m", "sigprof", *args],
        cwd=str(cwd), env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


# a program that burns CPU in a function we can look for
SPIN = """
import time

def hot_function(seconds):
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(i * i for i in range(300))
    return total
"""
