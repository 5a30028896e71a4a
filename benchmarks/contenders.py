"""The profilers under comparison, behind one small interface.

Each contender is set up, started, stopped and asked for what it collected,
normalised to samples ``(thread_id, function names, weight)``. ``mode`` says
which ground truth its samples are compared against: "wall" profilers sample
every thread at every tick, "cpu" profilers sample a thread only while it
burns CPU.

sigprof is driven through its Sentry drop-in, ``sigprof.init`` (what users
run), and read back from what reached the local sink, like sentry-sdk's own
profilers; ``SIGPROF_VIA_INIT = False`` below (or ``--sigprof-via sampler``)
drives ``sigprof.Sampler`` directly instead, drained once a second.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

SIGPROF_VIA_INIT = True  # False: drive sigprof through sigprof.Sampler, drained once a second

Samples = list[tuple[int, tuple[str, ...], float]]


class Unavailable(Exception):
    """This contender cannot run here (not installed, unsupported Python...)."""


@dataclass
class Context:
    rate: float
    dsn: str | None  # the local sink, with a project id unique to this run
    sink_url: str | None
    project: str
    workload: str
    chunk_seconds: float | None = None  # continuous profilers: chunk length
    transport: Any = None  # a sentry-sdk transport instead of HTTP to the sink
    tmpdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="sigprof-bench-"))


@dataclass
class Collected:
    samples: Samples = field(default_factory=list)
    weighted: bool = False  # weights are seconds, not sample counts (pyinstrument)
    thread_ids_opaque: bool = False  # thread ids cannot be matched to threading idents
    native_thread_ids: bool = False  # thread ids are threading.get_native_id() values
    payload: dict[str, Any] | None = None
    profiler_cpu_s: float | None = None  # CPU burnt outside the measured process
    notes: list[str] = field(default_factory=list)


def sink_dump(ctx: Context, keep_profiles: bool = True) -> dict[str, Any]:
    assert ctx.sink_url is not None
    kind = "dump" if keep_profiles else "count"
    with urllib.request.urlopen(f"{ctx.sink_url}/{kind}/{ctx.project}", timeout=60) as response:
        return dict(json.loads(response.read()))


def samples_from_sentry_profiles(profiles: list[dict[str, Any]]) -> Samples:
    samples: Samples = []
    for item in profiles:
        payload = item["payload"]
        profile = payload.get("profile", payload)
        frames = profile.get("frames", [])
        names = [str(frame.get("function", "?")) for frame in frames]
        stacks = [tuple(names[i] for i in stack) for stack in profile.get("stacks", [])]
        for sample in profile.get("samples", []):
            samples.append((int(sample["thread_id"]), stacks[int(sample["stack_id"])], 1.0))
    return samples


class Contender:
    name = "none"
    mode = "wall"
    uses_sentry = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def sentry_options(self) -> dict[str, Any]:
        return {}

    def init_sentry(self, **options: Any) -> None:
        """Initialise Sentry (the web workload always does; Sentry-based
        contenders always do)."""
        import sentry_sdk

        merged = {"dsn": self.ctx.dsn, **options, **self.sentry_options()}
        if self.ctx.transport is not None:
            merged["transport"] = self.ctx.transport
        sentry_sdk.init(**merged)

    def setup(self) -> None:
        if self.uses_sentry and self.ctx.workload != "web":
            self.init_sentry(traces_sample_rate=1.0)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def collect(self, profiles: list[dict[str, Any]]) -> Collected:
        """What this profiler took; ``profiles`` are the profile items the
        sink received from this run (Sentry-based contenders read theirs)."""
        if self.uses_sentry:
            return Collected(samples=samples_from_sentry_profiles(profiles))
        return Collected()


class SentryContinuous(Contender):
    name = "sentry_cont"
    uses_sentry = True

    def setup(self) -> None:
        import sentry_sdk.profiler.continuous_profiler as cp

        cp.DEFAULT_SAMPLING_FREQUENCY = self.ctx.rate  # type: ignore[misc]
        if self.ctx.chunk_seconds is not None:
            cp.PROFILE_BUFFER_SECONDS = self.ctx.chunk_seconds  # type: ignore[misc]
        super().setup()

    def sentry_options(self) -> dict[str, Any]:
        return {"profile_session_sample_rate": 1.0, "profile_lifecycle": "manual"}

    def start(self) -> None:
        import sentry_sdk.profiler

        sentry_sdk.profiler.start_profiler()

    def stop(self) -> None:
        import sentry_sdk.profiler
        import sentry_sdk.profiler.continuous_profiler as cp

        sentry_sdk.profiler.stop_profiler()
        scheduler = cp._scheduler
        deadline = time.monotonic() + 5
        while scheduler is not None and scheduler.running and time.monotonic() < deadline:
            time.sleep(0.005)


class SentryTransaction(Contender):
    name = "sentry_tx"
    uses_sentry = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._transaction: Any = None

    def setup(self) -> None:
        import sentry_sdk.profiler.transaction_profiler as tp

        tp.DEFAULT_SAMPLING_FREQUENCY = self.ctx.rate  # type: ignore[misc]
        super().setup()

    def sentry_options(self) -> dict[str, Any]:
        return {"profiles_sample_rate": 1.0}

    def start(self) -> None:
        if self.ctx.workload == "web":
            return  # every request's transaction is profiled
        import sentry_sdk

        self._transaction = sentry_sdk.start_transaction(op="bench", name=self.ctx.workload)
        self._transaction.__enter__()

    def stop(self) -> None:
        if self._transaction is not None:
            self._transaction.__exit__(None, None, None)
            self._transaction = None


class SigprofSampler(Contender):
    """sigprof through its low-level Sampler, drained once a second."""

    name = "sigprof_wall"
    clock = "wall"
    drain_seconds = 1.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.mode = self.clock
        self._sampler: Any = None
        self._frames: list[str] = []
        self._stacks: list[tuple[str, ...]] = []
        self._samples: list[tuple[int, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats: dict[str, Any] = {}
        self.keep_samples = True  # False (soak runs): count, then drop, each chunk
        self.sample_count = 0
        self.thread_counts: dict[int, int] = {}

    def setup(self) -> None:
        try:
            import sigprof
        except ImportError as error:
            raise Unavailable(f"sigprof not importable: {error}") from None
        reason = sigprof.native_unavailable_reason()
        if reason is not None:
            raise Unavailable(reason)
        frequency = min(self.ctx.rate, 500)
        self._sampler = sigprof.Sampler(frequency=frequency, clock=self.clock)
        super().setup()

    def _absorb(self, batch: Any) -> None:
        self.sample_count += len(batch.samples)
        counts = self.thread_counts
        for _, thread_id, _ in batch.samples:
            counts[thread_id] = counts.get(thread_id, 0) + 1
        if not self.keep_samples:
            return
        # ids count on from first_*_id (and start again after a reset or restart)
        del self._frames[batch.first_frame_id :]
        self._frames.extend(frame.function for frame in batch.frames)
        frames = self._frames
        del self._stacks[batch.first_stack_id :]
        self._stacks.extend(tuple(frames[i] for i in stack) for stack in batch.stacks)
        stacks = self._stacks
        self._samples.extend(
            (thread_id, stacks[stack_id]) for _, thread_id, stack_id in batch.samples
        )

    def _drain_loop(self) -> None:
        while not self._stop.wait(self.drain_seconds):
            self._absorb(self._sampler.drain(reset_interning=not self.keep_samples))

    def start(self) -> None:
        self._sampler.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="sigprof-drain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.stats = self._sampler.stats()
        self._sampler.stop()
        self._absorb(self._sampler.drain())

    def collect(self, profiles: list[dict[str, Any]]) -> Collected:
        collected = Collected()
        collected.samples = [(tid, stack, 1.0) for tid, stack in self._samples]
        stats = dict(self.stats)
        signals = stats.pop("signals", {})
        stats["signals_total"] = sum(signals.values())
        collected.notes.append(json.dumps(stats))
        return collected


class SigprofSamplerCpu(SigprofSampler):
    name = "sigprof_cpu"
    clock = "cpu"


class SigprofInit(Contender):
    """sigprof through its Sentry drop-in (continuous profiling, manual
    lifecycle): sigprof.init(...) with SigprofIntegration(frequency, clock),
    read back from what reached the sink."""

    name = "sigprof_wall"
    clock = "wall"
    uses_sentry = True
    transaction = False

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.mode = self.clock
        self._transaction: Any = None

    def init_sentry(self, **options: Any) -> None:
        import sigprof

        merged: dict[str, Any] = {"dsn": self.ctx.dsn, **options}
        if self.transaction:
            merged["profiles_sample_rate"] = 1.0
        else:
            merged.update(profile_session_sample_rate=1.0, profile_lifecycle="manual")
        merged["integrations"] = [
            sigprof.SigprofIntegration(frequency=min(self.ctx.rate, 500), clock=self.clock)
        ]
        if self.ctx.transport is not None:
            merged["transport"] = self.ctx.transport
        sigprof.init(**merged)

    def setup(self) -> None:
        try:
            import sigprof
        except ImportError as error:
            raise Unavailable(f"sigprof not importable: {error}") from None
        if not hasattr(sigprof, "init"):
            raise Unavailable("sigprof.init does not exist in this version")
        reason = sigprof.native_unavailable_reason()
        if reason is not None:
            raise Unavailable(reason)
        if self.ctx.chunk_seconds is not None:
            import sigprof.sentry.session

            sigprof.sentry.session.CHUNK_SECONDS = float(self.ctx.chunk_seconds)  # type: ignore[attr-defined]
        super().setup()

    def start(self) -> None:
        import sentry_sdk

        if self.transaction:
            if self.ctx.workload != "web":
                self._transaction = sentry_sdk.start_transaction(op="bench", name=self.ctx.workload)
                self._transaction.__enter__()
            return
        import sigprof

        sigprof.start_profiler()

    def stop(self) -> None:
        if self.transaction:
            if self._transaction is not None:
                self._transaction.__exit__(None, None, None)
                self._transaction = None
            return
        import sigprof

        sigprof.stop_profiler()


class SigprofInitCpu(SigprofInit):
    name = "sigprof_cpu"
    clock = "cpu"


class SigprofInitTransaction(SigprofInit):
    name = "sigprof_tx"
    transaction = True


class Vmprof(Contender):
    name = "vmprof"
    mode = "cpu"  # ITIMER_PROF: process CPU time

    def setup(self) -> None:
        try:
            import vmprof  # noqa: F401
        except Exception as error:  # noqa: BLE001 - any import failure means unavailable
            raise Unavailable(f"vmprof: {type(error).__name__}: {error}") from None
        self._path = os.path.join(self.ctx.tmpdir, "vmprof.dat")
        self._file = open(self._path, "w+b")  # noqa: SIM115
        super().setup()

    def start(self) -> None:
        import vmprof

        vmprof.enable(self._file.fileno(), period=1.0 / self.ctx.rate)

    def stop(self) -> None:
        import vmprof

        vmprof.disable()
        self._file.close()

    def collect(self, profiles: list[dict[str, Any]]) -> Collected:
        import vmprof

        stats = vmprof.read_profile(self._path)
        names: dict[int, str] = {}
        for address, description in stats.adr_dict.items():
            parts = str(description).split(":")
            names[address] = parts[1] if len(parts) > 2 and parts[0] == "py" else str(description)
        samples: Samples = []
        for profile in stats.profiles:
            stack = tuple(names.get(address, "?") for address in profile[0])
            samples.append((int(profile[2]), stack, float(profile[1])))
        return Collected(samples=samples, thread_ids_opaque=True)


class Pyinstrument(Contender):
    name = "pyinstrument"
    mode = "wall"

    def setup(self) -> None:
        try:
            from pyinstrument import Profiler
        except Exception as error:  # noqa: BLE001
            raise Unavailable(f"pyinstrument: {type(error).__name__}: {error}") from None
        self._profiler = Profiler(interval=1.0 / self.ctx.rate, async_mode="disabled")
        super().setup()

    def start(self) -> None:
        self._thread_id = threading.get_ident()
        self._profiler.start()

    def stop(self) -> None:
        self._profiler.stop()

    def collect(self, profiles: list[dict[str, Any]]) -> Collected:
        session = self._profiler.last_session
        samples: Samples = []
        for frames, seconds in session.frame_records:
            stack = tuple(str(frame).split("\x00", 1)[0] for frame in reversed(frames))
            samples.append((self._thread_id, stack, float(seconds)))
        collected = Collected(samples=samples, weighted=True)
        collected.notes.append("samples only the thread that started it")
        return collected


class PySpy(Contender):
    name = "py-spy"
    mode = "wall"

    def setup(self) -> None:
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(exe):
            raise Unavailable("py-spy is not installed")
        self._exe = exe
        self._path = os.path.join(self.ctx.tmpdir, "pyspy.txt")
        super().setup()

    def start(self) -> None:
        command = [
            self._exe,
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            str(int(self.ctx.rate)),
            "--format",
            "raw",
            "--threads",
            "--output",
            self._path,
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + 15
        seen = []
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "Sampling process" in line:
                return
        self._process.kill()
        self._process.wait()
        raise Unavailable("py-spy could not attach: " + " ".join(seen).strip()[-300:])

    def stop(self) -> None:
        self._process.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(self._process.pid, 0)
        self._process.returncode = status
        self._cpu = usage.ru_utime + usage.ru_stime
        assert self._process.stdout is not None
        self._process.stdout.read()

    def collect(self, profiles: list[dict[str, Any]]) -> Collected:
        samples: Samples = []
        if os.path.exists(self._path):
            with open(self._path) as handle:
                for line in handle:
                    line = line.rstrip("\n")
                    if not line:
                        continue
                    stack_text, _, count = line.rpartition(" ")
                    thread_id = 0
                    names: list[str] = []
                    # "thread (NATIVE_ID): NAME;func (file:line);...;leaf (file:line) COUNT"
                    for index, part in enumerate(stack_text.split(";")):
                        if index == 0 and part.startswith("thread ("):
                            thread_id = int(part[len("thread (") :].split(")")[0])
                        elif part.startswith("process "):
                            continue
                        else:
                            names.append(part.rsplit(" (", 1)[0])
                    samples.append((thread_id, tuple(reversed(names)), float(count)))
        return Collected(samples=samples, profiler_cpu_s=self._cpu, native_thread_ids=True)


def contender_classes(via_init: bool = SIGPROF_VIA_INIT) -> dict[str, type[Contender]]:
    wall: type[Contender] = SigprofInit if via_init else SigprofSampler
    cpu: type[Contender] = SigprofInitCpu if via_init else SigprofSamplerCpu
    return {
        "none": Contender,
        "sentry_cont": SentryContinuous,
        "sentry_tx": SentryTransaction,
        "sigprof_wall": wall,
        "sigprof_cpu": cpu,
        "sigprof_tx": SigprofInitTransaction,
        "vmprof": Vmprof,
        "pyinstrument": Pyinstrument,
        "py-spy": PySpy,
    }
