"""Collapsed stacks, as flamegraph.pl and inferno read them: one line per
distinct stack, frames root first separated by ``;``, then a space and the
sample count. Frames are written ``function (file:line)`` like py-spy's."""

from __future__ import annotations

import re
from collections import defaultdict

from sigprof.core.sampler import Frame
from sigprof.formats.labels import frame_label
from sigprof.formats.profile_model import Profile

_LABEL = re.compile(r"^(?P<function>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def render(profile: Profile) -> bytes:
    counts: dict[tuple[str, ...], float] = defaultdict(float)
    labels: dict[int, str] = {}
    for thread in profile.threads.values():
        for _, stack_id, weight in thread.samples:
            names = []
            for frame_id in reversed(profile.stacks[stack_id]):
                label = labels.get(frame_id)
                if label is None:
                    # ";" separates frames and a newline ends the record: keep both out of names
                    label = frame_label(profile.frames[frame_id]).replace(";", ":")
                    labels[frame_id] = label.replace("\n", " ")
                    label = labels[frame_id]
                names.append(label)
            counts[tuple(names)] += weight
    lines = [
        f"{';'.join(stack)} {round(count)}"
        for stack, count in sorted(counts.items())
        if stack and round(count) > 0
    ]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def parse_frame(label: str) -> Frame:
    match = _LABEL.match(label)
    if match is None:
        return Frame(label, "<unknown>", None, 0)
    return Frame(match["function"], match["file"], None, int(match["line"]))


def parse(text: str, name: str = "collapsed stacks") -> Profile:
    """Reads collapsed stacks into a one-thread profile (the format has no
    threads or timestamps). Raises ValueError on a malformed line."""
    profile = Profile(name=name, unit="samples", clock="")
    thread = profile.thread(0, "all threads")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        stack_text, _, count_text = line.rpartition(" ")
        try:
            count = float(count_text)
        except ValueError:
            raise ValueError(f"line {number}: expected 'frame;frame;... count', got {raw!r}") from None
        if (not stack_text and raw[:1] != " ") or count < 0:
            raise ValueError(f"line {number}: expected 'frame;frame;... count', got {raw!r}")
        # py-spy's raw output writes " N" for samples with no Python frame: a stack of none
        frames: list[Frame] = [parse_frame(part) for part in reversed(stack_text.split(";"))] if stack_text else []
        stack_id = profile.intern_stack(tuple(profile.intern_frame(f) for f in frames))
        thread.samples.append((0, stack_id, count))
    if not thread.samples:
        raise ValueError("no stacks found")
    return profile
