"""`sigprof run --subprocesses`: every Python child in the one output, each
process's threads named `PID PROGRAM: THREAD`; without the flag, one line
naming it; exec."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.uwsgi_stats import wait_until_uwsgi_workers_idle

from .conftest import needs_native, sigprof_cli, write_script

FREQUENCY = 101
CHILD_SECONDS = 1.0  # of CPU time
PARENT_SECONDS = 0.5

PROGRAM = """
import concurrent.futures, multiprocessing, os, subprocess, sys, time

def spin(seconds):
    end = time.thread_time() + seconds  # CPU time: what the cpu clock owes samples for
    total = 0
    while time.thread_time() < end:
        total += sum(i * i for i in range(300))
    return total

def child_work(seconds):
    with open(os.path.join(sys.argv[2], "pid-%d" % os.getpid()), "a") as record:
        record.write("%f\\n" % seconds)
    return spin(seconds)

def parent_work(seconds):
    return spin(seconds)

if __name__ == "__main__":
    how, seconds = sys.argv[1], CHILD_SECONDS
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:
            child_work(seconds)
            os._exit(0)
        os.waitpid(pid, 0)
    elif how.startswith("subprocess"):
        # preexec_fn runs the fork hooks in a child about to exec: not followed as a fork
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "child.py"), sys.argv[2]],
                       check=True, preexec_fn=(lambda: None) if how == "subprocess-preexec" else None)
    elif how == "pool-executor":
        with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(child_work, [seconds / 2, seconds / 2]))
    elif how.startswith("pool-"):
        # leaving the block terminates the pool: SIGTERM to workers still waiting for tasks
        with multiprocessing.get_context(how[len("pool-"):]).Pool(2) as pool:
            pool.map(child_work, [seconds / 2, seconds / 2], chunksize=1)
    else:
        process = multiprocessing.get_context(how).Process(target=child_work, args=(seconds,))
        process.start()
        process.join()
        assert process.exitcode == 0
    parent_work(PARENT_SECONDS)
""".replace("CHILD_SECONDS", repr(CHILD_SECONDS)).replace("PARENT_SECONDS", repr(PARENT_SECONDS))

CHILD = """
import os, sys
sys.argv.insert(1, "subprocess")  # where program.py's child_work finds its records folder
sys.path.insert(0, os.path.dirname(__file__))
from program import child_work
child_work(CHILD_SECONDS)
""".replace("CHILD_SECONDS", repr(CHILD_SECONDS))


def _threads(path: Path) -> dict[str, Counter[str]]:
    """speedscope output: for each thread name, samples by function seen in them."""
    document = json.loads(path.read_text())
    frames = document["shared"]["frames"]
    threads: dict[str, Counter[str]] = {}
    for profile in document["profiles"]:
        name = profile["name"].rsplit(" (", 1)[0]
        functions = threads.setdefault(name, Counter())
        for stack in profile["samples"]:
            for function in {frames[i]["name"] for i in stack}:
                functions[function] += 1
    return threads


def _children_seconds(records: Path) -> dict[int, float]:
    return {
        int(path.name.split("-")[1]): sum(float(line) for line in path.read_text().split())
        for path in records.glob("pid-*")
    }


def _program(tmp_path: Path) -> Path:
    write_script(tmp_path / "child.py", CHILD)
    return write_script(tmp_path / "program.py", PROGRAM)


START_METHODS = [
    "os.fork", "fork", "forkserver", "spawn", "subprocess", "subprocess-preexec", "pool-executor",
    "pool-fork", "pool-forkserver", "pool-spawn",
]


@needs_native
@pytest.mark.parametrize("how", START_METHODS)
def test_every_python_child_is_in_the_one_output(tmp_path: Path, how: str) -> None:
    _program(tmp_path)
    records, scratch = tmp_path / "records", tmp_path / "scratch"
    records.mkdir()
    scratch.mkdir()
    result = sigprof_cli("run", "--subprocesses", "--clock", "cpu", "-f", str(FREQUENCY),
                         "--format", "speedscope", "-o", "out.json", "program.py", how, str(records),
                         cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    threads = _threads(tmp_path / "out.json")
    children = _children_seconds(records)
    assert children and all(seconds > 0 for seconds in children.values())
    program = "child.py" if how.startswith("subprocess") else "program.py"
    parent = [name for name, functions in threads.items() if functions["parent_work"]]
    assert len(parent) == 1 and re.fullmatch(r"\d+ program\.py: MainThread", parent[0]), threads.keys()
    parent_pid = int(parent[0].split()[0])
    parent_share = threads[parent[0]]["parent_work"] / (PARENT_SECONDS * FREQUENCY)
    for pid, seconds in children.items():
        assert pid != parent_pid
        name = f"{pid} {program}: MainThread"
        assert name in threads, (name, sorted(threads))
        assert threads[name]["parent_work"] == 0  # no sample of the parent's work in a child
        # in proportion: each child got the share of its CPU time's samples the parent got
        # of its own (both lose alike to the cpu clock's ticks under load)
        child_share = threads[name]["child_work"] / (seconds * FREQUENCY)
        assert 0.5 < child_share / parent_share < 2, (name, child_share, parent_share)
        assert child_share > 0.4, (name, child_share)
    assert "--subprocesses" not in result.stderr  # no hint: they were followed
    assert not list(scratch.iterdir())  # the run's directory is gone


@needs_native
@pytest.mark.parametrize("how", ["os.fork", "spawn", "subprocess"])
def test_without_the_flag_children_are_named_in_one_line(tmp_path: Path, how: str) -> None:
    _program(tmp_path)
    records = tmp_path / "records"
    records.mkdir()
    result = sigprof_cli("run", "--format", "speedscope", "-o", "out.json", "program.py", how, str(records),
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    threads = _threads(tmp_path / "out.json")
    assert sum(functions["child_work"] for functions in threads.values()) == 0
    assert sum(functions["parent_work"] for functions in threads.values()) > 0
    # spawn starts multiprocessing's resource tracker too: a Python child as well
    hints = [line for line in result.stderr.splitlines() if "--subprocesses" in line]
    assert len(hints) == 1, result.stderr
    assert re.fullmatch(r"sigprof: \d+ child process(es)? ran Python, not profiled: "
                        r"`sigprof run --subprocesses` follows them", hints[0])


@needs_native
def test_no_hint_when_no_child_ran_python(tmp_path: Path) -> None:
    write_script(tmp_path / "shell.py", "import subprocess\nsubprocess.run(['true'], check=True)\n")
    result = sigprof_cli("run", "--no-summary", "-o", "out.html", "shell.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--subprocesses" not in result.stderr


EXEC_PROGRAM = """
import os, posix, sys, time

def spin(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(i * i for i in range(300))

def before_exec():
    spin(0.5)

before_exec()
execv = {"os": os.execv, "posix": posix.execv}[sys.argv[1] if len(sys.argv) > 1 else "os"]
execv(sys.executable, [sys.executable, os.path.join(os.path.dirname(__file__), "after.py"), "3"])
"""

AFTER_EXEC = """
import sys, time

def after_exec():
    end = time.thread_time() + 0.5
    while time.thread_time() < end:
        sum(i * i for i in range(300))

after_exec()
sys.exit(int(sys.argv[1]))
"""


@needs_native
@pytest.mark.parametrize("module", ["os", "posix"])
@pytest.mark.parametrize("follow", [False, True])
def test_exec_writes_the_profile_up_to_it(tmp_path: Path, follow: bool, module: str) -> None:
    write_script(tmp_path / "execs.py", EXEC_PROGRAM)
    write_script(tmp_path / "after.py", AFTER_EXEC)
    flags = ["--subprocesses"] if follow else []
    result = sigprof_cli("run", *flags, "--clock", "cpu", "-f", str(FREQUENCY), "--format", "speedscope",
                         "-o", "out.json", "execs.py", module, cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # the exec'd program's own exit code
    assert re.search(rf"^sigprof: the program exec'd {re.escape(sys.executable)} after \d+\.\d s; "
                     "the profile up to the exec:$", result.stderr, re.MULTILINE), result.stderr
    threads = _threads(tmp_path / "out.json")
    before = sum(functions["before_exec"] for functions in threads.values())
    after = {name: functions["after_exec"] for name, functions in threads.items() if functions["after_exec"]}
    assert before >= 0.4 * 0.5 * FREQUENCY
    if follow:
        # the same process, another program: a thread of its own in the output
        (name,) = after
        assert re.fullmatch(r"\d+ after\.py: MainThread", name)
        assert after[name] >= 0.4 * 0.5 * FREQUENCY
        assert result.stderr.count("sigprof: wrote out.json") == 2
    else:
        assert not after
        assert result.stderr.count("sigprof: wrote out.json") == 1


TERMINATED_PROGRAM = """
import multiprocessing, os, sys, time

def spin_until_terminated(marker):
    open(marker, "w").close()
    while True:
        sum(i * i for i in range(300))

def child_spins(folder):
    spin_until_terminated(os.path.join(folder, "child-%d" % os.getpid()))

def parent_spins(folder):
    spin_until_terminated(os.path.join(folder, "parent"))

if __name__ == "__main__":
    multiprocessing.get_context("fork").Process(target=child_spins, args=(sys.argv[1],)).start()
    parent_spins(sys.argv[1])
"""


@needs_native
@pytest.mark.parametrize("follow", [False, True])
def test_sigterm_writes_the_profile_up_to_it(tmp_path: Path, follow: bool) -> None:
    """`timeout` and a container's stop send SIGTERM to the process group:
    the run and each followed child write what they sampled, then end by the
    signal, as the program would have."""
    write_script(tmp_path / "terminated.py", TERMINATED_PROGRAM)
    markers = tmp_path / "markers"
    markers.mkdir()
    flags = ["--subprocesses"] if follow else []
    run = subprocess.Popen(
        [sys.executable, "-m", "sigprof", "run", *flags, "--clock", "cpu", "-f", str(FREQUENCY),
         "--format", "speedscope", "-o", "out.json", "terminated.py", str(markers)],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(markers.iterdir())) == 2
        time.sleep(1.0)
        os.killpg(run.pid, signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == -signal.SIGTERM, stderr
    assert re.search(r"^sigprof: the program was terminated \(SIGTERM\) after \d+\.\d s; "
                     "the profile up to then:$", stderr, re.MULTILINE), stderr
    threads = _threads(tmp_path / "out.json")
    parent = sum(functions["parent_spins"] for functions in threads.values())
    child = sum(functions["child_spins"] for functions in threads.values())
    # about a second of CPU each (the two share two cores with the test)
    assert parent >= 0.3 * FREQUENCY, threads
    if follow:
        assert child >= 0.3 * FREQUENCY, threads
    else:
        assert child == 0
    # the samples taken while sigprof wrote the profile are not the program's
    assert not any(name.startswith("_write_then_terminate") for functions in threads.values()
                   for name in functions), threads


WSGI_APP = """
import json, os, time

def work(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(i * i for i in range(300))

def app(environ, start_response):
    work(0.02)
    body = json.dumps({"pid": os.getpid(), "seconds": 0.02}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@needs_native
def test_gunicorn_workers(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    write_script(tmp_path / "app.py", WSGI_APP)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sigprof", "run", "--subprocesses", "--clock", "cpu", "-f", str(FREQUENCY),
         "--no-summary",
         "--format", "speedscope", "-o", "out.json", "-m", "gunicorn", "-w", "2", "--bind",
         f"127.0.0.1:{port}", "app:app"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        answers = _requests(port, count=60, server=server)
    finally:
        server.send_signal(signal.SIGINT)  # gunicorn stops its workers, then the run writes
        _, stderr = server.communicate(timeout=120)
    assert server.returncode == 0, stderr
    threads = _threads(tmp_path / "out.json")
    for pid in {answer["pid"] for answer in answers}:
        owed = sum(answer["seconds"] for answer in answers if answer["pid"] == pid) * FREQUENCY
        name = f"{pid} gunicorn: MainThread"
        assert name in threads, (name, sorted(threads))
        assert threads[name]["work"] >= 0.4 * owed, (name, threads[name]["work"], owed)
    assert len({answer["pid"] for answer in answers}) == 2


@needs_native
def test_a_program_that_is_not_python_is_run_and_its_python_followed(tmp_path: Path) -> None:
    """A shell script (as uWSGI, or any launcher that is not Python): run as
    a child, its Python processes followed without --subprocesses, since
    nothing else could be profiled; its exit code passes through."""
    write_script(tmp_path / "spins.py", AFTER_EXEC.replace("after_exec", "spins"))
    launcher = tmp_path / "launch.sh"
    launcher.write_text(f"#!/bin/sh\n{sys.executable} spins.py 0\nexit 5\n")
    launcher.chmod(0o755)
    result = sigprof_cli("run", "--clock", "cpu", "-f", str(FREQUENCY), "--format", "speedscope",
                         "-o", "out.json", "./launch.sh", cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    threads = _threads(tmp_path / "out.json")
    (name,) = threads  # the run's own waiting is not in it
    assert re.fullmatch(r"\d+ spins\.py: MainThread", name)
    assert threads[name]["spins"] >= 0.8 * 0.5 * FREQUENCY


UWSGI = Path(sys.executable).parent / "uwsgi"
needs_uwsgi = pytest.mark.skipif(not UWSGI.exists(), reason="uwsgi is not installed (it builds from source)")


def _uwsgi_command(port: int, *options: str) -> list[str]:
    return [str(UWSGI), "--master", "--processes", "2", "--http-socket", f"127.0.0.1:{port}",
            "--wsgi-file", "app.py", "--callable", "app", "--disable-logging", "--die-on-term", *options]


@needs_native
@needs_uwsgi
def test_uwsgi_workers(tmp_path: Path) -> None:
    """uWSGI is a C program: `sigprof run uwsgi ...` runs it as a child and
    follows the Python in it; SIGTERM to the run reaches it (--die-on-term:
    it stops its workers, which write their parts as they leave)."""
    write_script(tmp_path / "app.py", WSGI_APP)
    port = stats_port = _free_port()
    while stats_port == port:  # both probes are closed: the OS may hand one out twice
        stats_port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sigprof", "run", "--clock", "cpu", "-f", str(FREQUENCY), "--no-summary",
         "--format", "speedscope", "-o", "out.json",
         *_uwsgi_command(port, "--py-call-uwsgi-fork-hooks", "--stats", f"127.0.0.1:{stats_port}")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        answers = _requests(port, count=60, server=server)
        # a worker stopped while busy skips Python's atexit: its last samples would be lost
        wait_until_uwsgi_workers_idle(stats_port, requests=60)
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=120)
    assert server.returncode == 0, stderr
    assert "--py-call-uwsgi-fork-hooks" not in stderr  # no warning with the option
    threads = _threads(tmp_path / "out.json")
    pids = {answer["pid"] for answer in answers}
    assert len(pids) == 2
    for pid in pids:
        owed = sum(answer["seconds"] for answer in answers if answer["pid"] == pid) * FREQUENCY
        names = [name for name in threads if re.fullmatch(rf"{pid} uwsgi: uWSGIWorker\dCore0", name)]
        assert len(names) == 1, (pid, sorted(threads))
        name = names[0]
        assert threads[name]["work"] >= 0.8 * owed, (name, threads[name]["work"], owed)


@needs_native
@needs_uwsgi
def test_uwsgi_without_fork_hooks_is_told(tmp_path: Path) -> None:
    """Without the option Python's fork hooks do not run in uWSGI's workers:
    they cannot be followed, and the run says so as uWSGI starts."""
    write_script(tmp_path / "app.py", WSGI_APP)
    server = subprocess.Popen(
        [sys.executable, "-m", "sigprof", "run", "--clock", "cpu", "--no-summary", "-o", "out.html",
         *_uwsgi_command(_free_port())],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert server.stderr is not None
        lines = iter(server.stderr.readline, "")
        warning = next((line for line in lines if line.startswith("sigprof:")), "")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
    assert warning.strip() == ("sigprof: uWSGI without --py-call-uwsgi-fork-hooks on its command line: "
                               "its workers are not profiled, and one may never start; add the option")


def _requests(port: int, count: int, server: subprocess.Popen) -> list[dict]:
    """`count` requests, four at a time once the server answers (both workers busy)."""
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, "the server ended early"
        try:
            first = _get(port)
            break
        except OSError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as clients:
        return [first, *clients.map(lambda _: _get(port), range(count - 1))]


def _get(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
        answer: dict = json.loads(response.read())
        return answer


def _base_interpreter() -> str:
    """The interpreter this virtual environment was made from: without sigprof."""
    base = os.path.join(sys.base_exec_prefix, "bin", os.path.basename(sys.executable))
    if sys.base_exec_prefix == sys.exec_prefix or not os.path.exists(base):
        pytest.skip("not in a virtual environment: no interpreter without sigprof at hand")
    found = subprocess.run([base, "-c", "import sigprof"], capture_output=True, check=False)
    if found.returncode == 0:
        pytest.skip("the base interpreter has sigprof installed too")
    return base


@needs_native
def test_a_child_that_cannot_import_sigprof_is_named_in_one_line(tmp_path: Path) -> None:
    base = _base_interpreter()
    write_script(tmp_path / "other.py", f"import subprocess\nsubprocess.run([{base!r}, '-c', 'pass'], check=True)\n")
    result = sigprof_cli("run", "--subprocesses", "--no-summary", "-o", "out.html", "other.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("sigprof: 1 child process ran Python, not profiled: sigprof could not start in them "
            "(an interpreter without this sigprof?)") in result.stderr.splitlines()


@needs_native
def test_threads_filter_matches_in_every_process(tmp_path: Path) -> None:
    _program(tmp_path)
    records = tmp_path / "records"
    records.mkdir()
    result = sigprof_cli("run", "--subprocesses", "--threads", "MainThread", "--format", "speedscope",
                         "-o", "out.json", "program.py", "os.fork", str(records), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    threads = _threads(tmp_path / "out.json")
    (child_pid,) = _children_seconds(records)
    assert threads[f"{child_pid} program.py: MainThread"]["child_work"] > 0
    assert sum(functions["parent_work"] for functions in threads.values()) > 0
    assert all(name.endswith(": MainThread") for name in threads)


@needs_native
def test_a_child_that_execs_is_followed_across_the_exec(tmp_path: Path) -> None:
    write_script(tmp_path / "execs.py", EXEC_PROGRAM)
    write_script(tmp_path / "after.py", AFTER_EXEC)
    write_script(tmp_path / "parent.py", """
        import subprocess, sys
        assert subprocess.run([sys.executable, "execs.py"]).returncode == 3
    """)
    result = sigprof_cli("run", "--subprocesses", "--clock", "cpu", "-f", str(FREQUENCY), "--format",
                         "speedscope", "-o", "out.json", "parent.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exec'd" not in result.stderr  # the run's own program did not exec
    threads = _threads(tmp_path / "out.json")
    (before,) = [name for name, functions in threads.items() if functions["before_exec"]]
    (after,) = [name for name, functions in threads.items() if functions["after_exec"]]
    pid = before.split()[0]
    assert before == f"{pid} execs.py: MainThread" and after == f"{pid} after.py: MainThread"
    assert threads[before]["before_exec"] >= 0.4 * 0.5 * FREQUENCY
    assert threads[after]["after_exec"] >= 0.4 * 0.5 * FREQUENCY
