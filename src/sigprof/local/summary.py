"""What ``sigprof run`` tells a person on stderr: a live progress line and,
at the end, the top functions by self and total share."""

from __future__ import annotations

import os
import shutil

from sigprof.core.sampler import Frame
from sigprof.formats.labels import display_filename
from sigprof.formats.profile_model import Profile, top_functions


def progress_line(elapsed_s: float, samples: int, dropped: int) -> str:
    return f"sigprof: {elapsed_s:6.1f} s  {samples:>8} samples  {dropped:>5} dropped"


def _duration(profile: Profile) -> str:
    start, end = profile.time_range_ns()
    if end <= start:
        return ""
    return f"{(end - start + profile.interval_ns) / 1e9:.1f} s, "


def table(profile: Profile, limit: int = 12, cpu_seconds: float | None = None) -> str:
    """The header, then the top functions. cpu_seconds, the CPU time of the
    processes sampled, gives a wall-clock profile its waiting share first
    (a top function that sleeps then reads as what it is)."""
    stats, grand = top_functions(profile, limit)
    threads = len(profile.threads)
    how = [f"{1e9 / profile.interval_ns:.0f} Hz" if profile.interval_ns else "",
           f"{profile.clock} clock" if profile.clock else ""]
    detail = f" ({' '.join(h for h in how if h)})" if any(how) else ""
    header = (
        f"sigprof: {_duration(profile)}{profile.sample_count()} samples{detail}, "
        f"{threads} thread{'s' if threads != 1 else ''}"
    )
    dropped = profile.stats.get("dropped", 0)
    if dropped:
        header += f", {dropped} dropped"
    if not stats or not grand:
        return header + "\n  no samples: the program may have ended before the first tick"
    width = max(40, min(100, shutil.get_terminal_size((100, 20)).columns) - 20)
    lines: list[str] = [header]
    waiting = _waiting_line(profile, cpu_seconds)
    if waiting:
        lines.append(waiting)
    lines.append(f"  {'self':>6}  {'total':>6}  function")
    for stat in stats:
        frame = Frame(stat.function, stat.filename, stat.module, stat.lineno)
        where = display_filename(frame)
        location = f"{where}:{stat.lineno}" if stat.lineno else where
        text = _fitted(stat.function, location, width)
        lines.append(
            f"  {100 * stat.self_weight / grand:5.1f}%  {100 * stat.total_weight / grand:5.1f}%  {text}"
        )
    if profile.clock == "wall" and profile.interval_ns and not waiting:
        lines.append("  (wall clock: waiting counts too; --clock cpu shows CPU time only)")
    return "\n".join(lines)


def _waiting_line(profile: Profile, cpu_seconds: float | None) -> str:
    if profile.clock != "wall" or cpu_seconds is None:
        return ""
    sampled_ns = profile.weight_ns(profile.total_weight())
    if not sampled_ns:
        return ""
    sampled = sampled_ns / 1e9
    share = max(0.0, 1 - cpu_seconds / sampled)
    return (
        f"  about {100 * share:.0f}% of the time sampled was waiting, off the CPU "
        f"({cpu_seconds:.1f} CPU-s of {sampled:.1f} s sampled, wall clock): "
        "--clock cpu shows where the CPU time went"
    )


def _fitted(function: str, location: str, width: int) -> str:
    """`function  file:line` in `width` characters: the file's start gives
    way first ("…/pkg/mod.py:12"), then the function's end; the line stays."""
    text = f"{function}  {location}"
    if len(text) <= width:
        return text
    room = width - len(function) - 3  # two spaces and the ellipsis
    file, _, line = location.rpartition(":")
    if file and room > len(line) + 8:
        return f"{function}  …{location[len(location) - room:]}"
    if file:
        location = f"…/{os.path.basename(file)}:{line}"
    return f"{function[: max(8, width - len(location) - 3)]}…  {location}"


def relative(path: str) -> str:
    relative_path = os.path.relpath(path)
    return relative_path if not relative_path.startswith("..") else os.path.abspath(path)
