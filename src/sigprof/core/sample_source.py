"""The process's one native sampler, shared by everything that profiles.

Transaction profiles, continuous-profiling chunks and profiling spans all
want samples at once, but only one native sampler can run per process. This
module owns it: consumers register, the sampler runs while any is registered
(and a little longer, so back-to-back users do not restart it), and a
housekeeping thread drains it about every two seconds and hands every batch to
every consumer.

Batches arrive interned. The frames and stacks of the current interning epoch
are kept here, in id order, so a consumer sees `tables.stacks[stack_id]`
without any per-sample resolution. An epoch ends when a consumer asks for a
reset (a chunk boundary); consumers that keep data across epochs (transaction
profiles) re-index what they use as batches arrive.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Protocol

from sigprof.core.drop_warning import DropWarning
from sigprof.core.housekeeping import HousekeepingThread, os_thread_rlock
from sigprof.core.process_life import ForkStage, after_fork_in_child
from sigprof.core.sampler import Batch, Frame, NativeUnavailable, Sampler, SamplerError

RawSample = tuple[int, int, int]  # (monotonic ns, thread id, stack id)

# How often the housekeeping thread drains the native buffer at most: each
# round takes the GIL from whichever thread runs (a forced hand-off; two
# seconds keeps them under one a second with the chunk cuts). What
# signal handlers take waits in the buffer, and a full one drops samples: the
# round comes sooner when, at the rate records arrived since the last drain,
# the buffer would be half full before then (at the default depth it holds
# 2048 records: 16 busy threads at 500 Hz fill half of it in 0.13 s), or
# when a periodic task asks for it (a chunk due, a session's linger ending).
DRAIN_INTERVAL_S = 2.0
FIRST_DRAIN_S = 0.25  # after a start, before the rate is known
MIN_ROUND_S = 0.01
# How long the sampler keeps running after its last consumer leaves.
SAMPLER_LINGER_S = 2.0
# Without a chunk session cutting epochs, the tables (here and in the native
# resolver) are still restarted this often, so a long-running service with
# transaction profiles only does not keep every stack it ever saw.
EPOCH_MAX_S = 60.0


class EpochTables:
    """Frames and stacks given since the last interning reset, by id."""

    def __init__(self) -> None:
        self.epoch = 0
        self.frames: list[Frame] = []
        self.stacks: list[tuple[int, ...]] = []

    def absorb(self, batch: Batch) -> None:
        # A restarted sampler counts ids from 0 again: that starts an epoch too.
        if batch.first_frame_id < len(self.frames) or batch.first_stack_id < len(self.stacks):
            self.new_epoch()
        if batch.first_frame_id != len(self.frames) or batch.first_stack_id != len(self.stacks):
            raise RuntimeError(
                f"sigprof: batch ids ({batch.first_frame_id}, {batch.first_stack_id}) do not "
                f"follow the tables ({len(self.frames)}, {len(self.stacks)})"
            )
        self.frames.extend(batch.frames)
        self.stacks.extend(batch.stacks)

    def new_epoch(self) -> None:
        self.epoch += 1
        self.frames = []
        self.stacks = []


class Consumer(Protocol):
    def feed(self, samples: list[RawSample], tables: EpochTables) -> None:
        """Called with the lock held, for every drained batch."""

    def epoch_ending(self, tables: EpochTables) -> None:
        """Called with the lock held, just before the tables are reset."""


class SampleSource:
    """Starts, drains and stops the shared native sampler for its consumers."""

    def __init__(self) -> None:
        self.lock = os_thread_rlock()
        self.frequency = 101.0
        self.clock = "wall"
        self.max_stack_depth = 128
        self.buffer_capacity: int | None = None  # None: the core's default
        self.sampler: Sampler | None = None
        self.tables = EpochTables()
        self._consumers: list[Consumer] = []
        self._idle_since: float | None = None
        self._last_drain = 0.0
        self._periodic: list[Callable[[], float | None]] = []
        self._drain_pause = DRAIN_INTERVAL_S  # until the next drain is due, from the last one
        self._arrived_at_drain = 0  # the buffer's records that had arrived at the last drain
        self._housekeeping = HousekeepingThread("sigprof.housekeeping", self._housekeep)
        self.on_native_unavailable: Callable[[NativeUnavailable], None] | None = None
        # Where warnings go; the Sentry wing points it at sentry-sdk's logger.
        self.logger = logging.getLogger("sigprof")
        self.last_error: str | None = None
        self.unavailable: str | None = None  # set once start() raised NativeUnavailable
        self._epoch_owner: Consumer | None = None
        self._epoch_started = 0.0
        self._pid = os.getpid()
        # Samples the native buffer dropped, over every run of the sampler;
        # consumers take differences of it at their chunk boundaries.
        self.dropped_total = 0
        self._dropped_in_run = 0
        self.drop_warning = DropWarning()
        # Who is told, at most once a minute, that samples were dropped: by
        # default a warning through the logger; `sigprof run` writes its own
        # line on stderr instead (see set_drop_reporter).
        self.report_dropped: Callable[[int, int], None] = self._log_dropped

    def configure(self, frequency: float, clock: str, max_stack_depth: int) -> None:
        """Applies from the next start of the sampler."""
        with self.lock:
            self.frequency, self.clock, self.max_stack_depth = frequency, clock, max_stack_depth

    def add_periodic(self, task: Callable[[], float | None]) -> None:
        """A task the housekeeping thread runs after each drain (chunk
        cutting); it returns the seconds until it wants the next round, or
        None (whenever the next drain comes)."""
        with self.lock:
            if task not in self._periodic:
                self._periodic.append(task)

    def remove_periodic(self, task: Callable[[], float | None]) -> None:
        with self.lock:
            if task in self._periodic:
                self._periodic.remove(task)

    def set_drop_reporter(self, report: Callable[[int, int], None] | None) -> None:
        """Who hears of dropped samples: report(unwarned, dropped_total);
        None restores the warning through the logger."""
        with self.lock:
            self.report_dropped = report if report is not None else self._log_dropped

    @property
    def running(self) -> bool:
        sampler = self.sampler
        return sampler is not None and sampler.running

    def acquire(self, consumer: Consumer, *, new_epoch: bool = False) -> bool:
        """Registers a consumer, starting the sampler if needed. With new_epoch,
        the consumer's first batch starts a fresh interning epoch. False if the
        native sampler could not start (the reason is in last_error)."""
        self.forget_if_forked()
        with self.lock:
            if self.unavailable is not None:
                return False
            if self.running:
                if new_epoch:
                    self._collect(reset=True)
            elif not self._start():
                return False
            self._consumers.append(consumer)
            if new_epoch:
                self._epoch_owner = consumer  # it cuts the epochs from now on
            self._idle_since = None
        self._housekeeping.wake()
        return True

    def release(self, consumer: Consumer, *, stop_if_last: bool = False) -> None:
        """Unregisters a consumer after giving it everything sampled so far.
        With stop_if_last, a sampler no one else reads stops now instead of
        lingering (`sigprof run` ends its recording: the export that follows
        is not the program's work)."""
        with self.lock:
            if consumer not in self._consumers:
                return
            stopping = stop_if_last and self._consumers == [consumer]
            if stopping:
                self._stop()  # its last batch still reaches the consumer
            else:
                self._collect(reset=False)
            self._consumers.remove(consumer)
            if self._epoch_owner is consumer:
                self._epoch_owner = None
            if not self._consumers and not stopping:
                self._idle_since = time.monotonic()
        self._housekeeping.wake()

    def wake_housekeeping(self) -> None:
        """A housekeeping round now (its periodic tasks then say when they
        next want one)."""
        self._housekeeping.wake()

    def mark_boundary(self) -> None:
        """See Sampler.mark_boundary: the calling thread crosses a boundary."""
        sampler = self.sampler
        if sampler is not None:
            sampler.mark_boundary()

    def collect(self, *, reset: bool = False) -> None:
        """Drains the sampler now and feeds every consumer."""
        with self.lock:
            self._collect(reset=reset)

    def to_unix_ns(self, timestamp_ns: int) -> int:
        sampler = self.sampler
        if sampler is None:
            return time.time_ns() - time.monotonic_ns() + timestamp_ns
        return sampler.to_unix_ns(timestamp_ns)

    def thread_names(self) -> dict[int, str]:
        sampler = self.sampler
        return sampler.thread_names() if sampler is not None else {}

    def stop_now(self) -> None:
        """Stops the sampler, whoever still holds it (exit, tests)."""
        with self.lock:
            self._collect(reset=False)
            self._consumers.clear()
            self._epoch_owner = None
            self._stop()

    def forget_if_forked(self) -> bool:
        """Forgets the parent's state in a process forked without running
        Python's fork hooks (uWSGI forks its workers from C, for one); True if
        it did. The lock is not taken: the parent's may be held by a thread
        that did not survive the fork."""
        if self._pid == os.getpid():
            return False
        self.forget_after_fork()
        return True

    def forget_after_fork(self) -> None:
        """In a forked child: no sampler runs, no consumer is alive."""
        self._pid = os.getpid()
        self.lock = os_thread_rlock()
        self.sampler = None
        self._consumers = []
        self._epoch_owner = None
        self.tables = EpochTables()
        self.report_dropped = self._log_dropped  # the parent's reporter has no one to tell
        self._housekeeping = HousekeepingThread("sigprof.housekeeping", self._housekeep)

    # ---- internals (lock held) ----

    def _start(self) -> bool:
        sampler = Sampler(
            self.frequency, self.clock, self.max_stack_depth, buffer_capacity=self.buffer_capacity
        )
        try:
            sampler.start()
        except NativeUnavailable as error:
            self.last_error = self.unavailable = str(error)
            if self.on_native_unavailable is not None:
                self.on_native_unavailable(error)
            return False
        except SamplerError as error:
            self.last_error = str(error)
            self.logger.warning("[Profiling] sigprof could not start sampling: %s", error)
            return False
        self.sampler = sampler
        self._dropped_in_run = 0
        self._arrived_at_drain = 0
        self._drain_pause = FIRST_DRAIN_S
        self.tables.new_epoch()
        self._last_drain = self._epoch_started = time.monotonic()
        self._housekeeping.ensure_running(os.getpid())
        return True

    def _stop(self) -> None:
        sampler = self.sampler
        if sampler is None:
            return
        if sampler.running:
            sampler.stop()
            batch = sampler.drain()
            self._count_drops(sampler)
            self._feed(batch, reset=False)
        self._idle_since = None

    def _collect(self, reset: bool) -> None:
        sampler = self.sampler
        if sampler is None:
            return
        # A stopped sampler cannot reset its ids; its next start does.
        reset = reset and sampler.running
        batch = sampler.drain(reset_interning=reset)
        self._count_drops(sampler)
        self._feed(batch, reset)
        now = time.monotonic()
        self._plan_next_drain(sampler, now - self._last_drain)
        self._last_drain = now
        if reset:
            self._epoch_started = self._last_drain

    def _plan_next_drain(self, sampler: Sampler, since_last_s: float) -> None:
        """The next drain in DRAIN_INTERVAL_S, or before the buffer would be
        half full at the rate records arrived since the last one."""
        arrived, capacity = sampler.ring_usage()
        rate = (arrived - self._arrived_at_drain) / max(since_last_s, MIN_ROUND_S)
        self._arrived_at_drain = arrived
        half_full_in = capacity / 2 / rate if rate > 0 else DRAIN_INTERVAL_S
        self._drain_pause = max(MIN_ROUND_S, min(DRAIN_INTERVAL_S, half_full_in))

    def _count_drops(self, sampler: Sampler) -> None:
        """Adds what the native buffer dropped since the last drain to
        dropped_total (before the batch is fed, so a chunk ending now counts
        it), and warns, at most once a minute."""
        dropped = sampler.dropped()
        new = dropped - self._dropped_in_run
        if new <= 0:
            return
        self._dropped_in_run = dropped
        self.dropped_total += new
        unwarned = self.drop_warning.count(new)
        if unwarned:
            self.report_dropped(unwarned, self.dropped_total)

    def _log_dropped(self, unwarned: int, dropped_total: int) -> None:
        self.logger.warning(
            "[Profiling] sigprof dropped %d samples: the native buffer was full "
            "(it was not drained for too long; %d dropped in this process so far)",
            unwarned,
            dropped_total,
        )

    def _stop_if_handler_replaced(self) -> bool:
        """Another profiler took SIGPROF over after the sampler started: stop,
        so sigprof's timers do not feed that profiler's handler (or kill the
        process, should it reset SIGPROF to its default), and say why."""
        sampler = self.sampler
        if sampler is None or not sampler.handler_replaced():
            return False
        self.last_error = (
            "another profiler (vmprof, yappi, ...) replaced sigprof's SIGPROF handler; "
            "sigprof stopped sampling"
        )
        self.logger.warning("[Profiling] %s", self.last_error)
        self._collect(reset=False)
        self._consumers.clear()
        self._epoch_owner = None
        self._stop()
        return True

    def _feed(self, batch: Batch, reset: bool) -> None:
        self.tables.absorb(batch)
        for consumer in list(self._consumers):
            consumer.feed(batch.samples, self.tables)
        if reset:
            for consumer in list(self._consumers):
                consumer.epoch_ending(self.tables)
            self.tables.new_epoch()

    def _housekeep(self) -> float | None:
        """One round of the housekeeping thread; returns seconds to sleep, or
        None to end the thread (the sampler stopped)."""
        with self.lock:
            if not self.running:
                self._housekeeping.mark_exiting()
                return None
            if self._stop_if_handler_replaced():
                self._housekeeping.mark_exiting()
                return None
            now = time.monotonic()
            epoch_due = self._epoch_owner is None and now - self._epoch_started >= EPOCH_MAX_S
            if epoch_due:
                self._collect(reset=True)
            elif now - self._last_drain >= self._drain_pause * 0.9:
                self._collect(reset=False)
            periodic = list(self._periodic)
        wishes = [task() for task in periodic]
        with self.lock:
            idle_since = self._idle_since
            idle_long_enough = (
                not self._consumers
                and idle_since is not None
                and time.monotonic() - idle_since >= SAMPLER_LINGER_S
            )
            if idle_long_enough:
                self._stop()
                self._housekeeping.mark_exiting()
                return None
            now = time.monotonic()
            due = [self._last_drain + self._drain_pause - now]
            due += [wish for wish in wishes if wish is not None]
            if self._epoch_owner is None:
                due.append(self._epoch_started + EPOCH_MAX_S - now)
            if idle_since is not None and not self._consumers:
                due.append(idle_since + SAMPLER_LINGER_S - now)
            return max(MIN_ROUND_S, min(due))


SOURCE = SampleSource()


after_fork_in_child(ForkStage.SAMPLE_SOURCE, SOURCE.forget_after_fork)
