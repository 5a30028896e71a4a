"""What ``sigprof run`` tells a person on stderr: a live progress line and,
at the end, the top functions by self and total share."""

from __future__ import annotations

import os
import shutil

from sigprof.exports.labels import display_filename
from sigprof.profile_model import Profile, top_functions
from sigprof.sampler import Frame


def progress_line(elapsed_s: float, samples: int, dropped: int) -> str:
    return f"sigprof: {elapsed_s:6.1f} s  {samples:>8} samples  {dropped:>5} dropped"


def _duration(profile: Profile) -> str:
    start, end = profile.time_range_ns()
    if end <= start:
        return ""
    return f"{(end - start + profile.interval_ns) / 1e9:.1f} s, "


def table(profile: Profile, limit: int = 12) -> str:
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
    lines: list[str] = [header, f"  {'self':>6}  {'total':>6}  function"]
    for stat in stats:
        frame = Frame(stat.function, stat.filename, stat.module, stat.lineno)
        where = display_filename(frame)
        location = f"{where}:{stat.lineno}" if stat.lineno else where
        text = f"{stat.function}  {location}"
        if len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(
            f"  {100 * stat.self_weight / grand:5.1f}%  {100 * stat.total_weight / grand:5.1f}%  {text}"
        )
    if profile.clock == "wall" and profile.interval_ns:
        lines.append("  (wall clock: waiting counts too; --clock cpu shows CPU time only)")
    return "\n".join(lines)


def relative(path: str) -> str:
    relative_path = os.path.relpath(path)
    return relative_path if not relative_path.startswith("..") else os.path.abspath(path)
