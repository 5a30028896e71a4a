"""The ``sigprof`` command: ``run`` profiles a program, ``view`` turns a
saved profile into the HTML flame graph, ``report`` merges a local chunk
directory into one view.

Exit codes: the profiled program's own for ``run``; 2 for a usage error or
a program that cannot start; 3 when the native sampler is unavailable; 1
when an output cannot be written or an input cannot be read.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import webbrowser
from collections.abc import Sequence
from datetime import datetime, timezone

import sigprof
from sigprof import formats as exports
from sigprof.chunks import local_chunks
from sigprof.core.process_life import before_exec, interrupt_thread_after
from sigprof.core.sampler import MAX_FREQUENCY, native_unavailable_reason
from sigprof.formats import EXTENSIONS, FORMATS, readers
from sigprof.formats.profile_model import Profile
from sigprof.local import subprocesses, summary
from sigprof.local.recording import Recorder
from sigprof.local.runner import Target, TargetError

EXIT_USAGE, EXIT_NATIVE, EXIT_IO = 2, 3, 1

# `sigprof run` options that take a value: the first other word is the program
_RUN_VALUE_OPTIONS = {"--frequency", "-f", "--clock", "-o", "--output", "--format", "--duration", "--threads"}


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _error(message: str) -> None:
    print(f"sigprof: error: {message}", file=sys.stderr)


# ---- argument parsing ----


def _frequency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_FREQUENCY:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {MAX_FREQUENCY} Hz")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


RUN_USAGE = "sigprof run [options] (script.py | -m module | program) [args ...]"


def _run_parser() -> argparse.ArgumentParser:
    run = argparse.ArgumentParser(
        prog="sigprof run", usage=RUN_USAGE,
        description="Run a Python program under the sampler and write its profile. "
                    "Everything after the script (or -m module) is the program's own arguments. "
                    "A program that is not Python (uwsgi, a shell script) runs as a child, "
                    "and the Python processes it starts are profiled.",
    )
    run.add_argument("-f", "--frequency", type=_frequency, default=101,
                     help=f"samples per second (default 101, at most {MAX_FREQUENCY})")
    run.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                     help="wall: every thread on every tick, waiting included (default); "
                          "cpu: only time spent on a CPU")
    run.add_argument("-o", "--output", metavar="PATH",
                     help="where to write the profile (default sigprof-NAME-TIME.EXT here)")
    run.add_argument("--format", default="html", metavar="FORMAT",
                     help="html (default), speedscope, collapsed, sentry or pprof")
    run.add_argument("--duration", type=_seconds, metavar="SECONDS",
                     help="stop after this many seconds: sampling ends, the program is "
                          "interrupted as by Ctrl-C, and the profile is written")
    run.add_argument("--threads", metavar="NAMES",
                     help="comma-separated thread names or ids to keep (wildcards allowed), "
                          "e.g. MainThread,worker-*")
    run.add_argument("--no-summary", action="store_true", help="do not print the top functions")
    run.add_argument("--subprocesses", action="store_true",
                     help="profile every Python process the program starts too, into the same output")
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigprof",
        description="A sampling profiler for Python programs and services.",
        epilog="Run `sigprof COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"sigprof {sigprof.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser(
        "run", help="profile a Python script or module", add_help=False,
        usage=RUN_USAGE,
    )

    view = commands.add_parser(
        "view", help="turn a saved profile into the HTML flame graph",
        description="Read a Sentry chunk or profile, speedscope JSON or collapsed stacks, "
                    "and write the HTML flame graph.",
    )
    view.add_argument("file")
    view.add_argument("-o", "--output", metavar="PATH", help="default: FILE with .html")
    view.add_argument("--open", action="store_true", help="open it in a web browser")

    report = commands.add_parser(
        "report", help="merge a directory of local chunks into one view",
        description="Merge the chunk files that sigprof's local continuous mode wrote "
                    f"(see {local_chunks.ENV_OUTPUT_DIR}) into one profile.",
    )
    report.add_argument("directory")
    report.add_argument("--since", metavar="TIME",
                        help="ISO time (2026-11-25T08:00, UTC unless an offset is given), "
                             "Unix seconds, or an age like 30m, 2h, 1d")
    report.add_argument("--until", metavar="TIME", help="same forms as --since")
    report.add_argument("-o", "--output", metavar="PATH", help="default: DIRECTORY/report.html")
    report.add_argument("--format", default="html", metavar="FORMAT",
                        help="html (default), speedscope, collapsed, sentry or pprof")
    report.add_argument("--open", action="store_true", help="open it in a web browser")
    return parser


def _split_run_argv(argv: Sequence[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """sigprof's options, then the script or `-m module`, then the
    program's own arguments, which sigprof never reads."""
    options: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if word == "-m" or (word.startswith("-m") and not word.startswith("--") and len(word) > 2):
            module = argv[index + 1] if word == "-m" and index + 1 < len(argv) else word[2:]
            if not module:
                raise CliError("-m needs a module name")
            rest = list(argv[index + (2 if word == "-m" else 1):])
            return options, None, module, rest
        if not word.startswith("-") or word == "-":
            break
        options.append(word)
        if word in _RUN_VALUE_OPTIONS and index + 1 < len(argv):
            options.append(argv[index + 1])
            index += 1
        index += 1
    if index >= len(argv):
        return options, None, None, []
    return options, argv[index], None, list(argv[index + 1:])


# ---- helpers ----


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise CliError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")


def _check_writable(path: str) -> None:
    """Fails before the program runs if the output cannot be written."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise CliError(f"output {path} is a directory; give a file name", EXIT_IO)
    if not os.path.isdir(directory):
        raise CliError(f"cannot write {path}: directory {directory} does not exist", EXIT_IO)
    if not os.access(directory, os.W_OK | os.X_OK) or (
        os.path.exists(path) and not os.access(path, os.W_OK)
    ):
        raise CliError(f"cannot write {path}: permission denied", EXIT_IO)


def _write(profile: Profile, fmt: str, path: str) -> None:
    try:
        exports.write_profile(profile, fmt, path)
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}", EXIT_IO) from None
    except ValueError as error:  # a profile the format cannot hold
        raise CliError(f"cannot write {path}: {error}", EXIT_IO) from None


def _open_in_browser(path: str) -> None:
    if not webbrowser.open("file://" + os.path.abspath(path)):
        print(f"sigprof: could not start a browser; open {path} yourself", file=sys.stderr)


def _native_unavailable_message(reason: str) -> str:
    return (
        f"the native sampler is unavailable: {reason}\n"
        "  Still working without it: `sigprof view FILE` and `sigprof report DIR` on profiles "
        "recorded elsewhere, and every export format."
    )


def _default_output(target: Target, fmt: str) -> str:
    """sigprof-NAME-YYYYmmdd-HHMMSS.EXT in the current directory."""
    name = target.display_name.removesuffix(".py")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return _unused_path(f"sigprof-{name}-{stamp}{EXTENSIONS[fmt]}")


def _unused_path(path: str) -> str:
    """A name sigprof chose never replaces a file: NAME-2.EXT, NAME-3.EXT... when taken."""
    extension = next((e for e in EXTENSIONS.values() if path.endswith(e)), os.path.splitext(path)[1])
    stem = path[: len(path) - len(extension)]  # out.speedscope.json: out
    candidate, number = path, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{stem}-{number}{extension}"
    return candidate


# ---- commands ----


def _cmd_run(argv: Sequence[str]) -> int:
    run_parser = _run_parser()
    option_words, script, module, program_args = _split_run_argv(argv)
    options = run_parser.parse_args(option_words)
    if script is None and module is None:
        run_parser.error("give a script to run, or -m MODULE")
    _check_format(options.format)
    target = Target(script, module, program_args)
    target.check()

    reason = native_unavailable_reason()
    if reason is not None:
        raise CliError(_native_unavailable_message(reason), EXIT_NATIVE)

    output = options.output or _default_output(target, options.format)
    _check_writable(output)
    patterns = [p.strip() for p in (options.threads or "").split(",") if p.strip()]

    from sigprof.local import runner

    if options.duration is not None and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Inherited as ignored (a background job of a shell script): the
        # duration's interrupt would never reach the program.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    progress = sys.stderr if sys.stderr.isatty() else None
    command = f"-m {target.module}" if target.module else (target.script or "")
    recorder = Recorder(
        options.frequency, options.clock,
        name=" ".join([command, *program_args]),
        progress=progress, warnings=sys.stderr,
    )
    # a program that is not Python can only be profiled in the Python processes it starts
    follow = options.subprocesses or target.command
    config = subprocesses.RunConfig(
        follow=follow, frequency=options.frequency, clock=options.clock,
        output=os.path.abspath(output), format=options.format, threads=patterns,
        summary=not options.no_summary, name=recorder.profile.name,
        program=target.display_name, launcher=recorder.launcher, root_pid=os.getpid(),
    )
    directory = subprocesses.RunDirectory.create(config)
    try:
        recorder.start()
    except (sigprof.SamplerError, sigprof.NativeUnavailable) as error:
        directory.remove()
        raise CliError(f"cannot start sampling: {error}", EXIT_NATIVE) from None
    subprocesses.watch_children(directory, follow)
    main_thread = threading.main_thread().native_id or os.getpid()
    started, cpu_at_start = time.monotonic(), _cpu_seconds(follow)
    before_exec(lambda path: _on_exec(path, recorder, directory, config, started, cpu_at_start))
    subprocesses.write_before_termination(
        lambda: _on_terminate(recorder, directory, config, started, cpu_at_start))
    interrupt_here = options.duration is not None and not target.command
    if interrupt_here:
        # a real SIGINT to the main thread, so a blocking sleep or read wakes up
        interrupt_thread_after(main_thread, options.duration)
    code = runner.run(target, interrupt_after=None if interrupt_here else options.duration)
    subprocesses.write_before_termination(None)  # the program ended: the profile is written below
    if interrupt_here:
        interrupt_thread_after(main_thread, 0)  # the program ended first
    if os.getpid() != config.root_pid:
        # a child the program forked is leaving through our code: it exits as
        # it would have; the profile is the parent's to write, not this copy's
        return code
    profile = recorder.stop()
    if target.command:
        profile = profile.select_threads([])  # this process only waited: the command's are in the parts
    duration_reached = options.duration is not None and time.monotonic() - started >= options.duration
    if duration_reached and code == 130:
        code = 0  # our own interrupt, not the program failing
    try:
        _finish_run(profile, config, directory, recorder.dropped_told, skip_pid=config.root_pid,
                    cpu_seconds=_cpu_seconds(config.follow) - cpu_at_start)
    finally:
        directory.remove()
    return code


def _cpu_seconds(with_children: bool) -> float:
    """This process's CPU time (with --subprocesses, its children's too,
    once waited for): what a wall-clock profile's waiting share is read from."""
    times = os.times()
    own = times.user + times.system
    return own + times.children_user + times.children_system if with_children else own


def _finish_run(
    profile: Profile, config: subprocesses.RunConfig, directory: subprocesses.RunDirectory,
    dropped_told: int, skip_pid: int | None, cpu_seconds: float | None = None,
) -> None:
    """The run's one output: this process's profile, and with
    --subprocesses every child's part; then the summary and the notes."""
    from sigprof.local.recording import dropped_message, program_only

    if config.follow:
        subprocesses.name_threads_by_process(profile, os.getpid(), config.program)
        subprocesses.read_parts(directory, profile, skip_pid=skip_pid)
        profile = program_only(profile, config.launcher)
    if config.threads:
        # with --subprocesses a name is "PID PROGRAM: THREAD": a pattern without
        # the process matches the thread's name in every process
        patterns = list(config.threads)
        if config.follow:
            patterns += [f"*: {pattern}" for pattern in config.threads if ": " not in pattern]
        selected = profile.select_threads(patterns)
        if not selected.threads and profile.threads:
            seen = ", ".join(f"{t.name or '?'} ({t.thread_id})" for t in profile.threads.values())
            print(f"sigprof: warning: --threads {','.join(config.threads)!r} matched no thread; "
                  f"the threads sampled: {seen}", file=sys.stderr)
        profile = selected
        cpu_seconds = None  # the CPU time is every thread's
    _write(profile, config.format, config.output)
    if config.summary:
        print(summary.table(profile, cpu_seconds=cpu_seconds), file=sys.stderr)
    if profile.stats.get("dropped", 0) > dropped_told:
        print(f"sigprof: warning: {dropped_message(profile.stats['dropped'])}", file=sys.stderr)
    children = directory.python_children()
    if children:
        why = (
            "sigprof could not start in them (an interpreter without this sigprof?)" if config.follow
            else "`sigprof run --subprocesses` follows them"
        )
        print(f"sigprof: {children} child process{'es' if children > 1 else ''} ran Python, "
              f"not profiled: {why}", file=sys.stderr)
    print(f"sigprof: wrote {summary.relative(config.output)}", file=sys.stderr)


def _on_exec(
    path: str, recorder: Recorder, directory: subprocesses.RunDirectory,
    config: subprocesses.RunConfig, started: float, cpu_at_start: float,
) -> None:
    """The program is about to exec: the profile up to now is written.
    With --subprocesses an exec'd Python program is recorded on, and
    writes the output again, with everything, as it ends."""
    if os.getpid() != config.root_pid:
        return  # a forked child: its own exec hook writes its part
    profile = recorder.stop()
    follow_on = config.follow and subprocesses.looks_like_python(path)
    if follow_on:
        subprocesses.PartWriter(directory).append(profile, config.program, profile.stats)
    _write_so_far(profile, recorder, directory, config, cpu_at_start,
                  f"the program exec'd {path} after {time.monotonic() - started:.1f} s; "
                  "the profile up to the exec:")
    if follow_on:
        print(f"sigprof: --subprocesses: {path} goes on being profiled into the same output",
              file=sys.stderr)
    else:
        directory.remove()
    sys.stderr.flush()


def _on_terminate(
    recorder: Recorder, directory: subprocesses.RunDirectory, config: subprocesses.RunConfig,
    started: float, cpu_at_start: float,
) -> None:
    """SIGTERM at its default is ending the program: the profile up to now
    is written first."""
    profile = recorder.stop()
    if config.follow:
        subprocesses.wait_for_ending_children(1.0)
    try:
        _write_so_far(profile, recorder, directory, config, cpu_at_start,
                      f"the program was terminated (SIGTERM) after {time.monotonic() - started:.1f} s; "
                      "the profile up to then:")
    finally:
        directory.remove()
    sys.stderr.flush()


def _write_so_far(
    profile: Profile, recorder: Recorder, directory: subprocesses.RunDirectory,
    config: subprocesses.RunConfig, cpu_at_start: float, headline: str,
) -> None:
    """The output of a program that has not ended (it is about to exec, or
    a signal ends it), after a line saying so."""
    print(f"sigprof: {headline}", file=sys.stderr)
    try:
        _finish_run(profile, config, directory, recorder.dropped_told, skip_pid=config.root_pid,
                    cpu_seconds=_cpu_seconds(config.follow) - cpu_at_start)
    except CliError as error:
        _error(str(error))


def finish_after_exec(directory: subprocesses.RunDirectory, config: subprocesses.RunConfig) -> None:
    """In the Python program that replaced the run's own process by exec,
    as it ends: the output, with every part."""
    profile = Profile(name=config.name, unit="samples", interval_ns=int(1e9 / config.frequency),
                      clock=config.clock)
    try:
        _finish_run(profile, config, directory, 0, skip_pid=None)
    except CliError as error:
        _error(str(error))
    finally:
        directory.remove()


def _cmd_view(options: argparse.Namespace) -> int:
    try:
        profile = readers.load(options.file)
    except readers.UnreadableProfile as error:
        raise CliError(str(error), EXIT_IO) from None
    # a.pyspy.json -> a.pyspy.html: only the last extension goes, so that
    # a.pyspy.json and a.sigprof.json never write the same file
    output = options.output or _unused_path(os.path.splitext(options.file)[0] + ".html")
    if os.path.abspath(output) == os.path.abspath(options.file):
        output = options.file + ".html"
    _check_writable(output)
    _write(profile, "html", output)
    print(output)
    if options.open:
        _open_in_browser(output)
    return 0


def parse_time(text: str, now: float | None = None) -> int:
    """A point in time as Unix ns: an ISO date-time (UTC unless it says
    otherwise), Unix seconds, or an age back from now: 90s, 30m, 2h, 1d."""
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip()
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return int((now - float(value[:-1]) * units[value[-1]]) * 1e9)
    try:
        return round(float(value) * 1e6) * 1000  # a double holds Unix time to about a microsecond
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"cannot read the time {text!r}: use 2026-11-25T08:00, Unix seconds, or 30m / 2h / 1d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1e9)


def _cmd_report(options: argparse.Namespace) -> int:
    _check_format(options.format)
    if not os.path.isdir(options.directory):
        raise CliError(f"not a directory: {options.directory}", EXIT_IO)
    since = parse_time(options.since) if options.since else None
    until = parse_time(options.until) if options.until else None
    merged = local_chunks.read_directory(options.directory, since, until)
    if merged.files_read == 0:
        raise CliError(f"no sigprof chunk files in {options.directory}", EXIT_IO)
    for problem in merged.problems:
        print(f"sigprof: skipped {problem}", file=sys.stderr)
    output = options.output or os.path.join(options.directory, "report" + EXTENSIONS[options.format])
    _check_writable(output)
    profile = merged.profile
    if not profile.sample_count():
        print("sigprof: no samples in that time range", file=sys.stderr)
    _write(profile, options.format, output)
    print(summary.table(profile), file=sys.stderr)
    print(output)
    if options.open and options.format == "html":
        _open_in_browser(output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "run":
            return _cmd_run(args[1:])
        parser = _parser()
        options = parser.parse_args(args)
        if options.command == "view":
            return _cmd_view(options)
        if options.command == "report":
            return _cmd_report(options)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except (CliError, TargetError) as error:
        _error(str(error))
        return error.code if isinstance(error, CliError) else EXIT_USAGE
