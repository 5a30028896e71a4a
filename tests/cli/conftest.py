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
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 240,
    ignore_sigint: bool = False,
) -> subprocess.CompletedProcess:
    """`python -m sigprof ARGS` in a child process, as a person runs it (from
    a terminal: SIGINT at its default, whatever the test runner inherited).
    Still running after `timeout` (under pytest's own 300 s): the test fails
    with what each process of its group was doing, then they are killed."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    sigint = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    # preexec_fn only sets a signal's disposition (async-signal-safe)
    with subprocess.Popen(
        [sys.executable, "-m", "sigprof", *args],
        cwd=str(cwd), env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),  # noqa: PLW1509
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            report = process_group_report(process.pid)
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"sigprof {' '.join(args)} still running after {timeout} s; its processes "
                        f"(thread, name, state, kernel wait):\n{report}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def process_group_report(group: int) -> str:
    """Each process of the group and where its threads wait, from /proc."""
    lines = []
    for pid in sorted(int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            if os.getpgid(pid) != group:
                continue
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"{pid}: {command}")
            for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                lines.append(f"    {task.name} {(task / 'comm').read_text().strip()} {state} "
                             f"{(task / 'wchan').read_text()}")
        except OSError:  # ended meanwhile
            continue
    return "\n".join(lines)


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
