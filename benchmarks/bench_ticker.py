"""The CPU of sigprof's own native threads (the ticker and the collector).

    python3 benchmarks/bench_ticker.py [--reps 3] [--seconds 5]

One busy thread sampled at 101 Hz through `sigprof.Sampler`, in each clock,
with no idle threads and with 200 (threads waiting on an event), in fresh
processes, interleaved. After a second of warm-up, the CPU time of the
threads named `sigprof-*` is read from /proc/self/task/*/schedstat over the
measured seconds (draining twice a second, as the housekeeping thread would)
and printed as a percentage of a core: the median of the repetitions, with
the spread. The drain and the signal handlers run on the sampled threads and
are not counted here (benchmarks/run.py measures them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time


def own_thread_cpu_ns() -> dict[str, int]:
    cpu: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm_file:
                comm = comm_file.read().strip()
            if comm.startswith("sigprof-"):
                with open(f"/proc/self/task/{tid}/schedstat") as schedstat:
                    cpu[comm] = cpu.get(comm, 0) + int(schedstat.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return cpu


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def measure(clock: str, idle_threads: int, seconds: float) -> dict[str, float]:
    import sigprof

    stop = threading.Event()
    idle = [threading.Thread(target=stop.wait, daemon=True) for _ in range(idle_threads)]
    for thread in idle:
        thread.start()
    sampler = sigprof.Sampler(frequency=101, clock=clock)
    with sampler:
        spin(1.0)
        before, started = own_thread_cpu_ns(), time.monotonic()
        for _ in range(int(seconds * 2)):
            spin(0.5)
            sampler.samples()
        after, elapsed = own_thread_cpu_ns(), time.monotonic() - started
    stop.set()
    return {name: (after[name] - before.get(name, 0)) / 1e9 / elapsed * 100 for name in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--child", nargs=2, metavar=("CLOCK", "IDLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.seconds)))
        return
    cells = [(clock, idle) for clock in ("wall", "cpu") for idle in (0, 200)]
    results: dict[tuple[str, int], list[float]] = {cell: [] for cell in cells}
    for _ in range(args.reps):
        for clock, idle in cells:
            output = subprocess.run(
                [sys.executable, __file__, "--seconds", str(args.seconds), "--child", clock, str(idle)],
                check=True, capture_output=True, text=True,
            ).stdout
            results[(clock, idle)].append(sum(json.loads(output).values()))
    print("| clock | idle threads | sigprof's native threads, % of a core (median, min-max) |")
    print("|---|---|---|")
    for (clock, idle), figures in results.items():
        print(f"| {clock} | {idle} | {statistics.median(figures):.3f} "
              f"({min(figures):.3f}-{max(figures):.3f}) |")


if __name__ == "__main__":
    main()
