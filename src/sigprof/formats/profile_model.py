"""The profile every exporter and the HTML view read: interned frames and
stacks plus, per thread, a list of weighted, timestamped samples.

It is built from a running sampler's ``drain()`` batches (``ProfileBuilder``)
or from a saved file (``sigprof.formats.readers``), and turned into a frame tree
(``build_tree``) or a top-functions table (``top_functions``) for people.
Stacks are stored LEAF FIRST, as the sampler and Sentry give them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Callable

from sigprof.core.sampler import Batch, Frame

# A sample: (Unix timestamp in ns, or 0 when the source had none; stack id; weight).
ProfileSample = tuple[int, int, float]


@dataclass
class ThreadProfile:
    thread_id: int
    name: str
    samples: list[ProfileSample] = field(default_factory=list)


@dataclass
class Profile:
    """Weights are sample counts when ``unit`` is "samples" (each worth
    ``interval_ns`` of wall or cpu time), or nanoseconds when "nanoseconds"."""

    frames: list[Frame] = field(default_factory=list)
    stacks: list[tuple[int, ...]] = field(default_factory=list)  # frame ids, leaf first
    threads: dict[int, ThreadProfile] = field(default_factory=dict)
    unit: str = "samples"
    interval_ns: int = 0  # 0: unknown
    clock: str = "wall"  # "" when the source does not say (a saved file)
    name: str = "sigprof"
    stats: dict[str, int] = field(default_factory=dict)
    _frame_ids: dict[Frame, int] = field(default_factory=dict, repr=False)
    _stack_ids: dict[tuple[int, ...], int] = field(default_factory=dict, repr=False)

    # ---- building ----

    def intern_frame(self, frame: Frame) -> int:
        found = self._frame_ids.get(frame)
        if found is None:
            if not self._frame_ids and self.frames:
                self._reindex()
                return self.intern_frame(frame)
            found = len(self.frames)
            self.frames.append(frame)
            self._frame_ids[frame] = found
        return found

    def intern_stack(self, frame_ids: tuple[int, ...]) -> int:
        found = self._stack_ids.get(frame_ids)
        if found is None:
            if not self._stack_ids and self.stacks:
                self._reindex()
                return self.intern_stack(frame_ids)
            found = len(self.stacks)
            self.stacks.append(frame_ids)
            self._stack_ids[frame_ids] = found
        return found

    def _reindex(self) -> None:
        self._frame_ids = {frame: i for i, frame in enumerate(self.frames)}
        self._stack_ids = {stack: i for i, stack in enumerate(self.stacks)}

    def thread(self, thread_id: int, name: str | None = None) -> ThreadProfile:
        found = self.threads.get(thread_id)
        if found is None:
            found = ThreadProfile(thread_id, name or f"Thread {thread_id}")
            self.threads[thread_id] = found
        elif name and found.name.startswith("Thread "):
            found.name = name
        return found

    def add_sample(
        self, thread_id: int, frames: Sequence[Frame], timestamp_ns: int = 0,
        weight: float = 1, thread_name: str | None = None,
    ) -> None:
        """frames leaf first."""
        stack_id = self.intern_stack(tuple(self.intern_frame(f) for f in frames))
        self.thread(thread_id, thread_name).samples.append((timestamp_ns, stack_id, weight))

    # ---- reading ----

    def stack_frames(self, stack_id: int) -> list[Frame]:
        return [self.frames[i] for i in self.stacks[stack_id]]

    def total_weight(self) -> float:
        return sum(w for t in self.threads.values() for _, _, w in t.samples)

    def sample_count(self) -> int:
        return sum(len(t.samples) for t in self.threads.values())

    def time_range_ns(self) -> tuple[int, int]:
        stamps = [ts for t in self.threads.values() for ts, _, _ in t.samples if ts]
        return (min(stamps), max(stamps)) if stamps else (0, 0)

    def weight_ns(self, weight: float) -> float | None:
        """What a weight means in nanoseconds, when that is known."""
        if self.unit == "nanoseconds":
            return weight
        return weight * self.interval_ns if self.interval_ns else None

    def select_threads(self, patterns: Sequence[str]) -> Profile:
        """Only the threads whose name or id matches one of the patterns
        (shell wildcards allowed, case-insensitive names)."""
        kept = {
            tid: t for tid, t in self.threads.items()
            if any(_thread_matches(t, p) for p in patterns)
        }
        return self._with(threads=kept)

    def between(self, start_ns: int | None, end_ns: int | None) -> Profile:
        """Only samples with timestamps in [start_ns, end_ns]."""
        kept: dict[int, ThreadProfile] = {}
        for tid, t in self.threads.items():
            samples = [
                s for s in t.samples
                if (start_ns is None or s[0] >= start_ns) and (end_ns is None or s[0] <= end_ns)
            ]
            if samples:
                kept[tid] = ThreadProfile(tid, t.name, samples)
        return self._with(threads=kept)

    def without_samples_in(self, frame: Callable[[Frame], bool]) -> Profile:
        """Only samples whose stack holds no frame that ``frame`` matches."""
        matching = {
            stack_id for stack_id in range(len(self.stacks))
            if any(frame(f) for f in self.stack_frames(stack_id))
        }
        kept: dict[int, ThreadProfile] = {}
        for tid, t in self.threads.items():
            samples = [s for s in t.samples if s[1] not in matching]
            if samples:
                kept[tid] = ThreadProfile(tid, t.name, samples)
        return self._with(threads=kept)

    def _with(self, threads: dict[int, ThreadProfile]) -> Profile:
        return Profile(
            frames=self.frames, stacks=self.stacks, threads=threads, unit=self.unit,
            interval_ns=self.interval_ns, clock=self.clock, name=self.name,
            stats=dict(self.stats),
        )

    def merge(self, other: Profile) -> None:
        """Adds other's samples to this profile (threads with the same id merge)."""
        for tid, t in other.threads.items():
            mine = self.thread(tid, t.name)
            for ts, stack_id, weight in t.samples:
                frames = other.stack_frames(stack_id)
                new_stack = self.intern_stack(tuple(self.intern_frame(f) for f in frames))
                mine.samples.append((ts, new_stack, weight))
        if not self.interval_ns:
            self.interval_ns = other.interval_ns
        for key, value in other.stats.items():
            self.stats[key] = self.stats.get(key, 0) + value


def _thread_matches(thread: ThreadProfile, pattern: str) -> bool:
    if pattern.isdigit() and int(pattern) == thread.thread_id:
        return True
    return fnmatch.fnmatch(thread.name.lower(), pattern.lower())


class ProfileBuilder:
    """Turns a sampler's ``drain()`` batches into a Profile. Batch ids are
    local to the sampler's interning, which may restart at 0
    (``reset_interning=True``); the builder maps them onto the profile's."""

    def __init__(self, profile: Profile, to_unix_ns: Callable[[int], int] | None = None) -> None:
        self.profile = profile
        self._to_unix_ns = to_unix_ns
        self._frames: list[int] = []  # sampler frame id -> profile frame id
        self._stacks: list[int] = []

    def add(self, batch: Batch, thread_names: dict[int, str]) -> int:
        """Adds a batch; returns how many samples it kept."""
        del self._frames[batch.first_frame_id:]
        del self._stacks[batch.first_stack_id:]
        if len(self._frames) != batch.first_frame_id or len(self._stacks) != batch.first_stack_id:
            raise ValueError("drain() batches were given out of order")
        profile = self.profile
        self._frames.extend(profile.intern_frame(f) for f in batch.frames)
        self._stacks.extend(
            profile.intern_stack(tuple(self._frames[i] for i in stack)) for stack in batch.stacks
        )
        kept = 0
        for timestamp_ns, thread_id, stack_id in batch.samples:
            when = self._to_unix_ns(timestamp_ns) if self._to_unix_ns else timestamp_ns
            thread = profile.thread(thread_id, thread_names.get(thread_id))
            thread.samples.append((when, self._stacks[stack_id], 1))
            kept += 1
        return kept


# ---- views for people ----


@dataclass
class FrameNode:
    """One node of the call tree (root first). Frames merge by function and
    file; ``lines`` counts the weight seen at each line."""

    function: str
    filename: str
    module: str | None
    total: float = 0.0
    self_weight: float = 0.0
    lines: dict[int, float] = field(default_factory=dict)
    children: dict[tuple[str, str], FrameNode] = field(default_factory=dict)

    def child(self, frame: Frame) -> FrameNode:
        key = (frame.function, frame.filename)
        found = self.children.get(key)
        if found is None:
            found = FrameNode(frame.function, frame.filename, frame.module)
            self.children[key] = found
        return found


def build_tree(profile: Profile, thread_ids: Iterable[int] | None = None) -> FrameNode:
    root = FrameNode("<root>", "", None)
    wanted = set(profile.threads) if thread_ids is None else set(thread_ids)
    for tid in wanted:
        for _, stack_id, weight in profile.threads[tid].samples:
            node = root
            node.total += weight
            for frame in reversed(profile.stack_frames(stack_id)):
                node = node.child(frame)
                node.total += weight
                node.lines[frame.lineno] = node.lines.get(frame.lineno, 0) + weight
            node.self_weight += weight
    return root


@dataclass
class FunctionStat:
    function: str
    filename: str
    module: str | None
    lineno: int  # the line seen most often
    self_weight: float
    total_weight: float


def top_functions(profile: Profile, limit: int = 15) -> tuple[list[FunctionStat], float]:
    """Functions by self weight (then total), and the total weight they are
    shares of. Recursion counts a function once per sample in total."""
    self_w: dict[tuple[str, str], float] = {}
    total_w: dict[tuple[str, str], float] = {}
    lines: dict[tuple[str, str], dict[int, float]] = {}
    modules: dict[tuple[str, str], str | None] = {}
    grand = 0.0
    for t in profile.threads.values():
        for _, stack_id, weight in t.samples:
            grand += weight
            frames = profile.stack_frames(stack_id)
            if not frames:
                continue
            leaf = frames[0]
            leaf_key = (leaf.function, leaf.filename)
            self_w[leaf_key] = self_w.get(leaf_key, 0) + weight
            seen = set()
            for frame in frames:
                key = (frame.function, frame.filename)
                modules.setdefault(key, frame.module)
                per_line = lines.setdefault(key, {})
                per_line[frame.lineno] = per_line.get(frame.lineno, 0) + weight
                if key not in seen:
                    seen.add(key)
                    total_w[key] = total_w.get(key, 0) + weight
    ranked = sorted(total_w, key=lambda k: (-self_w.get(k, 0), -total_w[k], k))
    stats = [
        FunctionStat(
            k[0], k[1], modules.get(k), max(lines[k].items(), key=lambda item: item[1])[0],
            self_w.get(k, 0), total_w[k],
        )
        for k in ranked[:limit]
    ]
    return stats, grand


def strip_root_frames(profile: Profile, drop: Callable[[Frame], bool]) -> Profile:
    """A copy without the run of frames at the ROOT end of each stack that
    ``drop`` matches (a launcher's own frames: sigprof's, runpy's).
    Samples with nothing but such frames (the launcher at work) go too."""
    result = Profile(
        unit=profile.unit, interval_ns=profile.interval_ns, clock=profile.clock,
        name=profile.name, stats=dict(profile.stats),
    )
    new_ids: dict[int, int | None] = {}
    for stack_id, stack in enumerate(profile.stacks):
        frames = profile.stack_frames(stack_id)
        end = len(frames)
        while end > 0 and drop(frames[end - 1]):
            end -= 1
        new_ids[stack_id] = (
            result.intern_stack(tuple(result.intern_frame(f) for f in frames[:end]))
            if end or not frames else None
        )
    for tid, thread in profile.threads.items():
        kept: list[ProfileSample] = []
        for ts, old, weight in thread.samples:
            new = new_ids[old]
            if new is not None:
                kept.append((ts, new, weight))
        if kept:
            result.thread(tid, thread.name).samples = kept
    return result
