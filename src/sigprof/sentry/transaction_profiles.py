"""Transaction profiles (format v1) filled from the native sampler: sentry-sdk
2.x only (3.x removed them; importing this module there raises ImportError).

sentry-sdk decides, builds and sends transaction profiles through its
`Profile` class and a `Scheduler` it keeps in
`sentry_sdk.profiler.transaction_profiler._scheduler`. sigprof keeps every
decision of the SDK (`profiles_sample_rate`, `profiles_sampler`, the lost-event
outcomes, `active_thread_id`, the JSON it sends) by subclassing `Profile`, and
only replaces where samples come from: instead of a Python thread walking
`sys._current_frames()` 101 times a second, the profile registers with the
shared native sampler and receives interned batches.

Per sample, a profile does O(1) work (a time-window check, a dict lookup of
the stack id and one output dict); frames and stacks are re-indexed only the
first time the profile meets them.
"""

from __future__ import annotations

from typing import Any

from sentry_sdk.profiler import transaction_profiler as sdk_profiler
from sentry_sdk.utils import logger, nanosecond_time

from sigprof.core.sample_source import SOURCE, EpochTables, RawSample
from sigprof.core.sampler import Frame
from sigprof.formats.sentry_frames import FrameConverter
from sigprof.sentry import sdk_api
from sigprof.sentry.envelopes import prepare_transport
from sigprof.sentry.sampling import transaction_profile_sampled

MAX_PROFILE_DURATION_NS = sdk_profiler.MAX_PROFILE_DURATION_NS
PROFILE_MINIMUM_SAMPLES = sdk_profiler.PROFILE_MINIMUM_SAMPLES


class NativeProfile(sdk_profiler.Profile):
    """sentry-sdk's Profile, fed by the native sampler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = -1
        self._local_stacks: dict[int, int] = {}
        self._local_frames: dict[int, int] = {}
        self._frame_by_value: dict[Frame, int] = {}
        self._stack_by_value: dict[tuple[int, ...], int] = {}
        self._thread_keys: dict[int, str] = {}
        self._samples_per_thread: dict[int, int] = {}
        self._registered = False
        self._converter = FrameConverter()

    # ---- lifecycle, called by sentry-sdk ----

    def _set_initial_sampling_decision(self, sampling_context: Any) -> None:
        sdk_decision = super()._set_initial_sampling_decision
        if not transaction_profile_sampled(lambda: sdk_decision(sampling_context)):
            self.sampled = False

    def start(self) -> None:
        super().start()  # hands itself to the scheduler when sampled

    def stop(self) -> None:
        was_active = self.active
        super().stop()
        if was_active:
            self._finish_sampling()

    def valid(self) -> bool:
        # A transaction finished without leaving its `with` block never
        # stopped its profile: take what was sampled up to now.
        if self._registered:
            self._finish_sampling()
        return bool(super().valid())

    def process(self) -> Any:
        names = SOURCE.thread_names()
        return {
            "frames": self.frames,
            "stacks": self.stacks,
            "samples": self.samples,
            "thread_metadata": {
                key: {"name": names.get(tid, "")} for tid, key in self._thread_keys.items()
            },
        }

    # ---- sample source consumer ----

    def register(self) -> None:
        if SOURCE.acquire(self):
            self._registered = True
            prepare_transport()

    def feed(self, samples: list[RawSample], tables: EpochTables) -> None:
        if not self.active and not self.stop_ns:
            return
        if tables.epoch != self._epoch:
            self._epoch = tables.epoch
            self._local_stacks = {}
            self._local_frames = {}
        start_ns = self.start_ns
        end_ns = self.stop_ns or (1 << 63)
        cap_ns = start_ns + MAX_PROFILE_DURATION_NS
        local_stacks = self._local_stacks
        stacks = self.stacks
        out = self.samples
        thread_keys = self._thread_keys
        counts = self._samples_per_thread
        over_cap = False
        for timestamp_ns, thread_id, stack_id in samples:
            if timestamp_ns < start_ns or timestamp_ns > end_ns:
                continue
            if timestamp_ns > cap_ns:
                over_cap = True
                continue
            local = local_stacks.get(stack_id)
            if local is None:
                local = self._add_stack(stack_id, tables)
            key = thread_keys.get(thread_id)
            if key is None:
                key = thread_keys[thread_id] = str(thread_id)
            if stacks[local]:  # Sentry counts only samples with frames
                counts[thread_id] = counts.get(thread_id, 0) + 1
            out.append(
                {
                    "elapsed_since_start_ns": str(timestamp_ns - start_ns),
                    "thread_id": key,
                    "stack_id": local,
                }
            )
        # sentry-sdk counts sampler ticks; the busiest thread's sample count
        # is the same number for a wall-clock sampler. Samples without frames
        # do not count: Sentry rejects a profile that has only those.
        self.unique_samples = max(counts.values(), default=0)
        if over_cap:
            # The SDK stops a profile at its first sample past 30 s.
            logger.debug("[Profiling] Profile stopped at the 30 s cap")
            self.active = False
            self.stop_ns = min(self.stop_ns or cap_ns, cap_ns)

    def epoch_ending(self, tables: EpochTables) -> None:
        pass

    # ---- internals ----

    def _finish_sampling(self) -> None:
        if not self._registered:
            return
        self._registered = False
        if not self.stop_ns:
            self.stop_ns = nanosecond_time()
        SOURCE.release(self)  # feeds the last samples first

    def _add_stack(self, stack_id: int, tables: EpochTables) -> int:
        # Native ids restart with each interning epoch; the profile's own
        # indexes are keyed by value, so a frame or stack met again in a new
        # epoch is not sent twice.
        local_frames = self._local_frames
        frames: list[Any] = self.frames
        indexes = []
        for frame_id in tables.stacks[stack_id]:
            index = local_frames.get(frame_id)
            if index is None:
                frame = tables.frames[frame_id]
                index = self._frame_by_value.get(frame)
                if index is None:
                    index = self._frame_by_value[frame] = len(frames)
                    frames.append(self._converter.convert(frame))
                local_frames[frame_id] = index
            indexes.append(index)
        key = tuple(indexes)
        local = self._stack_by_value.get(key)
        if local is None:
            local = self._stack_by_value[key] = len(self.stacks)
            self.stacks.append(indexes)
        self._local_stacks[stack_id] = local
        return local


class NativeTransactionScheduler(sdk_profiler.Scheduler):
    """Where sentry-sdk's transaction profiles go to be sampled."""

    mode = "sigprof"  # type: ignore[assignment]

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def make_sampler(self) -> Any:
        # The native sampler does the sampling; nothing runs in Python.
        return lambda *args, **kwargs: None

    def start_profiling(self, profile: sdk_profiler.Profile) -> None:
        if isinstance(profile, NativeProfile):
            profile.register()
        else:  # a Profile made before sigprof was set up: it gets no samples
            logger.debug("[Profiling] sigprof cannot sample a %r", type(profile))


def setup_native_profiler(options: dict[str, Any]) -> bool:
    """Replaces sentry-sdk's setup_profiler(): installs the native scheduler."""
    current = sdk_api.transaction_scheduler()
    if isinstance(current, NativeTransactionScheduler):
        logger.debug("[Profiling] Profiler is already setup")
        return False
    if current is not None:
        current.teardown()
    if options.get("profiler_mode") not in (None, "thread", "gevent", "sleep"):
        raise ValueError("Unknown profiler mode: {}".format(options.get("profiler_mode")))
    sdk_api.set_transaction_scheduler(NativeTransactionScheduler(frequency=int(SOURCE.frequency)))
    logger.debug("[Profiling] Setting up profiler in sigprof (native) mode")
    return True


def teardown_native_profiler() -> None:
    if isinstance(sdk_api.transaction_scheduler(), NativeTransactionScheduler):
        sdk_api.set_transaction_scheduler(None)


def active_native_profile(transaction: Any) -> NativeProfile | None:
    """The transaction's profile if sigprof is sampling it right now."""
    profile = sdk_api.transaction_profile(transaction)
    if isinstance(profile, NativeProfile) and profile.active and profile.sampled:
        return profile
    return None
