"""Records a profile for ``sigprof run``: a consumer of the process's one
sample source (core/sample_source.py), as Sentry's sessions, transaction
profiles and profiling spans are, so a program that also profiles into
Sentry feeds both from the same samples. Keeps a live progress line on
stderr."""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from typing import Callable, TextIO

import sigprof
from sigprof.core import process_life
from sigprof.core.sample_source import SOURCE, EpochTables, RawSample
from sigprof.core.sampler import Batch, Frame, SamplerError, check_clock, check_frequency
from sigprof.formats.profile_model import Profile, ProfileBuilder, strip_root_frames
from sigprof.local.summary import progress_line

_SIGPROF_DIR = os.path.dirname(os.path.abspath(sigprof.__file__)) + os.sep
_RUN_HOOK_DIR = os.path.join(_SIGPROF_DIR, "local") + os.sep
_PROCESS_LIFE_FILE = os.path.abspath(process_life.__file__)


def dropped_message(dropped: int) -> str:
    return (
        f"{dropped} samples dropped: the native buffer was full (something held the GIL "
        "too long for sigprof to drain it)"
    )


def program_only(profile: Profile, launcher: str) -> Profile:
    """The program's own samples: the launcher's frames at the root go, and
    so do the samples taken in the hooks `sigprof run` puts in the program's
    way (at exit, exec, `os._exit` and termination: writing the profile).
    sigprof's other frames stay: a function under `@sigprof.profile()` runs
    inside one."""
    return strip_root_frames(profile, launcher_frames(launcher)).without_samples_in(_in_run_hook)


def _in_run_hook(frame: Frame) -> bool:
    return frame.filename.startswith(_RUN_HOOK_DIR) or frame.filename == _PROCESS_LIFE_FILE


def launcher_frames(launcher: str) -> Callable[[Frame], bool]:
    """Whether a frame is the launcher's (sigprof's, runpy's, the script
    that started sigprof), not the program's."""

    def is_launcher_frame(frame: Frame) -> bool:
        filename = frame.filename
        return (
            filename.startswith(_SIGPROF_DIR)
            or filename == runpy.__file__
            or filename == "<frozen runpy>"
            or (bool(launcher) and filename == launcher)
        )

    return is_launcher_frame


class Recorder:
    """Reads the shared sample source from start() to stop(). The sampler's
    frequency and clock are the ones asked for, unless another consumer
    (a Sentry session of the program) already runs it: then its settings
    hold, and the profile says which."""

    def __init__(
        self,
        frequency: float,
        clock: str,
        name: str,
        progress: TextIO | None = None,
        warnings: TextIO | None = None,
    ) -> None:
        self._frequency, self._clock = check_frequency(frequency), check_clock(clock)
        self.profile = Profile(name=name, unit="samples")
        self._builder = ProfileBuilder(self.profile, SOURCE.to_unix_ns)
        self._epoch = -1
        self._frames_seen = 0  # of the current epoch's tables
        self._stacks_seen = 0
        self._progress = progress
        # a progress line running late must not follow stop()'s clearing
        self._progress_lock = threading.Lock()
        self._recording = False
        self._warnings = warnings
        self._started = 0.0
        self._kept = 0
        self._dropped_before = 0  # SOURCE.dropped_total when recording began
        self.dropped_told = 0  # the count the last warning line gave
        # the launcher that started us (bin/sigprof, or sigprof/__main__.py)
        self.launcher = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""

    def start(self) -> None:
        """Raises SamplerError or NativeUnavailable when sampling cannot start."""
        with SOURCE.lock:
            if not SOURCE.running:
                SOURCE.configure(self._frequency, self._clock, SOURCE.max_stack_depth)
            self._dropped_before = SOURCE.dropped_total
            SOURCE.set_drop_reporter(self._report_dropped)
            if not SOURCE.acquire(self):
                SOURCE.set_drop_reporter(None)
                raise SamplerError(SOURCE.last_error or "the native sampler did not start")
            sampler = SOURCE.sampler
            assert sampler is not None  # acquire() started it
            self.profile.interval_ns = int(1e9 / sampler.frequency)
            self.profile.clock = sampler.clock
        self._started = time.monotonic()
        self._recording = True
        SOURCE.add_periodic(self._show_progress)

    def stop(self) -> Profile:
        SOURCE.remove_periodic(self._show_progress)
        with self._progress_lock:
            self._recording = False
        with SOURCE.lock:
            SOURCE.release(self, stop_if_last=True)
            self.profile.stats = self.totals()
            SOURCE.set_drop_reporter(None)
        if self._progress is not None:
            self._progress.write("\r\033[K")
            self._progress.flush()
        return program_only(self.profile, self.launcher)

    def totals(self) -> dict[str, int]:
        """The sampler's counters, and the samples dropped while recording."""
        with SOURCE.lock:
            sampler = SOURCE.sampler
            stats = sampler.stats() if sampler is not None else {}
            totals = {key: int(stats.get(key, 0)) for key in ("samples", "unresolved_frames", "truncated")}
            totals["dropped"] = SOURCE.dropped_total - self._dropped_before
        return totals

    # ---- sample source consumer (called with SOURCE.lock held) ----

    def feed(self, samples: list[RawSample], tables: EpochTables) -> None:
        if tables.epoch != self._epoch:
            self._epoch, self._frames_seen, self._stacks_seen = tables.epoch, 0, 0
        # What the tables gained since the last feed, as a drain() batch: the
        # builder maps the epoch's ids onto the profile's, restarting at 0.
        batch = Batch(
            self._frames_seen, tables.frames[self._frames_seen:],
            self._stacks_seen, tables.stacks[self._stacks_seen:],
            samples,
        )
        self._frames_seen, self._stacks_seen = len(tables.frames), len(tables.stacks)
        self._kept += self._builder.add(batch, SOURCE.thread_names())
        self._after_feed()

    def _after_feed(self) -> None:
        """What a subclass does with the profile after each batch."""

    def epoch_ending(self, tables: EpochTables) -> None:
        pass  # feed() notices the next epoch by its number

    # ---- the user's view ----

    def _show_progress(self) -> None:
        """Run by the housekeeping thread after each drain."""
        if self._progress is None:
            return
        with self._progress_lock:
            if not self._recording:
                return
            elapsed = time.monotonic() - self._started
            dropped = SOURCE.dropped_total - self._dropped_before
            self._progress.write("\r" + progress_line(elapsed, self._kept, dropped) + "\033[K")
            self._progress.flush()

    def _report_dropped(self, unwarned: int, dropped_total: int) -> None:
        """The sample source's once-a-minute drop warning, as a line of
        `sigprof run` (on a terminal the progress line shows the count)."""
        if self._progress is not None or self._warnings is None:
            return
        dropped = dropped_total - self._dropped_before
        self._warnings.write(f"sigprof: warning: {dropped_message(dropped)}\n")
        self._warnings.flush()
        self.dropped_told = dropped
