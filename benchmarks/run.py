"""sigprof against sentry-sdk, vmprof, pyinstrument and py-spy, side by side.

    python3 benchmarks/run.py            # full run (about 20-25 min on 2 cores)
    python3 benchmarks/run.py --quick    # a smaller run (under 3 min)
    python3 benchmarks/run.py --python 3.12

Installs what it needs into /tmp/venv-bench-<X.Y> (benchmarks/requirements.txt
plus sigprof built from this working tree) and re-runs itself there. Every run
of a (workload, contender) happens in a fresh process, paired with a run of
the same workload without a profiler (A B, then B A, interleaved); overheads
are medians over the pairs with their spread. Prints the table and writes
JSON plus a Markdown copy of the table to benchmarks/results/.

The benchmarks are not tests: nothing here asserts a time. Targets are
reported as met or missed, with the figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

WORKLOAD_NAMES = ["cpu_deep", "cpu_shallow", "threads_mixed", "idle_threads", "gil_c_call", "web"]
CONTENDERS = [
    "sentry_cont",
    "sentry_tx",
    "sigprof_wall",
    "sigprof_cpu",
    "sigprof_tx",
    "vmprof",
    "pyinstrument",
    "py-spy",
]
COST_CONTENDERS = ["sigprof_wall", "sigprof_cpu", "sigprof_tx", "sentry_cont", "sentry_tx"]
SOAK_CONTENDERS = ["sigprof_wall", "sentry_cont"]
STEADY_CONTENDERS = ["none", "sentry_cont", "sigprof_wall", "sigprof_cpu"]
STEADY_VARIANTS = {"busy": 0, "busy+200 idle": 200}  # idle threads beside the busy one
PARTS = ["matrix", "cost", "soak", "steady", "native"]
RATE = 101
MAX_RATE = 500  # sigprof's highest; sentry-sdk's frequency constant is raised to match

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "reps": 1,
        "scale": 0.15,
        "web_scale": 0.3,
        "cost_reps": 2,
        "cost_scale": 0.2,
        "cost_blocks": 4,
        "soak_seconds": 8,
        "chunk_seconds": 1,
        "matrix_budget_s": 100,
        "steady_reps": 2,
        "steady_warmup_s": 1.5,
        "steady_window_s": 4.0,
        "native": ["--quick"],
    },
    "full": {
        "reps": 5,
        "scale": 1.2,
        "web_scale": 1.2,
        "cost_reps": 5,
        "cost_scale": 0.8,
        "cost_blocks": 6,
        "soak_seconds": 90,
        "chunk_seconds": 2,
        "matrix_budget_s": 1200,  # on a slow machine, fewer pairs rather than a longer run
        "steady_reps": 3,
        "steady_warmup_s": 2.0,
        "steady_window_s": 6.0,
        "native": [],
    },
}


# ----------------------------------------------------------------- running


class Runner:
    def __init__(self, sink: Any, sigprof_via: str, log: Any) -> None:
        self.sink = sink
        self.sigprof_via = sigprof_via
        self.counter = 0
        self.log = log

    def run(
        self, workload: str, contender: str, rate: float, scale: float, **extra: Any
    ) -> dict[str, Any]:
        self.counter += 1
        # Sentry project ids are numbers; soak runs (only counted) from 900000
        project = str(self.counter + (900000 if extra.get("soak") else 0))
        spec = {
            "workload": workload,
            "contender": contender,
            "rate": rate,
            "scale": scale,
            "project": project,
            "dsn": self.sink.dsn(project),
            "sink_url": f"http://127.0.0.1:{self.sink.port}",
            "sigprof_via": self.sigprof_via,
            **extra,
        }
        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, os.path.join(HERE, "_worker.py"), json.dumps(spec)],
            check=False,
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=1200,
        )
        marker = "@@RESULT@@"
        if marker in process.stdout:
            result: dict[str, Any] = json.loads(process.stdout.rsplit(marker, 1)[1])
        else:
            result = {
                "error": f"worker exited {process.returncode}",
                "stderr": process.stderr[-3000:],
            }
        result["workload"], result["contender"], result["rate"] = workload, contender, rate
        result["elapsed_s"] = time.perf_counter() - started
        if "error" in result:
            self.log(f"  ! {workload}/{contender}: {result['error']}")
            if "traceback" in result:
                self.log(result["traceback"])
            elif "stderr" in result:
                self.log(result["stderr"])
        return result


def _ok(result: dict[str, Any]) -> bool:
    return "error" not in result and "unavailable" not in result


def run_pairs(
    runner: Runner,
    workloads: list[str],
    contenders: list[str],
    reps: int,
    rate: float,
    scale_for: dict[str, float],
    log: Any,
    budget_s: float | None = None,
) -> list[dict[str, Any]]:
    """For each repetition, each workload, each contender (in a shuffled
    order): a fresh run without profiler and one with it, their order
    alternating, so slow drifts of a shared machine hit both sides."""
    pairs: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    rng = random.Random(20261125)
    started = time.perf_counter()
    for rep in range(reps):
        for workload in workloads:
            order = list(contenders)
            rng.shuffle(order)
            for index, contender in enumerate(order):
                if contender in unavailable:
                    continue
                scale = scale_for[workload]
                first_none = (rep + index) % 2 == 0
                if first_none:
                    base = runner.run(workload, "none", rate, scale)
                    test = runner.run(workload, contender, rate, scale)
                else:
                    test = runner.run(workload, contender, rate, scale)
                    base = runner.run(workload, "none", rate, scale)
                if "unavailable" in test:
                    unavailable[contender] = test["unavailable"]
                    log(f"  {contender} unavailable: {test['unavailable']}")
                pairs.append(
                    {
                        "rep": rep,
                        "workload": workload,
                        "contender": contender,
                        "base": base,
                        "test": test,
                    }
                )
                log(
                    f"  rep {rep + 1}/{reps} {workload:<13} {contender:<13} "
                    + _pair_brief(base, test)
                )
        elapsed = time.perf_counter() - started
        if budget_s is not None and rep + 1 < reps and elapsed * (rep + 2) / (rep + 1) > budget_s:
            log(f"  ! time budget ({budget_s:.0f} s) would be exceeded: {rep + 1} pairs per cell")
            return pairs
    return pairs


def _pair_brief(base: dict[str, Any], test: dict[str, Any]) -> str:
    if "unavailable" in test:
        return "unavailable"
    if not (_ok(base) and _ok(test)):
        return "error"
    wall = 100 * (test["wall_s"] / base["wall_s"] - 1)
    cpu = 100 * (test["cpu_s"] / base["cpu_s"] - 1)
    return f"wall {wall:+6.2f}%  cpu {cpu:+6.2f}%  samples {test.get('samples_total', 0):.0f}"


# ----------------------------------------------------------------- summaries


def _median_spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "spread": (ordered[-1] - ordered[0]) / 2,
        "n": len(ordered),
    }


def _median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if key in r and r[key] is not None]
    return statistics.median(values) if values else None


def summarise(pairs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key = f"{pair['workload']}/{pair['contender']}"
        cell = cells.setdefault(
            key, {"workload": pair["workload"], "contender": pair["contender"], "pairs": []}
        )
        cell["pairs"].append(pair)
    for cell in cells.values():
        good = [p for p in cell["pairs"] if _ok(p["base"]) and _ok(p["test"])]
        tests = [p["test"] for p in good]
        unavailable = [
            p["test"]["unavailable"] for p in cell["pairs"] if "unavailable" in p["test"]
        ]
        errors = [
            p["test"].get("error") or p["base"].get("error")
            for p in cell["pairs"]
            if "error" in p["test"] or "error" in p["base"]
        ]
        if unavailable:
            cell["unavailable"] = unavailable[0]
        if errors:
            cell["errors"] = errors
        cell["wall_overhead_pct"] = _median_spread(
            [100 * (p["test"]["wall_s"] / p["base"]["wall_s"] - 1) for p in good]
        )
        cell["cpu_overhead_pct"] = _median_spread(
            [100 * (p["test"]["cpu_s"] / p["base"]["cpu_s"] - 1) for p in good]
        )
        for key in (
            "achieved_per_thread",
            "achieved_pct",
            "achieved_min_pct",
            "attribution_error_pp",
            "gil_samples_pct",
            "gil_truth_pct",
            "payload_bytes_per_min",
            "samples_total",
        ):
            cell[key] = _median_of(tests, key)
        cell["peak_rss_mib"] = _median_of([{"v": t["peak_rss_kib"] / 1024} for t in tests], "v")
        cell["base_peak_rss_mib"] = _median_of(
            [{"v": p["base"]["peak_rss_kib"] / 1024} for p in good], "v"
        )
        cell["profiler_cpu_pct"] = _median_of(
            [
                {"v": 100 * t["profiler_cpu_s"] / t["wall_s"]}
                for t in tests
                if "profiler_cpu_s" in t
            ],
            "v",
        )
        cell["sampler_threads_cpu_pct"] = _median_of(
            [
                {"v": t.get("steady_sampler_threads_cpu_pct", 100 * t["sampler_threads_cpu_s"] / t["wall_s"])}
                for t in tests
                if t.get("sampler_threads_cpu_s")
            ],
            "v",
        )
        for key in ("rps", "p50_ms", "p99_ms"):
            cell[key] = _median_of([t.get("extra", {}) for t in tests], key)
            cell["base_" + key] = _median_of([p["base"].get("extra", {}) for p in good], key)
        cell["base_payload_bytes_per_min"] = _median_of(
            [p["base"] for p in good], "payload_bytes_per_min"
        )
        attributions = [t["attribution"] for t in tests if "attribution" in t]
        if attributions:
            cell["attribution_example"] = attributions[len(attributions) // 2]
        notes = [n for t in tests for n in t.get("notes", [])]
        if notes:
            cell["notes_example"] = notes[-1]
    return cells


def run_cost(
    runner: Runner, contenders: list[str], reps: int, blocks: int, scale: float, log: Any
) -> dict[str, dict[str, Any]]:
    """Cost per sample: in each of `reps` fresh processes, blocks of cpu_deep
    alternate with the profiler off and on at the highest rate, in two sizes;
    CPU difference = fixed (stop and send) + per_sample x samples of the
    running thread. Median over processes."""
    out: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for rep in range(reps):
        for contender in contenders:
            if any("unavailable" in r for r in runs[contender]):
                continue
            result = runner.run("cpu_deep", contender, MAX_RATE, scale, cost_blocks=blocks)
            runs[contender].append(result)
            if not _ok(result) or "samples_large" not in result:
                continue
            # medians of per-block differences resist a busy neighbour
            diffs = {
                size: statistics.median(
                    a - b for a, b in zip(result[f"cpu_on_{size}_s"], result[f"cpu_off_{size}_s"])
                )
                for size in ("large", "small")
            }
            samples = {size: statistics.median(result[f"samples_{size}"]) for size in diffs}
            if samples["large"] <= samples["small"]:
                continue
            per_sample = (diffs["large"] - diffs["small"]) / (samples["large"] - samples["small"])
            result["us_per_sample"] = 1e6 * per_sample
            result["fixed_ms"] = 1e3 * (diffs["small"] - per_sample * samples["small"])
            result["us_per_sample_with_fixed"] = 1e6 * diffs["large"] / samples["large"]
            on = result["cpu_on_large_s"]
            result["samples_per_s"] = samples["large"] / statistics.median(on)
            result["overhead_pct"] = 100 * statistics.median(
                a / b - 1 for a, b in zip(on, result["cpu_off_large_s"])
            )
            log(
                f"  rep {rep + 1}/{reps} {contender:<13} {result['us_per_sample']:8.2f} us/sample "
                f"(+{result['fixed_ms']:.2f} ms per stop-and-send), "
                f"{result['samples_per_s']:.0f} samples/s, CPU {result['overhead_pct']:+.2f}%"
            )
    for contender, results in runs.items():
        good = [r for r in results if "us_per_sample" in r]
        entry: dict[str, Any] = {
            "us_per_main_sample": _median_spread([r["us_per_sample"] for r in good]),
            "fixed_ms": _median_spread([r["fixed_ms"] for r in good]),
            "us_per_sample_with_fixed": _median_spread(
                [r["us_per_sample_with_fixed"] for r in good]
            ),
            "samples_per_s": statistics.median([r["samples_per_s"] for r in good])
            if good
            else None,
            "overhead_pct": _median_spread([r["overhead_pct"] for r in good]),
            "runs": results,
        }
        unavailable = [r["unavailable"] for r in results if "unavailable" in r]
        if unavailable:
            entry["unavailable"] = unavailable[0]
        out[contender] = entry
    return out


STEADY_CHUNK_S = 2.0  # chunks are cut (and serialised) inside the window


def run_steady(
    runner: Runner, contenders: list[str], reps: int, warmup_s: float, window_s: float, log: Any,
    rate: int = RATE,
) -> dict[str, dict[str, Any]]:
    """The steady state (benchmarks/steady.py): for each repetition, each
    variant, each contender in a shuffled order, a fresh process; medians
    over repetitions."""
    rng = random.Random(20261207)
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(reps):
        for variant, idle_threads in STEADY_VARIANTS.items():
            order = list(contenders)
            rng.shuffle(order)
            for contender in order:
                result = runner.run(
                    "steady",
                    contender,
                    rate,
                    1.0,
                    steady=True,
                    idle_threads=idle_threads,
                    steady_warmup_s=warmup_s,
                    steady_window_s=window_s,
                    chunk_seconds=STEADY_CHUNK_S,
                )
                runs.setdefault(f"{variant}/{contender}", []).append(result)
                if _ok(result):
                    log(
                        f"  rep {rep + 1}/{reps} {variant:<14} {contender:<13} others "
                        f"{result['others_cpu_pct']:.3f}% profiler {result['profiler_cpu_pct']:.3f}% "
                        f"hand-offs {result['handoffs_per_s']:.1f}/s "
                        f"(start {result['startup_handoffs']}) "
                        f"us/busy sample {_fmt(result.get('us_per_busy_sample'), 1)}"
                    )
    out: dict[str, dict[str, Any]] = {}
    for key, results in runs.items():
        good = [r for r in results if _ok(r)]
        entry: dict[str, Any] = {"runs": results}
        for field in (
            "others_cpu_pct",
            "profiler_cpu_pct",
            "handoffs_per_s",
            "startup_handoffs",
            "samples",
            "busy_samples_pct",
            "us_per_sample",
            "us_per_busy_sample",
        ):
            entry[field] = _median_spread([r[field] for r in good if r.get(field) is not None])
        unavailable = [r["unavailable"] for r in results if "unavailable" in r]
        if unavailable:
            entry["unavailable"] = unavailable[0]
        out[key] = entry
    return out


def summarise_soak(result: dict[str, Any]) -> dict[str, Any]:
    if not _ok(result):
        return {"unavailable": result.get("unavailable"), "error": result.get("error")}
    series = result["soak"]["rss_series_kib"]
    if len(series) < 4:
        return {"error": "too short"}
    quarter = max(1, len(series) // 4)
    early = statistics.median(v for _, v in series[quarter : 2 * quarter])
    late = statistics.median(v for _, v in series[-quarter:])
    threads = result["soak"]["threads"]
    samples = result.get("samples_total", 0)
    return {
        "seconds": series[-1][0],
        "samples": samples,
        "threads": threads,
        "equivalent_hours_at_101hz": samples / (RATE * 3600 * threads) if threads else None,
        "rss_early_mib": early / 1024,
        "rss_late_mib": late / 1024,
        "growth_mib": (late - early) / 1024,
        "peak_rss_mib": result["peak_rss_kib"] / 1024,
    }


# ----------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _fmt_ms(stat: dict[str, float] | None, digits: int = 2) -> str:
    if stat is None:
        return "-"
    return f"{stat['median']:+.{digits}f} ±{stat['spread']:.{digits}f}"


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = results["meta"]
    lines.append(
        f"Machine: {meta['cpu']} ({meta['cores']} cores), {meta['os']}; Python {meta['python']}; "
        f"{meta['date']}; profile {meta['profile']} ({meta['reps']} interleaved pairs per cell)."
    )
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())))
    if meta.get("caveat"):
        lines.append(f"Caveat: {meta['caveat']}")
    cells = results["cells"]
    if cells:
        lines.append("")
        lines.append(f"Overhead at {RATE} Hz, median ±half-range over pairs, vs no profiler:")
        lines.append("")
        lines.append(
            "| workload | contender | wall % | CPU % | samples/s/thread (% of asked) "
            "| attribution err pp | peak RSS MiB | payload KiB/min | notes |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
    for workload in results["workloads"]:
        for contender in results["contenders"]:
            cell = cells.get(f"{workload}/{contender}")
            if cell is None:
                continue
            if (
                cell.get("unavailable")
                and not cell["pairs"]
                or (cell.get("unavailable") and cell["wall_overhead_pct"] is None)
            ):
                lines.append(
                    f"| {workload} | {contender} | n/a | n/a | n/a | n/a | n/a | n/a | "
                    f"unavailable: {cell['unavailable'][:80]} |"
                )
                continue
            notes = []
            if cell.get("gil_samples_pct") is not None:
                notes.append(
                    f"in GIL C calls {cell['gil_samples_pct']:.0f}% of samples "
                    f"vs {cell['gil_truth_pct']:.0f}% of time"
                )
            if cell.get("profiler_cpu_pct") is not None:
                notes.append(f"py-spy itself {cell['profiler_cpu_pct']:.1f}% of a core")
            if cell.get("sampler_threads_cpu_pct") is not None:
                notes.append(
                    f"sampler threads {cell['sampler_threads_cpu_pct']:.2f}% of a core"
                )
            if cell.get("rps") is not None:
                notes.append(
                    f"{cell['rps']:.0f} req/s, p50 {cell['p50_ms']:.1f} ms, "
                    f"p99 {cell['p99_ms']:.1f} ms (none: {_fmt(cell['base_rps'], 0)} "
                    f"req/s, p50 {_fmt(cell['base_p50_ms'])}, p99 "
                    f"{_fmt(cell['base_p99_ms'])})"
                )
            if cell.get("errors"):
                notes.append(f"{len(cell['errors'])} failed runs")
            achieved = "-"
            if cell.get("achieved_per_thread") is not None:
                achieved = (
                    f"{cell['achieved_per_thread']:.1f} ({cell['achieved_pct']:.0f}%, "
                    f"min {cell['achieved_min_pct']:.0f}%)"
                )
            payload = cell.get("payload_bytes_per_min")
            lines.append(
                f"| {workload} | {contender} | {_fmt_ms(cell['wall_overhead_pct'])} "
                f"| {_fmt_ms(cell['cpu_overhead_pct'])} | {achieved} "
                f"| {_fmt(cell.get('attribution_error_pp'))} "
                f"| {_fmt(cell.get('peak_rss_mib'))} (none {_fmt(cell.get('base_peak_rss_mib'))}) "
                f"| {_fmt(None if payload is None else payload / 1024)} "
                f"| {'; '.join(notes)} |"
            )
    steady = results.get("steady")
    if steady:
        lines.extend(render_steady(steady, results.get("steady_rate", RATE)))
    cost = results.get("cost")
    if cost:
        lines.append("")
        lines.append(
            f"Cost per sample at {MAX_RATE} Hz on cpu_deep: in one process, blocks with the "
            "profiler on and off alternate, in two sizes; the median CPU difference per block "
            "= fixed cost of each stop-and-send + cost per sample x samples of the running "
            "thread. Median ±half-range over fresh processes. At 101 Hz the overhead is cost "
            "x 101 per running thread (the fixed cost is paid once per chunk, every 60 s):"
        )
        lines.append("")
        lines.append(
            "| contender | us per sample | fixed ms per stop-and-send | us per sample incl. "
            "fixed | samples per CPU-second | CPU % at 500 Hz (large blocks) | implied CPU % at 101 Hz |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for contender, entry in cost.items():
            if entry.get("unavailable"):
                lines.append(f"| {contender} | n/a ({entry['unavailable'][:60]}) | | | | | |")
                continue
            stat = entry.get("us_per_main_sample")
            implied = None if stat is None else stat["median"] * RATE / 1e4
            lines.append(
                f"| {contender} | {_fmt_ms(stat, 2)} | {_fmt_ms(entry.get('fixed_ms'), 2)} "
                f"| {_fmt_ms(entry.get('us_per_sample_with_fixed'), 2)} "
                f"| {_fmt(entry.get('samples_per_s'), 0)} "
                f"| {_fmt_ms(entry.get('overhead_pct'), 2)} | {_fmt(implied, 3)} |"
            )
    soak = results.get("soak")
    if soak:
        lines.append("")
        lines.append(
            f"Memory over a long session compressed by a {MAX_RATE} Hz rate and short "
            "chunks (varied stacks on 5 threads):"
        )
        lines.append("")
        lines.append(
            "| contender | seconds | samples | equiv. hours at 101 Hz | RSS early MiB "
            "| RSS late MiB | growth MiB |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for contender, entry in soak.items():
            if "rss_early_mib" not in entry:
                lines.append(
                    f"| {contender} | n/a: {entry.get('unavailable') or entry.get('error')}"
                    " | | | | | |"
                )
                continue
            lines.append(
                f"| {contender} | {entry['seconds']:.0f} | {entry['samples']} "
                f"| {_fmt(entry['equivalent_hours_at_101hz'], 2)} | {entry['rss_early_mib']:.1f} "
                f"| {entry['rss_late_mib']:.1f} | {entry['growth_mib']:+.1f} |"
            )
    native = results.get("native")
    if native and native.get("table"):
        lines.append("")
        lines.append("Native core microbenchmark (benchmarks/bench_native.py):")
        lines.append("")
        lines.extend(native["table"])
    targets = results.get("targets")
    if targets:
        lines.append("")
        lines.append("Targets (reported, never asserted):")
        lines.append("")
        for target in targets:
            lines.append(f"- [{target['status']}] {target['target']}: {target['figure']}")
    return "\n".join(lines)


def render_steady(steady: dict[str, dict[str, Any]], rate: int) -> list[str]:
    from steady import STARTUP_WINDOW_S

    lines = [
        "",
        (
            f"Steady state at {rate} Hz (benchmarks/steady.py): one busy thread 60 frames "
            "deep, alone or with 200 idle threads; continuous profiling, envelopes serialised "
            f"and discarded in the process, {STEADY_CHUNK_S:.0f} s chunks; over a window after "
            "a warm-up, from /proc/self/task. Others: CPU of every thread but the profiled "
            "ones; profiler: the profiler's own threads; hand-offs: the busy thread's voluntary "
            "context switches (about one per GIL hand-off); start: the same over the first "
            f"{1000 * STARTUP_WINDOW_S:.0f} ms of the session; samples of the busy thread "
            "against a sample per tick of its clock; per sample: others' CPU over the samples "
            "of the window (all threads', the busy thread's). Median ±half-range over fresh "
            "processes:"
        ),
        "",
        (
            "| threads | contender | others, % of a core | profiler threads, % "
            "| GIL hand-offs/s | hand-offs at start | samples of the busy thread, % of owed "
            "| µs per sample | µs per busy-thread sample |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict[str, Any], field: str, digits: int) -> str:
        stat = entry.get(field)
        if not stat:
            return "-"
        return f"{stat['median']:.{digits}f} ±{stat['spread']:.{digits}f}"

    for key, entry in steady.items():
        variant, contender = key.split("/", 1)
        if entry.get("unavailable"):
            lines.append(f"| {variant} | {contender} | n/a ({entry['unavailable'][:60]}) "
                         "| | | | | | |")
            continue
        lines.append(
            f"| {variant} | {contender} | {cell(entry, 'others_cpu_pct', 3)} "
            f"| {cell(entry, 'profiler_cpu_pct', 3)} | {cell(entry, 'handoffs_per_s', 1)} "
            f"| {cell(entry, 'startup_handoffs', 0)} | {cell(entry, 'busy_samples_pct', 1)} "
            f"| {cell(entry, 'us_per_sample', 2)} | {cell(entry, 'us_per_busy_sample', 1)} |"
        )
    return lines


# ----------------------------------------------------------------- targets


def check_targets(results: dict[str, Any]) -> list[dict[str, str]]:
    cells = results["cells"]
    out: list[dict[str, str]] = []

    def add(target: str, met: bool | None, figure: str) -> None:
        status = "no data / inconclusive" if met is None else ("met" if met else "MISSED")
        out.append({"target": target, "status": status, "figure": figure})

    def med(cell: dict[str, Any] | None, key: str) -> float | None:
        if not cell or not cell.get(key):
            return None
        return float(cell[key]["median"])

    if cells:  # the matrix ran
        for clock in ("sigprof_wall", "sigprof_cpu"):
            cell = cells.get(f"cpu_deep/{clock}")
            wall, cpu = med(cell, "wall_overhead_pct"), med(cell, "cpu_overhead_pct")
            worst = None if wall is None or cpu is None else max(wall, cpu)
            add(
                f"{clock}: overhead <= 0.5% on cpu_deep at 101 Hz",
                None if worst is None else worst <= 0.5,
                f"wall {_fmt(wall, 2)}%, CPU {_fmt(cpu, 2)}%",
            )
        for clock in ("sigprof_wall", "sigprof_cpu"):
            ratios = []
            verdicts = []
            for workload in results["workloads"]:
                ours = med(cells.get(f"{workload}/{clock}"), "cpu_overhead_pct")
                theirs = med(cells.get(f"{workload}/sentry_cont"), "cpu_overhead_pct")
                if ours is None or theirs is None:
                    continue
                # overheads under 0.1% are below what a run can resolve: clamp
                ratio = theirs / max(ours, 0.1)
                verdicts.append(ratio >= 10)
                ratios.append(f"{workload} {ratio:.1f}x ({_fmt(theirs, 2)}% vs {_fmt(ours, 2)}%)")
            add(
                f"{clock}: CPU overhead >= 10x lower than sentry-sdk's continuous profiler on "
                "every workload (ours clamped at 0.1%)",
                all(verdicts) if verdicts else None,
                "; ".join(ratios) or "-",
            )
        for clock in ("sigprof_wall", "sigprof_cpu"):
            # Idle threads cost sigprof's own threads only (they are never
            # signalled): judged by those threads' CPU while the idle threads
            # wait (their start-up, paid once per thread, excluded), which
            # schedstat measures to the nanosecond; the whole-process figure is
            # shown beside it.
            idle_cell, deep_cell = cells.get(f"idle_threads/{clock}"), cells.get(f"cpu_deep/{clock}")
            idle = (idle_cell or {}).get("sampler_threads_cpu_pct")
            deep = (deep_cell or {}).get("sampler_threads_cpu_pct")
            extra = None if idle is None or deep is None else idle - deep
            idle_all, deep_all = med(idle_cell, "cpu_overhead_pct"), med(deep_cell, "cpu_overhead_pct")
            add(
                f"{clock}: 200 idle threads add <= 0.2% of a core (sampler threads' CPU, "
                "idle_threads minus cpu_deep)",
                None if extra is None else extra <= 0.2,
                f"{_fmt(extra, 3)} pp (sampler threads {_fmt(idle, 3)}% vs {_fmt(deep, 3)}%); "
                f"whole-process CPU overhead idle_threads {_fmt(idle_all, 2)}%, "
                f"cpu_deep {_fmt(deep_all, 2)}%",
            )
        for clock in ("sigprof_wall", "sigprof_cpu"):
            figures = []
            verdicts = []
            for workload in results["workloads"]:
                cell = cells.get(f"{workload}/{clock}")
                if cell and cell.get("achieved_min_pct") is not None:
                    figures.append(f"{workload} {cell['achieved_min_pct']:.1f}%")
                    verdicts.append(cell["achieved_min_pct"] >= 98)
            add(
                f"{clock}: >= 98% of requested samples per running thread (worst thread)",
                all(verdicts) if verdicts else None,
                ", ".join(figures) or "-",
            )
        for clock in ("sigprof_wall", "sigprof_cpu"):
            figures = []
            verdicts = []
            for workload in results["workloads"]:
                cell = cells.get(f"{workload}/{clock}")
                if cell and cell.get("attribution_error_pp") is not None:
                    figures.append(f"{workload} {cell['attribution_error_pp']:.1f}")
                    verdicts.append(cell["attribution_error_pp"] <= 2)
            add(
                f"{clock}: attribution error <= 2 pp",
                all(verdicts) if verdicts else None,
                ", ".join(figures) or "-",
            )
        for contender in ("sigprof_wall", "sigprof_cpu", "sentry_cont"):
            cell = cells.get(f"gil_c_call/{contender}")
            if cell and cell.get("gil_samples_pct") is not None:
                gap = cell["gil_samples_pct"] - cell["gil_truth_pct"]
                add(
                    f"{contender}: samples inside GIL-holding C calls in proportion to their time "
                    "(within 2 pp)",
                    abs(gap) <= 2,
                    f"{cell['gil_samples_pct']:.1f}% of samples vs {cell['gil_truth_pct']:.1f}% "
                    f"of time",
                )
    for contender, entry in (results.get("soak") or {}).items():
        if "growth_mib" in entry:
            add(
                f"{contender}: flat memory over the long run (growth <= 2 MiB)",
                entry["growth_mib"] <= 2,
                f"{entry['growth_mib']:+.1f} MiB over {entry['samples']} samples",
            )
    cost = results.get("cost") or {}

    def cost_of(name: str) -> float | None:
        stat = (cost.get(name) or {}).get("us_per_main_sample")
        return None if not stat else float(stat["median"])

    theirs = cost_of("sentry_cont")
    for clock in ("sigprof_wall", "sigprof_cpu"):
        ours = cost_of(clock)
        if ours is None:
            continue
        implied = ours * RATE / 1e4
        add(
            f"{clock}: overhead at 101 Hz implied by the cost per sample <= 0.5%",
            implied <= 0.5,
            f"{ours:.1f} us per sample x {RATE} Hz = {implied:.3f}%",
        )
        if theirs is not None:
            ratio = theirs / max(ours, 0.1)
            add(
                f"{clock}: cost per running-thread sample >= 10x lower than sentry-sdk's "
                "continuous profiler",
                ratio >= 10,
                f"{ratio:.1f}x ({theirs:.1f} us vs {ours:.1f} us)",
            )
    check_steady_targets(results.get("steady") or {}, add, results.get("steady_rate", RATE))
    native = results.get("native") or {}
    capture = (native.get("capture") or {}).get("60")
    if capture:
        figure = f"{capture['us_median']:.2f} us (spread ±{capture['us_spread']:.2f})"
        callgrind = (native.get("callgrind") or {}).get("60")
        if callgrind:
            figure += f"; callgrind {callgrind['instructions_per_capture']:.0f} instructions"
        # a spread wider than the target means the timing cannot tell
        met = None if capture["us_spread"] > 2 else capture["us_median"] <= 2
        add("capture of a 60-frame stack <= 2 us", met, figure)
    return out


def check_steady_targets(
    steady: dict[str, dict[str, Any]], add: Callable[[str, bool | None, str], None], rate: int
) -> None:
    """Issue 15's targets for the steady state, in both clocks: at 101 Hz
    all of them; at 500 Hz the cost per sample and the samples kept."""

    def med(variant: str, contender: str, field: str) -> float | None:
        stat = (steady.get(f"{variant}/{contender}") or {}).get(field)
        return None if not stat else float(stat["median"])

    shares = (("busy", 0.1, 20), ("busy+200 idle", 0.5, 30)) if rate == RATE else ()
    for variant, ceiling, factor in shares:
        theirs = med(variant, "sentry_cont", "others_cpu_pct")
        for clock in ("sigprof_wall", "sigprof_cpu"):
            ours = med(variant, clock, "others_cpu_pct")
            if ours is None:
                continue
            add(
                f"{clock}, {variant}: CPU of the threads but the profiled ones <= {ceiling}% "
                "of a core",
                ours <= ceiling,
                f"{ours:.3f}%",
            )
            if theirs is not None:
                # below 0.01% a share is under what a 6 s window resolves: clamp
                ratio = theirs / max(ours, 0.01)
                add(
                    f"{clock}, {variant}: >= {factor}x below sentry-sdk's continuous profiler",
                    ratio >= factor,
                    f"{ratio:.1f}x ({theirs:.3f}% vs {ours:.3f}%)",
                )
    for clock in ("sigprof_wall", "sigprof_cpu"):
        for variant in STEADY_VARIANTS:
            handoffs = med(variant, clock, "handoffs_per_s")
            start = med(variant, clock, "startup_handoffs")
            if handoffs is not None and rate == RATE:
                add(
                    f"{clock}, {variant}: GIL hand-offs <= 1 a second in the steady state, "
                    "<= 1 at session start",
                    handoffs <= 1 and start is not None and start <= 1,
                    f"{handoffs:.1f}/s, {_fmt(start, 0)} at start",
                )
            kept = med(variant, clock, "busy_samples_pct")
            if kept is not None:
                add(
                    f"{clock}, {variant}: >= 98% of the asked samples of the busy thread",
                    kept >= 98,
                    f"{kept:.1f}%",
                )
        cost = med("busy", clock, "us_per_busy_sample")
        ceiling_us = {RATE: 15, MAX_RATE: 8}.get(rate)
        if cost is not None and ceiling_us is not None:
            add(
                f"{clock}: end-to-end cost per running-thread sample <= {ceiling_us} us at {rate} Hz",
                cost <= ceiling_us,
                f"{cost:.1f} us",
            )


# ----------------------------------------------------------------- main


def _versions() -> dict[str, str]:
    from importlib import metadata

    out: dict[str, str] = {}
    for name in ("sigprof", "sentry-sdk", "vmprof", "pyinstrument", "py-spy", "flask"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 3 minutes")
    parser.add_argument("--python", help="interpreter for the venv: a path or a pyenv version")
    parser.add_argument(
        "--no-venv",
        action="store_true",
        help="run in this interpreter as it is (everything already installed)",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild sigprof even if unchanged")
    parser.add_argument(
        "--sigprof-source",
        choices=["tree", "head"],
        default="tree",
        help="build sigprof from the working tree (default) or the last commit",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--reps", type=int, help="pairs per (workload, contender)")
    parser.add_argument("--steady-rate", type=int, choices=(RATE, MAX_RATE), default=RATE,
                        help="the steady state's sampling rate (issue 15's targets: 101 Hz; "
                             "at 500 Hz, the cost per sample)")
    parser.add_argument("--skip", default="", help="comma list of: " + ",".join(PARTS))
    parser.add_argument(
        "--only", default="", help="comma list of the parts to run (the others are skipped)"
    )
    parser.add_argument(
        "--sigprof-via",
        choices=["sampler", "init"],
        default=None,
        help="drive sigprof through sigprof.Sampler or sigprof.init "
        "(default: contenders.SIGPROF_VIA_INIT)",
    )
    parser.add_argument("--caveat", default="", help="a note printed with the table")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args()

    if not args.no_venv:
        from _venv import ensure_venv

        ensure_venv(args.python, rebuild=args.rebuild, source=args.sigprof_source)

    from contenders import SIGPROF_VIA_INIT
    from sink import Sink

    profile_name = "quick" if args.quick else "full"
    profile = dict(PROFILES[profile_name])
    if args.reps:
        profile["reps"] = args.reps
    workloads = [w for w in args.workloads.split(",") if w]
    contenders = [c for c in args.contenders.split(",") if c]
    skip = set(args.skip.split(","))
    if args.only:
        skip |= set(PARTS) - set(args.only.split(","))
    sigprof_via = args.sigprof_via or ("init" if SIGPROF_VIA_INIT else "sampler")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    sink = Sink().start()
    runner = Runner(sink, sigprof_via, log)
    now = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, Any] = {
        "meta": {
            "date": now.strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}",
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "profile": profile_name,
            "reps": profile["reps"],
            "settings": {k: v for k, v in profile.items() if k != "native"},
            "sigprof_via": sigprof_via,
            "versions": _versions(),
            "loadavg_start": os.getloadavg(),
            "caveat": args.caveat,
        },
        "workloads": workloads,
        "contenders": contenders,
    }
    scale_for = {w: profile["web_scale"] if w == "web" else profile["scale"] for w in workloads}

    if "matrix" not in skip:
        log(
            f"== matrix: {len(workloads)} workloads x {len(contenders)} contenders x "
            f"{profile['reps']} pairs at {RATE} Hz"
        )
        pairs = run_pairs(
            runner,
            workloads,
            contenders,
            profile["reps"],
            RATE,
            scale_for,
            log,
            budget_s=profile["matrix_budget_s"],
        )
        results["pairs"] = pairs
        results["cells"] = summarise(pairs)
    else:
        results["cells"] = {}

    if "cost" not in skip:
        log(f"== cost per sample at {MAX_RATE} Hz on cpu_deep")
        results["cost"] = run_cost(
            runner,
            COST_CONTENDERS,
            profile["cost_reps"],
            profile["cost_blocks"],
            profile["cost_scale"],
            log,
        )

    if "steady" not in skip:
        log(f"== steady state at {args.steady_rate} Hz")
        results["steady_rate"] = args.steady_rate
        results["steady"] = run_steady(
            runner,
            STEADY_CONTENDERS,
            profile["steady_reps"],
            profile["steady_warmup_s"],
            profile["steady_window_s"],
            log,
            rate=args.steady_rate,
        )

    if "soak" not in skip:
        results["soak"] = {}
        results["soak_runs"] = {}
        for contender in SOAK_CONTENDERS:
            log(
                f"== soak: {contender} for {profile['soak_seconds']} s at {MAX_RATE} Hz, "
                f"{profile['chunk_seconds']} s chunks"
            )
            run = runner.run(
                "soak",
                contender,
                MAX_RATE,
                1.0,
                soak=True,
                soak_seconds=profile["soak_seconds"],
                chunk_seconds=profile["chunk_seconds"],
            )
            results["soak_runs"][contender] = run
            results["soak"][contender] = summarise_soak(run)

    if "native" not in skip:
        log("== native core microbenchmark")
        native = subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "bench_native.py"),
                "--no-venv",
                "--json",
                *profile["native"],
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if native.returncode == 0 and native.stdout.strip():
            results["native"] = json.loads(native.stdout.strip().splitlines()[-1])
        else:
            log(f"  ! bench_native failed: {native.stderr[-2000:]}")
            results["native"] = {"error": native.stderr[-2000:]}

    sink.stop()
    results["targets"] = check_targets(results)
    results["meta"]["elapsed_s"] = time.perf_counter() - started
    results["meta"]["loadavg_end"] = os.getloadavg()
    table = render(results)
    os.makedirs(args.output, exist_ok=True)
    stem = f"{now.strftime('%Y%m%dT%H%M%SZ')}-py{platform.python_version()}-{profile_name}"
    with open(os.path.join(args.output, stem + ".json"), "w") as handle:
        json.dump(results, handle, indent=1, default=str)
    with open(os.path.join(args.output, stem + ".md"), "w") as handle:
        handle.write(table + "\n")
    print(table)
    log(
        f"\nwrote {os.path.join(args.output, stem)}.json and .md "
        f"in {results['meta']['elapsed_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
