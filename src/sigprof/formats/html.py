"""The self-contained HTML flame graph: one file with the profile as JSON
and the page's CSS and JavaScript inline, so it opens offline anywhere."""

from __future__ import annotations

import json
from collections import defaultdict
from importlib.resources import files
from typing import Any

import sigprof
from sigprof.formats.labels import display_filename, in_app, is_special
from sigprof.formats.profile_model import Profile


def _asset(name: str) -> str:
    return files("sigprof.formats.viewer").joinpath(name).read_text(encoding="utf-8")


def page_data(profile: Profile) -> dict[str, Any]:
    """Functions merge frames by (function, file); frames keep the line."""
    functions: list[list[Any]] = []
    function_ids: dict[tuple[str, str], int] = {}
    frames: list[list[int]] = []
    for frame in profile.frames:
        key = (frame.function, frame.filename)
        if key not in function_ids:
            function_ids[key] = len(functions)
            kind = 2 if is_special(frame) else (1 if in_app(frame) else 0)
            functions.append([
                frame.function,
                "" if is_special(frame) else display_filename(frame),
                "" if is_special(frame) else frame.filename,
                frame.module or "",
                kind,
            ])
        frames.append([function_ids[key], frame.lineno])
    nodes, stack_nodes = _call_trie(profile)
    threads = []
    for thread in sorted(profile.threads.values(), key=lambda t: (t.name != "MainThread", t.name)):
        weights: dict[int, float] = defaultdict(float)
        for _, stack_id, weight in thread.samples:
            weights[stack_nodes[stack_id]] += weight
        threads.append({
            "id": str(thread.thread_id),
            "name": thread.name,
            "samples": [[s, w] for s, w in sorted(weights.items())],
        })
    start_ns, end_ns = profile.time_range_ns()
    if end_ns > start_ns and profile.interval_ns:
        end_ns += profile.interval_ns  # the last sample stands for one interval
    return {
        "name": profile.name,
        "unit": profile.unit,
        "intervalNs": profile.interval_ns,
        "clock": profile.clock if profile.unit == "samples" and profile.interval_ns else "",
        "range": [start_ns, end_ns],
        "functions": functions,
        "frames": frames,
        "nodes": nodes,
        "threads": threads,
        "stats": profile.stats,
    }


def _call_trie(profile: Profile) -> tuple[list[int], list[int]]:
    """Stacks as a trie, flattened to [parent, frame, parent, frame, ...]
    (parent -1: a root frame), and each stack's node (-1: an empty stack).
    Deep stacks share their root side, so this is far smaller than lists."""
    nodes: list[int] = []
    index: dict[tuple[int, int], int] = {}
    stack_nodes: list[int] = []
    for stack in profile.stacks:
        parent = -1
        for frame_id in reversed(stack):  # root first
            key = (parent, frame_id)
            node = index.get(key)
            if node is None:
                node = index[key] = len(nodes) // 2
                nodes += key
            parent = node
        stack_nodes.append(parent)
    return nodes, stack_nodes


def _script_safe(text: str) -> str:
    # inside <script>, "</" could close the element early; JSON.parse reads "<\/" as "</"
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render(profile: Profile) -> bytes:
    data = json.dumps(page_data(profile), separators=(",", ":"), allow_nan=False)
    page = _asset("template.html")
    title = profile.name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for marker, value in (
        ("__SIGPROF_VERSION__", sigprof.__version__),
        ("__SIGPROF_TITLE__", title),
        ("__SIGPROF_CSS__", _asset("flamegraph.css")),
        ("__SIGPROF_JS__", _script_safe(_asset("flamegraph.js"))),
        ("__SIGPROF_DATA__", _script_safe(data)),
    ):
        page = page.replace(marker, value, 1)
    return page.encode("utf-8")
