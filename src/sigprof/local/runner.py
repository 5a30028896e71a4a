"""Runs the profiled program the way ``python script.py`` or ``python -m
module`` would: as ``__main__``, with its own sys.argv and sys.path[0],
and reports how it ended as an exit code instead of leaving. A program that
is not Python (uWSGI, a shell script) runs as a child process instead: only
the Python processes it starts can be profiled, by following them."""

from __future__ import annotations

import importlib.util
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass


class TargetError(Exception):
    """The program cannot be started (no such script, module not found);
    str() is the message for the user."""


@dataclass
class Target:
    script: str | None  # a path, or None when module is set
    module: str | None
    args: list[str]
    command: bool = False  # script is an executable that is not Python; set by check()

    @property
    def display_name(self) -> str:
        if self.module:
            return self.module
        return os.path.basename(self.script or "program")

    def check(self) -> None:
        """Fails early, before any sampling, if the program cannot start."""
        if self.script is not None:
            if not os.path.exists(self.script) and os.sep not in self.script:
                # as a shell finds `uwsgi` or `gunicorn`; or beside this
                # interpreter, in a virtual environment not activated
                found = shutil.which(self.script) or shutil.which(
                    self.script, path=os.path.dirname(sys.executable))
                if found is None:
                    raise TargetError(f"script not found: {self.script} (not a file here, nor a "
                                      "program on PATH or in this Python's bin folder)")
                self.script = found
            if not os.path.exists(self.script):
                raise TargetError(f"script not found: {self.script}")
            self.command = _is_other_executable(self.script)
            if os.path.isdir(self.script) and not os.path.exists(
                os.path.join(self.script, "__main__.py")
            ):
                raise TargetError(f"{self.script} is a directory with no __main__.py")
            return
        assert self.module is not None
        # as `python -m` does, the current directory comes first on sys.path
        saved = list(sys.path)
        sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError) as error:
            raise TargetError(f"module {self.module!r} is not importable: {error}") from None
        finally:
            sys.path[:] = saved
        if spec is None:
            raise TargetError(
                f"module {self.module!r} is not importable: no module named {self.module!r} "
                f"(is it installed in {sys.executable}?)"
            )


def first_line(path: str) -> bytes:
    """A program file's start: its #! line, or an ELF header; b"" if unreadable."""
    try:
        with open(path, "rb") as program:
            return program.readline(256)
    except OSError:
        return b""


def names_python(start: bytes) -> bool:
    return start.startswith(b"#!") and b"python" in start


def _is_other_executable(path: str) -> bool:
    """A compiled program, or a script whose #! line names no Python; any
    other file is run as Python source, as `python FILE` would."""
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return False
    start = first_line(path)
    return start.startswith(b"\x7fELF") or (start.startswith(b"#!") and not names_python(start))


def run(target: Target, interrupt_after: float | None = None) -> int:
    """Runs the program to its end; returns its exit code. Exceptions it
    raises are printed like the interpreter would and give code 1;
    KeyboardInterrupt gives 130. interrupt_after: for a command, seconds
    after which it gets a SIGINT (a Python program gets its interrupt from
    the caller's timer, in its own main thread)."""
    if target.command:
        return _run_command(target, interrupt_after)
    saved_argv, saved_path = sys.argv, list(sys.path)
    main_module = sys.modules.get("__main__")
    try:
        if target.script is not None:
            sys.argv = [target.script, *target.args]
            sys.path[0:0] = [os.path.dirname(os.path.abspath(target.script))]
            runpy.run_path(target.script, run_name="__main__")
        else:
            sys.argv = [target.module or "", *target.args]  # run_module puts the file here
            sys.path[0:0] = [os.getcwd()]
            runpy.run_module(target.module or "", run_name="__main__", alter_sys=True)
        _wait_for_threads()
        return 0
    except SystemExit as leaving:
        _wait_for_threads()
        return exit_code(leaving.code)
    except KeyboardInterrupt:
        _print_program_traceback()
        return 130
    except BaseException:  # noqa: BLE001 - the program's own failure: report it as Python would
        _print_program_traceback()
        return 1
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        if main_module is not None:
            sys.modules["__main__"] = main_module


def _run_command(target: Target, interrupt_after: float | None) -> int:
    """The command as a child, in this process group so that a terminal's
    Ctrl-C reaches it directly (this process ignores SIGINT meanwhile, so the
    command does not get it twice); SIGTERM (a container's stop, `timeout`)
    is passed on. A command ended by a signal gives 128 + its number."""
    assert target.script is not None
    child = subprocess.Popen([target.script, *target.args])
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        if interrupt_after is not None:
            try:
                child.wait(timeout=interrupt_after)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGINT)
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return 128 - code if code < 0 else code


def _wait_for_threads() -> None:
    """The interpreter waits for non-daemon threads before it exits; so do
    we, so their work is in the profile."""
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon and thread is not threading.current_thread():
            thread.join()


def exit_code(code: object) -> int:
    """What SystemExit(code) makes the interpreter exit with."""
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    print(code, file=sys.stderr)
    return 1


def _print_program_traceback() -> None:
    kind, error, tb = sys.exc_info()
    # skip sigprof's and runpy's frames: the user wants their own
    while tb is not None and _is_ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(kind, error, tb)


def _is_ours(filename: str) -> bool:
    return filename == runpy.__file__ or filename == __file__ or "<frozen runpy>" in filename
