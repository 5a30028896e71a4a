"""Runs the profiled program the way ``python script.py`` or ``python -m
module`` would: as ``__main__``, with its own sys.argv and sys.path[0],
and reports how it ended as an exit code instead of leaving."""

from __future__ import annotations

import importlib.util
import os
import runpy
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

    @property
    def display_name(self) -> str:
        if self.module:
            return self.module
        return os.path.basename(self.script or "program")

    def check(self) -> None:
        """Fails early, before any sampling, if the program cannot start."""
        if self.script is not None:
            if not os.path.exists(self.script):
                raise TargetError(f"script not found: {self.script}")
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


def run(target: Target) -> int:
    """Runs the program to its end; returns its exit code. Exceptions it
    raises are printed like the interpreter would and give code 1;
    KeyboardInterrupt gives 130."""
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
