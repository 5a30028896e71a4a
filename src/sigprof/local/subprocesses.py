"""The processes a `sigprof run` program starts: followed with
``--subprocesses``, counted without it.

sigprof samples from inside the process (a signal handler reading its own
threads' stacks), so a child is profiled only if a sampler starts in it.
A run keeps a directory (named by ``SIGPROF_RUN_DIR`` in the environment
the program and its children inherit) and reaches each kind of child there:

- a forked child (``os.fork``, multiprocessing's fork, a forkserver's
  children, gunicorn's and uWSGI's workers) runs this module's fork hook;
- a new interpreter (``subprocess`` of ``sys.executable``, multiprocessing's
  spawn and its forkserver, an exec'd Python program) imports the
  ``sitecustomize`` of the run's ``bootstrap`` folder, put first on
  ``PYTHONPATH``: it takes its folder off ``sys.path``, then either marks the
  child (without the flag) or starts recording it, and hands over to the
  interpreter's own ``sitecustomize``, if any.

A followed child appends what it sampled to its own part file in the
directory at every drain of its sample source and as it ends; the run merges
the parts into its one output, each thread named ``PID PROGRAM: THREAD``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Callable, NoReturn

from sigprof.core.process_life import (
    ForkStage,
    after_fork_in_child,
    at_main_thread_exit,
    before_exec,
)
from sigprof.core.sample_source import SOURCE
from sigprof.core.sampler import Frame
from sigprof.formats.profile_model import Profile
from sigprof.local.recording import Recorder, launcher_frames
from sigprof.local.runner import first_line, names_python

ENV_RUN_DIR = "SIGPROF_RUN_DIR"
CONFIG_FILE = "run.json"
BOOTSTRAP_DIR = "bootstrap"
PART_PREFIX = "part-"
PYTHON_CHILD_PREFIX = "python-"

# stdlib only: it also runs in interpreters that cannot import sigprof
_BOOTSTRAP = '''\
"""`sigprof run`'s bootstrap of the Python programs started under it."""
import os as _os
import sys as _sys


def _sigprof_bootstrap(follow):
    here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [entry for entry in _sys.path if _os.path.abspath(entry or ".") != here]
    run_dir = _os.environ.get("SIGPROF_RUN_DIR", "")
    if not _os.path.isdir(run_dir):
        return
    if follow:
        try:
            from sigprof.local import subprocesses
            subprocesses.start_in_new_interpreter(run_dir)
            return
        except Exception:  # another interpreter, or one without sigprof
            pass
    try:
        with open(_os.path.join(run_dir, "python-%d" % _os.getpid()), "w"):
            pass
    except OSError:
        pass


def _next_sitecustomize():
    ours = _sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401
    except ImportError as error:
        if error.name != "sitecustomize":
            raise
        _sys.modules["sitecustomize"] = ours


_sigprof_bootstrap(FOLLOW)
_next_sitecustomize()
'''


@dataclass
class RunConfig:
    """What a run was asked for: read back by its children, and by the
    program that replaces the run's own process by exec."""

    follow: bool
    frequency: float
    clock: str
    output: str  # absolute
    format: str
    threads: list[str]
    summary: bool
    name: str  # the command line, the profile's name
    program: str  # how the run's own process is named among the others
    launcher: str  # the script that started sigprof: its frames are not the program's
    root_pid: int


def program_name(launcher: str = "") -> str:
    """What this process runs: the module of `-m`, else the script's name;
    "" while __main__ is sigprof's own launcher."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or ""
    if path and launcher_frames(launcher)(Frame("", os.path.abspath(path), None, 0)):
        return ""
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        name: str = spec.name
        return name.removesuffix(".__main__")
    if not path and sys.argv and sys.argv[0] == "-c":
        return "python -c"
    return os.path.basename(path or (sys.argv[0] if sys.argv else "")) or "python"


class RunDirectory:
    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, config: RunConfig) -> RunDirectory:
        """A new directory; this process's environment names it, so every
        child the program starts inherits it."""
        directory = cls(tempfile.mkdtemp(prefix="sigprof-run-"))
        with open(os.path.join(directory.path, CONFIG_FILE), "w") as out:
            json.dump(asdict(config), out)
        bootstrap = os.path.join(directory.path, BOOTSTRAP_DIR)
        os.mkdir(bootstrap)
        with open(os.path.join(bootstrap, "sitecustomize.py"), "w") as out:
            out.write(_BOOTSTRAP.replace("FOLLOW)", f"{config.follow!r})"))
        os.environ[ENV_RUN_DIR] = directory.path
        inherited = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = bootstrap + (os.pathsep + inherited if inherited else "")
        return directory

    def config(self) -> RunConfig:
        with open(os.path.join(self.path, CONFIG_FILE)) as config:
            return RunConfig(**json.load(config))

    def mark_python_child(self) -> None:
        try:
            with open(os.path.join(self.path, f"{PYTHON_CHILD_PREFIX}{os.getpid()}"), "w"):
                pass
        except OSError:  # the run already ended
            pass

    def python_children(self) -> int:
        return sum(1 for name in self._names() if name.startswith(PYTHON_CHILD_PREFIX))

    def part_path(self, pid: int) -> str:
        """A new name each time: a program exec'd keeps its pid."""
        return os.path.join(self.path, f"{PART_PREFIX}{pid}-{time.time_ns()}.jsonl")

    def parts(self) -> Iterator[str]:
        for name in sorted(self._names()):
            if name.startswith(PART_PREFIX):
                yield os.path.join(self.path, name)

    def remove(self) -> None:
        """The directory goes, and with it the bootstrap from PYTHONPATH."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.path)
        except OSError:
            return []


class PartWriter:
    """Appends a profile's new frames, stacks and samples to one part file,
    a JSON line each time, and forgets the samples written (the run merges
    the lines). One file per interpreter: its frame and stack ids are the
    file's own."""

    def __init__(self, directory: RunDirectory) -> None:
        self.pid = os.getpid()
        self._path = directory.part_path(self.pid)
        self._frames_written = 0
        self._stacks_written = 0

    def append(self, profile: Profile, program: str, stats: dict[str, int]) -> None:
        samples = [
            [timestamp, thread_id, stack_id]
            for thread_id, thread in profile.threads.items()
            for timestamp, stack_id, _ in thread.samples
        ]
        frames = profile.frames[self._frames_written:]
        stacks = profile.stacks[self._stacks_written:]
        if not samples and not frames and not stacks:
            return
        line = json.dumps({
            "pid": self.pid,
            "program": program,
            "frames": [list(frame) for frame in frames],
            "stacks": stacks,
            "threads": {str(tid): thread.name for tid, thread in profile.threads.items()},
            "samples": samples,
            "stats": stats,
        }, separators=(",", ":"))
        try:
            with open(self._path, "a") as part:
                part.write(line + "\n")  # one write: a reader sees whole lines, or a torn last one
        except OSError:  # the run already ended and took its directory
            pass
        self._frames_written += len(frames)
        self._stacks_written += len(stacks)
        for thread in profile.threads.values():
            thread.samples.clear()


class ChildRecorder(Recorder):
    """Records a followed child: every batch goes to its part file."""

    def __init__(self, config: RunConfig, directory: RunDirectory) -> None:
        super().__init__(config.frequency, config.clock, name="")
        self._part = PartWriter(directory)
        self._run_launcher = config.launcher
        # a forked child leaving through `sigprof run` (gunicorn's workers do)
        # finds __main__ sigprof's again: the program it ran is the one at the fork
        self._program_at_start = program_name(config.launcher)

    def _after_feed(self) -> None:
        # read at each write: a new interpreter (multiprocessing's too) sets __main__ as it goes
        program = program_name(self._run_launcher) or self._program_at_start or "python"
        self._part.append(self.profile, program, self.totals())
        _terminate_if_pending()

    def flush(self) -> None:
        """What was sampled so far goes to the part file now (the child is
        ending, or about to exec)."""
        if self._part.pid == os.getpid():
            SOURCE.collect()


@dataclass
class _ProcessState:
    directory: RunDirectory | None = None
    follow: bool = False
    recorder: ChildRecorder | None = None
    finish: Callable[[], None] | None = None  # set in the program that replaced the run by exec
    exit_hook_registered: bool = False
    termination_writer: tuple[int, Callable[[], None]] | None = None  # (pid, what SIGTERM writes)
    termination_pending: int | None = None  # SIGTERM came during a drain


_state = _ProcessState()


def watch_children(directory: RunDirectory, follow: bool) -> None:
    """In the run's own process: from now on its forked children are
    followed (or marked)."""
    _state.directory, _state.follow = directory, follow


def _forked_for_exec() -> bool:
    """subprocess's preexec_fn runs the fork hooks in a child that is about
    to exec: that child is not followed as a fork (an exec'd Python program
    bootstraps itself)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_execute_child" and frame.f_code.co_filename.endswith("subprocess.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _after_fork() -> None:
    directory = _state.directory
    if directory is None or _forked_for_exec():
        return
    _state.finish = None  # the replaced run's output is its own process's to write
    if not _state.follow:
        directory.mark_python_child()
        return
    config = directory.config()
    _start_recording(directory, config)


def _start_recording(directory: RunDirectory, config: RunConfig) -> None:
    _state.recorder = ChildRecorder(config, directory)
    _state.recorder.start()
    if not _state.exit_hook_registered:  # a forked child inherits its parent's hooks
        at_main_thread_exit(_at_exit)
        before_exec(lambda _path: flush_child())
        # multiprocessing's and os.fork's children leave by os._exit
        os._exit = _flushing_exit(os._exit)  # type: ignore[assignment]
        _state.exit_hook_registered = True
    write_before_termination(flush_child)


UWSGI_FORK_HOOKS = "py-call-uwsgi-fork-hooks"


def _uwsgi_calls_fork_hooks() -> bool:
    """uWSGI forks its workers from C: only with this option do Python's fork
    hooks, and so the run's, run in them. It has not read its options when
    this interpreter starts, and holds the GIL in its master loop without
    --enable-threads, so its command line and environment are read here (an
    option set in a configuration file is not seen)."""
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except OSError:
        return True  # cannot tell: no warning
    flag = f"--{UWSGI_FORK_HOOKS}".encode()
    environment = os.environ.get("UWSGI_" + UWSGI_FORK_HOOKS.upper().replace("-", "_"), "")
    return flag in words or environment.lower() not in ("", "0", "false", "no")


def write_before_termination(write: Callable[[], None] | None) -> None:
    """SIGTERM at its default ends a process before it writes what it
    sampled: the run's own process all of it (`timeout`, a container's stop),
    a followed child what it sampled since its last drain (a pool terminates
    its workers so as it ends, and leaving `with Pool()` terminates it),
    which for a pool worker can be all its work. From now on the signal
    first calls `write`, in this process only, then ends the process by its
    default action, as before. A handler of the program's own replaces this
    one; an ignored SIGTERM stays ignored. None: nothing to write now."""
    _state.termination_writer = (os.getpid(), write) if write is not None else None
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _write_then_terminate):
            signal.signal(signal.SIGTERM, _write_then_terminate)
    except ValueError:  # not the main thread: the signal keeps its default
        pass


def _write_then_terminate(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)
    pid, write = _state.termination_writer or (None, None)
    if write is not None and pid == os.getpid():
        if SOURCE.lock._is_owned():
            # the signal came inside a drain on this thread: a child's part is
            # written as the drain feeds its recorder, which then terminates
            _state.termination_pending = signum
            return
        write()
    os.kill(os.getpid(), signum)


def _terminate_if_pending() -> None:
    signum = _state.termination_pending
    if signum is not None:
        os.kill(os.getpid(), signum)  # the process's: a sampler thread blocks it


def _flushing_exit(exit_now: Callable[[int], NoReturn]) -> Callable[[int], NoReturn]:
    @functools.wraps(exit_now)
    def exit_after_flush(code: int) -> NoReturn:
        try:
            flush_child()
        finally:
            exit_now(code)

    return exit_after_flush


def flush_child() -> None:
    """A followed child's samples so far go to its part file."""
    recorder = _state.recorder
    if recorder is not None:
        recorder.flush()


def _at_exit() -> None:
    flush_child()
    if _state.finish is not None:
        _state.finish()


def start_in_new_interpreter(path: str) -> None:
    """Called by the bootstrap in a new Python interpreter the run started
    (or its own process, replaced by exec), with --subprocesses."""
    directory = RunDirectory(path)
    config = directory.config()
    _state.directory, _state.follow = directory, True
    _start_recording(directory, config)
    if "uwsgi" in sys.builtin_module_names and not _uwsgi_calls_fork_hooks():
        print(f"sigprof: uWSGI without --{UWSGI_FORK_HOOKS} on its command line: its workers "
              "are not profiled, and one may never start; add the option", file=sys.stderr, flush=True)
    if os.getpid() == config.root_pid:
        # the run's own process exec'd this program: it writes the output now
        from sigprof.local import cli

        _state.finish = lambda: cli.finish_after_exec(directory, config)
        write_before_termination(_at_exit)


def wait_for_ending_children(seconds: float) -> None:
    """Gives this process's children up to `seconds` to end: when a signal
    ends the run (`timeout` signals the whole process group), its children
    write their last parts as they end, and the run reads them after."""
    deadline = time.monotonic() + seconds
    while _running_children() and time.monotonic() < deadline:
        time.sleep(0.01)


def _running_children() -> list[str]:
    running = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as listed:
                children = listed.read().split()
        except OSError:  # a thread that ended, or a kernel without the file
            continue
        for pid in children:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    state = stat.read().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":  # ended, not yet waited for
                running.append(pid)
    return running


def read_parts(directory: RunDirectory, into: Profile, skip_pid: int | None = None) -> None:
    """Adds every part but skip_pid's to `into`, thread names prefixed with
    the process; a torn last line (a child killed while writing) is skipped."""
    used = set(into.threads)
    for path in directory.parts():
        try:
            with open(path) as part:
                lines = [line for line in map(_json_line, part.read().splitlines()) if line]
        except OSError:
            continue
        if not lines or lines[0]["pid"] == skip_pid:
            continue
        frames: list[Frame] = []
        stacks: list[tuple[int, ...]] = []
        merged_ids: dict[int, int] = {}  # idents repeat across processes: a forked child has its parent's
        program = lines[-1]["program"]  # at fork or startup __main__ is not the program yet
        for line in lines:
            frames.extend(Frame(*entry) for entry in line["frames"])
            stacks.extend(tuple(stack) for stack in line["stacks"])
            names = line["threads"]
            for timestamp, thread_id, stack_id in line["samples"]:
                merged_id = merged_ids.get(thread_id)
                if merged_id is None:
                    merged_id = thread_id
                    while merged_id in used:
                        merged_id += 1
                    used.add(merged_id)
                    merged_ids[thread_id] = merged_id
                into.add_sample(
                    merged_id, [frames[i] for i in stacks[stack_id]], timestamp,
                    thread_name=process_thread_name(line["pid"], program, names.get(str(thread_id), "")),
                )
        for key, value in lines[-1]["stats"].items():  # the last line has the part's totals
            into.stats[key] = into.stats.get(key, 0) + int(value)


def _json_line(text: str) -> dict[str, Any] | None:
    try:
        line: dict[str, Any] = json.loads(text)
        return line
    except ValueError:
        return None


def process_thread_name(pid: int, program: str, thread: str) -> str:
    return f"{pid} {program}: {thread or '?'}"


def name_threads_by_process(profile: Profile, pid: int, program: str) -> None:
    for thread in profile.threads.values():
        thread.name = process_thread_name(pid, program, thread.name)


def looks_like_python(path: str) -> bool:
    """Whether an exec'd program will run the bootstrap: a Python
    interpreter, or a script whose #! line names one."""
    name = os.path.basename(path)
    if name.startswith("python") or os.path.realpath(path) == os.path.realpath(sys.executable):
        return True
    return names_python(first_line(path))


after_fork_in_child(ForkStage.RUN, _after_fork)
