"""The process's one native sampler, shared by everything that profiles.

Transaction profiles, continuous-profiling chunks and profiling spans all
want samples at once, but only one native sampler can run per process. This
module owns it: consumers register, the sampler runs while any is registered
(and a little longer, so back-to-back users do not restart it), and a
housekeeping thread drains it four times a second and hands every batch to
every consumer.

Batches arrive interned. The frames and stacks of the current interning epoch
are kept here, in id order, so a consumer sees `tables.stacks[stack_id]`
without any per-sample resolution. An epoch ends when a consumer asks for a
reset (a chunk boundary); consumers that keep data across epochs (transaction
profiles) re-index what they use as batches arrive.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Protocol

from sigprof.housekeeping import HousekeepingThread, os_thread_rlock
from sigprof.sampler import Batch, Frame, NativeUnavailable, Sampler, SamplerError

RawSample = tuple[int, int, int]  # (monotonic ns, thread id, stack id)

# How often the housekeeping thread drains the native buffer. What signal
# handlers take waits there, and a full buffer drops samples: at the default
# depth it holds 2048, a quarter second of 16 busy threads at 500 Hz.
DRAIN_INTERVAL_S = 0.25
# How long the sampler keeps running after its last consumer leaves.
SAMPLER_LINGER_S = 2.0
# Without a chunk session cutting epochs, the tables (here and in the native
# resolver) are still restarted this often, so a long-running service with
# transaction profiles only does not keep every stack it ever saw.
EPOCH_MAX_S = 60.0
HOUSEKEEPING_ROUND_S = 0.25
# At most one "samples dropped" warning this often; later drops are summed.
DROP_WARNING_INTERVAL_S = 60.0


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
        self._periodic: list[Callable[[], None]] = []
        self._housekeeping = HousekeepingThread("sigprof.housekeeping", self._housekeep)
        self.on_native_unavailable: Callable[[NativeUnavailable], None] | None = None
        self.last_error: str | None = None
        self.unavailable: str | None = None  # set once start() raised NativeUnavailable
        self._epoch_owner: Consumer | None = None
        self._epoch_started = 0.0
        self._pid = os.getpid()
        # Samples the native buffer dropped, over every run of the sampler;
        # consumers take differences of it at their chunk boundaries.
        self.dropped_total = 0
        self._dropped_in_run = 0
        self._unwarned_drops = 0
        self._last_drop_warning: float | None = None

    def configure(self, frequency: float, clock: str, max_stack_depth: int) -> None:
        """Applies from the next start of the sampler."""
        with self.lock:
            self.frequency, self.clock, self.max_stack_depth = frequency, clock, max_stack_depth

    def add_periodic(self, task: Callable[[], None]) -> None:
        """A task the housekeeping thread runs after each drain (chunk cutting)."""
        with self.lock:
            if task not in self._periodic:
                self._periodic.append(task)

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

    def release(self, consumer: Consumer) -> None:
        """Unregisters a consumer after giving it everything sampled so far."""
        with self.lock:
            if consumer not in self._consumers:
                return
            self._collect(reset=False)
            self._consumers.remove(consumer)
            if self._epoch_owner is consumer:
                self._epoch_owner = None
            if not self._consumers:
                self._idle_since = time.monotonic()
        self._housekeeping.wake()

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
            from sentry_sdk.utils import logger

            logger.warning("[Profiling] sigprof could not start sampling: %s", error)
            return False
        self.sampler = sampler
        self._dropped_in_run = 0
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
        self._last_drain = time.monotonic()
        if reset:
            self._epoch_started = self._last_drain

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
        self._unwarned_drops += new
        now = time.monotonic()
        last = self._last_drop_warning
        if last is None or now - last >= DROP_WARNING_INTERVAL_S:
            from sentry_sdk.utils import logger

            logger.warning(
                "[Profiling] sigprof dropped %d samples: the native buffer was full "
                "(it was not drained for too long; %d dropped in this process so far)",
                self._unwarned_drops,
                self.dropped_total,
            )
            self._unwarned_drops = 0
            self._last_drop_warning = now

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
        from sentry_sdk.utils import logger

        logger.warning("[Profiling] %s", self.last_error)
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
            if self._epoch_owner is None and now - self._epoch_started >= EPOCH_MAX_S:
                self._collect(reset=True)
            elif now - self._last_drain >= DRAIN_INTERVAL_S * 0.9:
                self._collect(reset=False)
            periodic = list(self._periodic)
        for task in periodic:
            task()
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
            # Short rounds: the chunk session's linger and 60 s cut are checked here.
            return HOUSEKEEPING_ROUND_S


SOURCE = SampleSource()


def _forget_in_child() -> None:
    SOURCE.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
