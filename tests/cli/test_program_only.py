"""What `sigprof run` keeps of a profile: the program's samples, without
the launcher's frames at the root or the samples of its own hooks."""

from __future__ import annotations

import os
import runpy

import sigprof
from sigprof.core import process_life
from sigprof.core.sampler import Frame
from sigprof.formats.profile_model import Profile
from sigprof.local.recording import program_only

PACKAGE = os.path.dirname(os.path.abspath(sigprof.__file__))
LAUNCHER = [
    Frame("_run_module_code", runpy.__file__, "runpy", 1),
    Frame("_cmd_run", os.path.join(PACKAGE, "local", "cli.py"), "sigprof.local.cli", 1),
]
WORK = Frame("work", "/srv/app.py", "app", 3)
MAIN = Frame("<module>", "/srv/app.py", "app", 9)


def _names(profile: Profile) -> list[list[str]]:
    return [
        [frame.function for frame in profile.stack_frames(stack_id)]
        for thread in profile.threads.values()
        for _, stack_id, _ in thread.samples
    ]


def test_the_program_stays_and_the_hooks_go() -> None:
    profile = Profile(name="run", unit="samples")
    decorator = Frame("wrapper", os.path.join(PACKAGE, "sentry", "spans.py"),
                      "sigprof.sentry.spans", 5)
    terminate = Frame("_write_then_terminate", os.path.join(PACKAGE, "local", "subprocesses.py"),
                      "sigprof.local.subprocesses", 7)
    exec_hooks = Frame("run_exec_hooks", os.path.abspath(process_life.__file__),
                       "sigprof.core.process_life", 8)
    stop = Frame("stop", os.path.join(PACKAGE, "core", "sampler.py"), "sigprof.core.sampler", 2)
    profile.add_sample(1, [WORK, MAIN, *LAUNCHER], 1)
    profile.add_sample(1, [WORK, decorator, MAIN, *LAUNCHER], 2)  # @sigprof.profile() around work
    profile.add_sample(1, [stop, terminate, WORK, MAIN, *LAUNCHER], 3)  # SIGTERM's handler writing
    profile.add_sample(1, [stop, exec_hooks, MAIN, *LAUNCHER], 4)  # writing before an exec
    assert _names(program_only(profile, launcher="")) == [
        ["work", "<module>"],
        ["work", "wrapper", "<module>"],
    ]
