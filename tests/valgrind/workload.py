"""A sampling workload for valgrind memcheck: both clocks, threads that start
and end, blocked threads, exec'd code dropped while sampling, deep stacks."""

import gc
import sys
import threading
import time

import sigprof


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def recurse(depth: int) -> None:
    if depth:
        recurse(depth - 1)
    else:
        spin(0.05)


def churn(count: int) -> None:
    for i in range(count):
        namespace: dict = {}
        source = f"def f_{i}():\n    return sum(range(2000))\n"
        exec(compile(source, f"<churn-{i}>", "exec"), namespace)  # noqa: S102 - code churn
        namespace[f"f_{i}"]()
        del namespace
        if i % 20 == 0:
            gc.collect()


def main() -> None:
    for clock in ("wall", "cpu"):
        sampler = sigprof.Sampler(frequency=200, clock=clock, max_stack_depth=32)
        blocker = threading.Event()
        sleeper = threading.Thread(target=blocker.wait)
        sleeper.start()
        with sampler:
            workers = [threading.Thread(target=spin, args=(0.05,)) for _ in range(3)]
            for worker in workers:
                worker.start()
            recurse(60)
            churn(200)
            for worker in workers:
                worker.join()
            blocker.set()
            sleeper.join()
            spin(0.1)
        samples = sampler.samples()
        stats = sampler.stats()
        print(clock, len(samples), "samples", stats["dropped"], "dropped", file=sys.stderr)
        if not samples:
            sys.exit("no samples under valgrind")


if __name__ == "__main__":
    main()
