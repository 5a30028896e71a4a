"""Pre-fork servers: real gunicorn (sync and gthread workers, with and without
--preload) and uWSGI's master + processes model, serving real HTTP requests,
sending to the real receiver.

With --preload the app module, and so sigprof.init(), runs in the master
before it forks the workers. The master must not be left sampling (no
sigprof thread in it: the sampler names its threads "sigprof-ticker" and
"sigprof-collect"), and every worker must profile its own requests, with
profiles that name the worker's pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.sentry.generations import requires_sdk2
from tests.sentry.judge import check_chunk, check_profile_v1, functions_in
from tests.sentry.receiver import Receiver
from tests.uwsgi_stats import wait_until_uwsgi_workers_idle

pytest.importorskip("gunicorn")
UWSGI = Path(sys.executable).parent / "uwsgi"

APP = textwrap.dedent(
    """
    import json, os, sys, time
    import sentry_sdk
    from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware
    from sentry_sdk.profiler.continuous_profiler import get_profiler_id
    import sigprof

    MODE = os.environ["PREFORK_MODE"]
    options = {"dsn": os.environ["PREFORK_DSN"], "traces_sample_rate": 1.0}
    if MODE == "transaction":
        options["profiles_sample_rate"] = 1.0
    else:
        options["profile_session_sample_rate"] = 1.0
        options["profile_lifecycle"] = MODE  # "trace" or "manual"
    sigprof.init(**options)
    if MODE == "manual":
        sentry_sdk.profiler.start_profiler()

    def sampler_threads():
        names = []
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as comm:
                    names.append(comm.read().strip())
            except OSError:
                pass
        return sorted(name for name in names if name.startswith("sigprof-"))

    def prefork_request_work(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(300))

    def app(environ, start_response):
        sentry_sdk.get_current_scope().set_transaction_name(f"pid {os.getpid()}")
        prefork_request_work(0.3)
        body = json.dumps({
            "pid": os.getpid(),
            "sampler_threads": sampler_threads(),
            "profiler_id": get_profiler_id(),
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    application = SentryWsgiMiddleware(app)
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _sampler_threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
        except OSError:  # the thread exited meanwhile
            pass
    return sorted(name for name in names if name.startswith("sigprof-"))


def _get(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _serve(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    server = subprocess.Popen(  # its own process group: a hung worker is killed with it
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise AssertionError(f"server exited: {server.stdout.read() if server.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise AssertionError("the server never listened") from None
            time.sleep(0.1)


def _stop(server: subprocess.Popen[str]) -> tuple[str, bool]:
    """SIGTERM; the output, and whether the server stopped within 60 s (if
    not, its whole process group is killed: workers hold the output pipe, and
    the output ends with what each of its threads was doing)."""
    server.send_signal(signal.SIGTERM)
    try:
        output, _ = server.communicate(timeout=60)
        return output, True
    except subprocess.TimeoutExpired:
        stuck = _threads_in_group(server.pid)
        os.killpg(server.pid, signal.SIGKILL)
        output, _ = server.communicate()
        return f"{output}\n--- still running after SIGTERM ---\n{stuck}", False


def _threads_in_group(group: int) -> str:
    """pid, thread name, state, kernel wait channel and system call of every
    thread of every process in the process group."""
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                task = Path(f"/proc/{pid}/task/{tid}")
                fields = [(task / name).read_text().strip() for name in ("comm", "wchan", "syscall")]
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                lines.append(f"pid {pid} tid {tid} {fields[0]!r} {state} wchan={fields[1]} "
                             f"syscall={fields[2]}")
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return "\n".join(lines)


def _requests(port: int, count: int) -> list[dict[str, Any]]:
    # Two at a time, so that both workers serve some.
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: _get(port), range(count)))


def _check_profiles(
    receiver: Receiver, mode: str, answers: list[dict[str, Any]], master: int
) -> None:
    worker_pids = {answer["pid"] for answer in answers}
    assert master not in worker_pids
    for answer in answers:
        # the worker samples while it serves (a transaction is open)...
        assert answer["sampler_threads"] == ["sigprof-collect", "sigprof-ticker"], answer
    if mode == "transaction":
        receiver.wait_for(
            lambda r: {p["transactions"][0]["name"] for p in r.payloads("profile")}
            >= {f"pid {pid}" for pid in worker_pids},
            timeout=60,
        )
        for payload in receiver.payloads("profile"):
            check_profile_v1(payload)
            thread = str(payload["transactions"][0]["active_thread_id"])
            assert "prefork_request_work" in functions_in(payload["profile"], thread)
        return
    # continuous: each worker has a session of its own, whose chunks arrive
    by_pid = {answer["pid"]: answer["profiler_id"] for answer in answers}
    assert None not in by_pid.values(), by_pid
    assert len(set(by_pid.values())) == len(by_pid), "workers share a profiler_id"
    receiver.wait_for(
        lambda r: {c["profiler_id"] for c in r.payloads("profile_chunk")} >= set(by_pid.values()),
        timeout=90,
    )
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
    for profiler_id in by_pid.values():
        shown = set()
        for chunk in receiver.payloads("profile_chunk"):
            if chunk["profiler_id"] == profiler_id:
                profile = chunk["profile"]
                shown.update(profile["frames"][i]["function"] for s in profile["stacks"] for i in s)
        assert "prefork_request_work" in shown


# Every pair of (mode, preload, worker class) meets in one server or another:
# six servers, not all twelve (2.4 s each, on seven interpreters).
GUNICORN_CASES = [
    pytest.param("transaction", True, "sync", marks=requires_sdk2),
    pytest.param("transaction", False, "gthread", marks=requires_sdk2),
    ("trace", True, "gthread"),
    ("trace", False, "sync"),
    ("manual", True, "sync"),
    ("manual", False, "gthread"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("mode", "preload", "worker_class"), GUNICORN_CASES)
def test_gunicorn(
    receiver: Receiver, tmp_path: Path, mode: str, preload: bool, worker_class: str
) -> None:
    (tmp_path / "prefork_app.py").write_text(APP)
    port = _free_port()
    env = {**os.environ, "PREFORK_MODE": mode, "PREFORK_DSN": receiver.dsn}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
               "--worker-class", worker_class, "--graceful-timeout", "20"]
    if worker_class == "gthread":
        command += ["--threads", "2"]
    if preload:
        command.append("--preload")
    server = _serve([*command, "prefork_app:application"], port, env)
    try:
        answers = _requests(port, 8)
        master_threads = _sampler_threads(server.pid)
    finally:
        output, stopped = _stop(server)
    assert stopped and server.returncode == 0, output
    _check_profiles(receiver, mode, answers, server.pid)
    if preload and mode == "manual":
        # start_profiler() ran in the master, so it samples there too, as
        # asked; its workers each go on with a session of their own.
        assert master_threads == ["sigprof-collect", "sigprof-ticker"]
    else:
        assert master_threads == [], output
    assert "Traceback" not in output, output


@pytest.mark.timeout(300)
@pytest.mark.skipif(not UWSGI.exists(), reason="uwsgi is not installed (it builds from source)")
@pytest.mark.parametrize("stop", ["graceful", "die-on-term"])
@pytest.mark.parametrize("mode", [pytest.param("transaction", marks=requires_sdk2), "manual"])
def test_uwsgi_master_processes(receiver: Receiver, tmp_path: Path, mode: str, stop: str) -> None:
    """uWSGI's default: the master imports the app, then forks the processes
    (no lazy-apps) from C; the app's threads need --enable-threads. A master
    that runs threads (a manual session's sampler, sentry-sdk's own threads,
    any thread) also needs --py-call-uwsgi-fork-hooks, as sentry-sdk warns:
    without Python's fork hooks uWSGI forks with the GIL released, one of those
    threads can hold it at that instant, and the new worker waits for it
    forever as it starts (uwsgi_python_master_fixup); the master then waits
    for that worker at shutdown. --py-call-osafterfork comes too late for that
    wait: seen 1 run in 15 with it, 0 in 45 with the hooks.

    SIGTERM stops the server gracefully (workers finish their requests first)
    or, with --die-on-term, at once: then uWSGI skips Python's atexit in a
    worker still busy with a request, and its last transaction and unsent
    chunk are lost (1 run in 2 here with sentry-sdk 2.22). That case waits
    until every worker is idle before the stop."""
    (tmp_path / "prefork_app.py").write_text(APP)
    port = stats_port = _free_port()
    while stats_port == port:  # both probes are closed: the OS may hand one out twice
        stats_port = _free_port()
    env = {**os.environ, "PREFORK_MODE": mode, "PREFORK_DSN": receiver.dsn}
    command = [
        str(UWSGI), "--master", "--processes", "2", "--enable-threads",
        "--http-socket", f"127.0.0.1:{port}", "--chdir", str(tmp_path),
        "--module", "prefork_app:application", "--home", sys.prefix,
        "--py-call-uwsgi-fork-hooks", "--stats", f"127.0.0.1:{stats_port}",
    ]
    if stop == "graceful":
        command += ["--hook-master-start", "unix_signal:15 gracefully_kill_them_all"]
    else:
        command.append("--die-on-term")
    server = _serve(command, port, env)
    try:
        answers = _requests(port, 8)
        master_threads = _sampler_threads(server.pid)
        if stop == "die-on-term":
            wait_until_uwsgi_workers_idle(stats_port, requests=8)
    finally:
        output, stopped = _stop(server)
    assert stopped and server.returncode == 0, output
    _check_profiles(receiver, mode, answers, server.pid)
    if mode == "manual":
        assert master_threads == ["sigprof-collect", "sigprof-ticker"]
    else:
        assert master_threads == [], output
    assert "Traceback" not in output, output
