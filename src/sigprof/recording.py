"""Records a profile from a running Sampler for ``sigprof run``: drains the
sampler every quarter second (so its buffer does not fill), keeps a live
progress line on stderr, and can end the run after a set duration."""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from typing import Callable, TextIO

import sigprof
from sigprof.profile_model import Profile, ProfileBuilder, strip_root_frames
from sigprof.sampler import Frame, Sampler
from sigprof.summary import progress_line

DRAIN_INTERVAL_S = 0.25  # as the Sentry layer's: the native buffer holds 2048 by default
# At most one "samples dropped" line this often while the program runs.
DROP_WARNING_INTERVAL_S = 60.0
_SIGPROF_DIR = os.path.dirname(os.path.abspath(sigprof.__file__)) + os.sep


def dropped_message(dropped: int) -> str:
    return (
        f"{dropped} samples dropped: the native buffer was full (something held the GIL "
        "too long for sigprof to drain it)"
    )


class Recorder:
    def __init__(
        self,
        sampler: Sampler,
        name: str,
        progress: TextIO | None = None,
        duration_s: float | None = None,
        on_duration: Callable[[], None] | None = None,
        warnings: TextIO | None = None,
    ) -> None:
        self.sampler = sampler
        self.profile = Profile(
            name=name, unit="samples", interval_ns=int(1e9 / sampler.frequency), clock=sampler.clock,
        )
        self._builder = ProfileBuilder(self.profile, sampler.to_unix_ns)
        self._progress = progress
        self._duration_s = duration_s
        self._on_duration = on_duration
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._kept = 0
        self._warnings = warnings
        self.dropped_told = 0  # the count the last warning line gave
        self._last_drop_warning: float | None = None
        self.duration_reached = False
        # the launcher that started us (bin/sigprof, or sigprof/__main__.py)
        self._launcher = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""

    def start(self) -> None:
        self.sampler.start()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="sigprof-recorder", daemon=True)
        self._thread.start()
        if self._thread.ident is not None:
            # our own thread sleeps in wait(): not the user's time
            self._builder.exclude_threads.add(self._thread.ident)

    def stop(self) -> Profile:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sampler.stop()
        with self._lock:
            self._drain()
        if self._progress is not None:
            self._progress.write("\r\033[K")
            self._progress.flush()
        stats = self.sampler.stats()
        self.profile.stats = {
            key: int(stats[key]) for key in ("samples", "dropped", "unresolved_frames", "truncated")
        }
        return strip_root_frames(self.profile, self._is_launcher_frame)

    def _drain(self) -> None:
        batch = self.sampler.drain()
        self._kept += self._builder.add(batch, self.sampler.thread_names())

    def _loop(self) -> None:
        while not self._stop.wait(DRAIN_INTERVAL_S):
            with self._lock:
                self._drain()
            elapsed = time.monotonic() - self._started
            dropped = self.sampler.dropped()
            if self._progress is not None:
                self._progress.write("\r" + progress_line(elapsed, self._kept, dropped) + "\033[K")
                self._progress.flush()
            else:
                self._warn_dropped(dropped)
            if self._duration_s is not None and elapsed >= self._duration_s and not self.duration_reached:
                self.duration_reached = True
                self.sampler.stop()
                if self._on_duration is not None:
                    self._on_duration()

    def _warn_dropped(self, dropped: int) -> None:
        """A line when samples were dropped, at most once a minute (the live
        progress line, on a terminal, shows the count instead)."""
        now = time.monotonic()
        last = self._last_drop_warning
        if self._warnings is None or dropped <= self.dropped_told:
            return
        if last is not None and now - last < DROP_WARNING_INTERVAL_S:
            return
        self._warnings.write(f"sigprof: warning: {dropped_message(dropped)}\n")
        self._warnings.flush()
        self.dropped_told = dropped
        self._last_drop_warning = now

    def _is_launcher_frame(self, frame: Frame) -> bool:
        filename = frame.filename
        return (
            filename.startswith(_SIGPROF_DIR)
            or filename == runpy.__file__
            or filename == "<frozen runpy>"
            or (bool(self._launcher) and filename == self._launcher)
        )
