from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sigprof
from sigprof.local import cli

from .conftest import SPIN, needs_native, sigprof_cli, write_script


def test_version(tmp_path: Path) -> None:
    result = sigprof_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"sigprof {sigprof.__version__}"


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = shutil.which("sigprof", path=os.path.dirname(sys.executable))
    assert script is not None, "pip install should create the `sigprof` command"
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == f"sigprof {sigprof.__version__}"


def test_no_command_prints_help(tmp_path: Path) -> None:
    result = sigprof_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "run" in result.stderr and "view" in result.stderr and "report" in result.stderr


@needs_native
def test_script_runs_as_main_with_its_argv_path_and_exit_code(tmp_path: Path) -> None:
    app = tmp_path / "prog" / "app.py"
    write_script(tmp_path / "prog" / "helper.py", SPIN)
    write_script(app, """
        import json, sys
        from helper import hot_function   # found through sys.path[0], the script's folder
        hot_function(0.4)
        with open(sys.argv[2], "w") as out:
            json.dump({"name": __name__, "argv": sys.argv, "path0": sys.path[0],
                       "main": sys.modules["__main__"].__dict__.get("hot_function") is hot_function}, out)
        sys.exit(7)
    """)
    seen = tmp_path / "seen.json"
    result = sigprof_cli(
        "run", "--format", "collapsed", "-o", "out.txt", "prog/app.py", "--flag", str(seen),
        cwd=tmp_path,
    )
    assert result.returncode == 7, result.stderr
    facts = json.loads(seen.read_text())
    assert facts["name"] == "__main__"
    assert facts["argv"] == ["prog/app.py", "--flag", str(seen)]
    assert facts["path0"] == str(tmp_path / "prog")
    assert facts["main"] is True
    profile = (tmp_path / "out.txt").read_text()
    assert re.search(r"^<module> \(.*app\.py:\d+\);hot_function \(.*helper\.py:\d+\)", profile, re.MULTILINE)
    # sigprof's own launcher frames are not in the profile
    assert "runpy" not in profile and "sigprof/local/cli.py" not in profile
    assert re.search(r"^\s+\d+\.\d%\s+\d+\.\d%\s+hot_function", result.stderr, re.MULTILINE)
    assert "sigprof: wrote out.txt" in result.stderr


@needs_native
def test_module_mode(tmp_path: Path) -> None:
    write_script(tmp_path / "pkg" / "__init__.py", "")
    write_script(tmp_path / "pkg" / "tool.py", SPIN + """
import json, sys
if __name__ == "__main__":
    hot_function(0.3)
    print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__}))
""")
    result = sigprof_cli("run", "-o", "p.txt", "--format", "collapsed", "-m", "pkg.tool", "a", "-o", "b",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["name"] == "__main__"
    assert facts["argv"] == [str(tmp_path / "pkg" / "tool.py"), "a", "-o", "b"]
    assert facts["path0"] == str(tmp_path)
    assert "hot_function" in (tmp_path / "p.txt").read_text()


@needs_native
def test_exception_in_program_still_writes_profile(tmp_path: Path) -> None:
    write_script(tmp_path / "fails.py", SPIN + """
hot_function(0.3)
raise ValueError("boom")
""")
    result = sigprof_cli("run", "-o", "f.html", "fails.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr
    assert "runpy" not in result.stderr  # the traceback is the program's, not ours
    assert "hot_function" in (tmp_path / "f.html").read_text()


@needs_native
@pytest.mark.parametrize("code, expected", [("0", 0), ("3", 3), ("'bye'", 1), ("None", 0)])
def test_system_exit_codes(tmp_path: Path, code: str, expected: int) -> None:
    write_script(tmp_path / "leave.py", f"import sys\nsys.exit({code})\n")
    result = sigprof_cli("run", "-o", "x.html", "--no-summary", "leave.py", cwd=tmp_path)
    assert result.returncode == expected
    assert (tmp_path / "x.html").exists()


@needs_native
def test_default_output_name(tmp_path: Path) -> None:
    write_script(tmp_path / "tiny.py", SPIN + "hot_function(0.2)\n")
    result = sigprof_cli("run", "--format", "speedscope", "tiny.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = tmp_path.glob("sigprof-tiny-*.speedscope.json")
    assert f"wrote {written.name}" in result.stderr


@needs_native
def test_threads_filter(tmp_path: Path) -> None:
    write_script(tmp_path / "threads.py", SPIN + """
import threading
# short-lived: ends before the recorder's first drain, its name must still be known
worker = threading.Thread(target=hot_function, args=(0.3,), name="busy-1")
worker.start()
worker.join()
""")
    result = sigprof_cli("run", "--threads", "busy-*", "--format", "speedscope", "-o", "t.json",
                         "threads.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "t.json").read_text())
    assert [p["name"].split(" (")[0] for p in document["profiles"]] == ["busy-1"]
    frames = document["shared"]["frames"]
    (busy,) = document["profiles"]
    assert any(frames[s[-1]]["name"].startswith("hot_function") for s in busy["samples"])


@needs_native
def test_cpu_clock_skips_sleeping(tmp_path: Path) -> None:
    write_script(tmp_path / "mixed.py", SPIN + """
import time
def sleepy():
    time.sleep(0.6)
sleepy()
hot_function(0.6)
""")
    result = sigprof_cli("run", "--clock", "cpu", "--format", "collapsed", "-o", "c.txt",
                         "mixed.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "c.txt").read_text().splitlines()
    hot = sum(int(line.rsplit(" ", 1)[1]) for line in lines if "hot_function" in line)
    sleeping = sum(int(line.rsplit(" ", 1)[1]) for line in lines if "sleepy" in line)
    assert hot > 5 and sleeping < hot / 3


@needs_native
@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_duration_stops_a_program_that_never_ends(tmp_path: Path, sigint: str) -> None:
    # "ignored": how a shell script starts a background job
    write_script(tmp_path / "forever.py", "import time\nwhile True:\n    time.sleep(0.05)\n")
    result = sigprof_cli("run", "--duration", "1", "-o", "d.html", "forever.py", cwd=tmp_path,
                         timeout=120, ignore_sigint=sigint == "ignored")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d.html").exists()


@needs_native
@pytest.mark.parametrize("loop", ["while True: sum(range(10000))", "while True:\n        sum(range(10000))"])
def test_duration_interrupt_reaches_the_program_handler(tmp_path: Path, loop: str) -> None:
    # The one-line loop lost its handler on 3.11 and 3.12 when the interrupt
    # came from a thread holding the GIL (raised at the back-jump, outside
    # the try): traceback, exit 0. Five runs: it failed in 5 of 5.
    write_script(tmp_path / "catches.py", f"""try:
    {loop}
except KeyboardInterrupt:
    print("handler ran", flush=True)
    raise SystemExit(7)
""")
    for _ in range(5):
        result = sigprof_cli("run", "--duration", "0.5", "--no-summary", "-o", "k.json",
                             "--format", "speedscope", "catches.py", cwd=tmp_path, timeout=120)
        assert result.returncode == 7, result.stderr
        assert "handler ran" in result.stdout
        assert "Traceback" not in result.stderr


@needs_native
def test_duration_interrupt_traceback_shows_the_program_frames(tmp_path: Path) -> None:
    write_script(tmp_path / "spins.py", "def spin():\n    while True: sum(range(10000))\n\nspin()\n")
    result = sigprof_cli("run", "--duration", "0.5", "--no-summary", "-o", "t.json",
                         "--format", "speedscope", "spins.py", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr  # our own interrupt, not the program failing
    traceback = result.stderr[result.stderr.index("Traceback"):]
    assert "KeyboardInterrupt" in traceback
    assert 'spins.py", line 4, in <module>' in traceback
    assert 'spins.py", line 2, in spin' in traceback
    assert "runpy" not in traceback and "sigprof" not in traceback.split("KeyboardInterrupt")[0]


@needs_native
def test_threads_filter_matching_nothing_says_so(tmp_path: Path) -> None:
    write_script(tmp_path / "one.py", SPIN + "hot_function(0.5)\n")
    result = sigprof_cli("run", "--threads", "nosuch*", "--format", "speedscope", "-o", "t.json",
                         "one.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--threads 'nosuch*' matched no thread; the threads sampled: MainThread (" in result.stderr


@needs_native
@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_run_output_has_only_the_program_threads(tmp_path: Path, clock: str) -> None:
    write_script(tmp_path / "two.py", SPIN + """import threading, time
worker = threading.Thread(target=hot_function, args=(0.6,), name="worker")
worker.start()
time.sleep(0.8)
worker.join()
""")
    result = sigprof_cli("run", "--clock", clock, "--format", "speedscope", "-o", "t.json",
                         "two.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [p["name"].rsplit(" (", 1)[0] for p in json.loads((tmp_path / "t.json").read_text())["profiles"]]
    assert "worker" in names
    assert set(names) <= {"MainThread", "worker"}, names  # no sigprof-recorder


@needs_native
def test_progress_line_on_a_terminal(tmp_path: Path) -> None:
    write_script(tmp_path / "slow.py", SPIN + "hot_function(1.5)\n")
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "sigprof", "run", "-o", "s.html", "slow.py"],
            cwd=str(tmp_path), stderr=follower, stdout=subprocess.DEVNULL,
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=120) == 0
    finally:
        os.close(leader)
    text = output.decode(errors="replace")
    assert re.search(r"\rsigprof: +\d+\.\d s +\d+ samples +\d+ dropped", text)
    assert "wrote s.html" in text


# ---- errors a person will hit ----


def test_script_not_found(tmp_path: Path) -> None:
    result = sigprof_cli("run", "missing.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "script not found: missing.py" in result.stderr


@needs_native
def test_a_program_is_found_on_path_then_beside_the_interpreter(tmp_path: Path) -> None:
    """As a shell finds a console script; and in a virtual environment that
    is not activated (`.venv/bin/sigprof run pytest`), beside its python."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "say-hello"
    program.write_text(f"#!{sys.executable}\nprint('hello from', __name__)\n")
    program.chmod(0o755)
    system_path = "/usr/bin:/bin"
    found = sigprof_cli("run", "--no-summary", "-o", "a.html", "say-hello", cwd=tmp_path,
                        env={"PATH": f"{folder}:{system_path}"})
    assert found.returncode == 0, found.stderr
    assert "hello from __main__" in found.stdout  # run in-process, as a Python script
    beside = Path(sys.executable).parent / "pytest"
    if not beside.exists():
        pytest.skip("no pytest script beside this interpreter")
    result = sigprof_cli("run", "--no-summary", "-o", "b.html", "pytest", "--version", cwd=tmp_path,
                         env={"PATH": system_path})
    assert result.returncode == 0, result.stderr
    assert "pytest" in result.stdout + result.stderr


def test_module_not_importable(tmp_path: Path) -> None:
    result = sigprof_cli("run", "-m", "no_such_module_here", cwd=tmp_path)
    assert result.returncode == 2
    assert "module 'no_such_module_here' is not importable" in result.stderr


def test_output_not_writable(tmp_path: Path) -> None:
    write_script(tmp_path / "ok.py", "print('ran')\n")
    result = sigprof_cli("run", "-o", "nowhere/deeper/out.html", "ok.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot write nowhere/deeper/out.html" in result.stderr
    assert "ran" not in result.stdout  # refused before running anything


def test_unknown_format(tmp_path: Path) -> None:
    write_script(tmp_path / "ok.py", "print('ran')\n")
    result = sigprof_cli("run", "--format", "svg", "ok.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown format 'svg'" in result.stderr and "speedscope" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["-f", "0"], "argument -f/--frequency: must be above 0 and at most 500 Hz"),
    (["--frequency", "1000"], "argument -f/--frequency: must be above 0 and at most 500 Hz"),
    (["-f", "nan"], "argument -f/--frequency: must be above 0 and at most 500 Hz"),
    (["-f", "fast"], "argument -f/--frequency: not a number: 'fast'"),
    (["--clock", "real"], "argument --clock: invalid choice: 'real'"),
    (["--duration", "0"], "argument --duration: must be above 0"),
    (["--duration", "soon"], "argument --duration: not a number of seconds: 'soon'"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_bad_run_options_are_named_before_the_program_runs(
    tmp_path: Path, args: list[str], message: str
) -> None:
    write_script(tmp_path / "ok.py", "print('ran')\n")
    result = sigprof_cli("run", *args, "ok.py", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "ran" not in result.stdout


def test_output_that_is_a_directory(tmp_path: Path) -> None:
    write_script(tmp_path / "ok.py", "print('ran')\n")
    (tmp_path / "out").mkdir()
    result = sigprof_cli("run", "-o", "out", "ok.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "output out is a directory; give a file name" in result.stderr
    assert "ran" not in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "cannot read the time 'yesterday'"),
    (["--format", "svg"], "unknown format 'svg'"),
])
def test_bad_report_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = sigprof_cli("report", str(tmp_path), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_no_program_given(tmp_path: Path) -> None:
    result = sigprof_cli("run", "--format", "html", cwd=tmp_path)
    assert result.returncode == 2
    assert "give a script to run, or -m MODULE" in result.stderr


def test_native_unavailable_says_what_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    write_script(tmp_path / "ok.py", "print('ran')\n")
    monkeypatch.setattr(cli, "native_unavailable_reason", lambda: "the native sampler needs Linux")
    assert cli.main(["run", str(tmp_path / "ok.py")]) == 3
    err = capsys.readouterr().err
    assert "native sampler is unavailable: the native sampler needs Linux" in err
    assert "sigprof view" in err and "sigprof report" in err


def test_split_keeps_program_options_for_the_program() -> None:
    assert cli._split_run_argv(["-o", "x", "--clock=cpu", "app.py", "-o", "y"]) == (
        ["-o", "x", "--clock=cpu"], "app.py", None, ["-o", "y"]
    )
    assert cli._split_run_argv(["-mpkg.mod", "--x"]) == ([], None, "pkg.mod", ["--x"])
    assert cli._split_run_argv(["--", "-weird.py"]) == ([], "-weird.py", None, [])


@needs_native
def test_threads_outliving_the_main_module_are_profiled(tmp_path: Path) -> None:
    write_script(tmp_path / "late.py", SPIN + """
import threading
threading.Thread(target=hot_function, args=(0.8,), name="late-worker").start()
""")
    result = sigprof_cli("run", "--format", "collapsed", "-o", "l.txt", "late.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "l.txt").read_text().splitlines()
    hot = sum(int(line.rsplit(" ", 1)[1]) for line in lines if "hot_function" in line)
    assert hot > 20  # ~80 at 101 Hz; the main module itself ends at once


@needs_native
def test_forked_child_does_not_write_the_profile(tmp_path: Path) -> None:
    write_script(tmp_path / "forks.py", SPIN + """
import os, sys
pid = os.fork()
if pid == 0:
    print("child done", flush=True)
    sys.exit(5)
_, status = os.waitpid(pid, 0)
print("child exit", os.WEXITSTATUS(status))
hot_function(0.3)
""")
    result = sigprof_cli("run", "--format", "collapsed", "-o", "f.txt", "forks.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "child done" in result.stdout and "child exit 5" in result.stdout
    assert result.stderr.count("sigprof: wrote") == 1
    assert "hot_function" in (tmp_path / "f.txt").read_text()


@needs_native
def test_default_output_never_replaces_a_file(tmp_path: Path) -> None:
    """Two runs in the same second: the second writes NAME-2, not over the first."""
    write_script(tmp_path / "tiny.py", "pass\n")
    now = time.time()
    taken = [tmp_path / f"sigprof-tiny-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + s))}.speedscope.json"
             for s in range(-1, 30)]
    for path in taken:
        path.write_text("mine")
    result = sigprof_cli("run", "--format", "speedscope", "--no-summary", "tiny.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = tmp_path.glob("sigprof-tiny-*-2.speedscope.json")
    assert f"wrote {written.name}" in result.stderr
    assert all(path.read_text() == "mine" for path in taken)


@needs_native
def test_installed_packages_show_from_site_packages_with_their_line(tmp_path: Path) -> None:
    """A virtual environment under the current directory: its packages show as
    site-packages/..., and a narrow terminal cuts the path, never the line."""
    packages = tmp_path / ".venv" / "lib" / "python3.x" / "site-packages"
    write_script(packages / "pkgx" / "__init__.py", "")
    write_script(packages / "pkgx" / "busy_module.py", SPIN.replace("hot_function", "busy_in_package"))
    write_script(tmp_path / "uses.py", f"""
        import sys
        sys.path.insert(0, {str(packages)!r})
        from pkgx.busy_module import busy_in_package
        busy_in_package(0.4)
    """)
    result = sigprof_cli("run", "-o", "out.html", "uses.py", cwd=tmp_path, env={"COLUMNS": "50"})
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "busy_in_package  " in line]
    assert re.search(r"busy_in_package  \S*busy_module\.py:\d+$", line), line
    page = (tmp_path / "out.html").read_text()
    # the name shown (the full path stays, for the tooltip)
    assert '["busy_in_package","site-packages/pkgx/busy_module.py",' in page


@needs_native
def test_summary_gives_the_waiting_share_first(tmp_path: Path) -> None:
    write_script(tmp_path / "sleeps.py", """
        import time

        def waits():
            time.sleep(1.0)

        def burns():
            end = time.thread_time() + 0.3
            while time.thread_time() < end:
                sum(i * i for i in range(300))

        waits()
        burns()
    """)
    result = sigprof_cli("run", "-o", "out.html", "sleeps.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    share = re.fullmatch(r"  about (\d+)% of the time sampled was waiting, off the CPU "
                         r"\((\d+\.\d) CPU-s of (\d+\.\d) s sampled, wall clock\): "
                         r"--clock cpu shows where the CPU time went", lines[1])
    assert share is not None, result.stderr
    # 0.3 CPU-s (and the start's imports) of 1.3 s or more: the load only adds waiting
    assert 40 <= int(share[1]) <= 95 and float(share[3]) >= 1.2, lines[1]
    assert "  (wall clock: waiting counts too" not in result.stderr
    assert lines[2].split() == ["self", "total", "function"]
