"""Runs sampling workloads under valgrind memcheck and fails on any invalid
read or write, any use of uninitialised memory, or any definite leak whose
stack passes through sigprof's code. CPython's own exit-time leaks (it does
not free everything at exit) are suppressed where cpython.supp names them and
reported in the count, not failed on, otherwise. The frame walkers' reads of
memory the program may be changing are suppressed where frame_walkers.supp
names the walker (csrc/frame_walk.h says why).

The workloads: workload.py, then the stress scenarios (tests/stress), short:
a soak writing local chunk files, thread churn in both clocks, and forks
(a loop and a fork pool) under thread churn.

    PYTHONMALLOC=malloc is set here, so that memcheck sees every allocation.
    usage: python tests/valgrind/run_memcheck.py [python-executable]
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOAD = Path(__file__).with_name("workload.py")
SUPPRESSIONS = [Path(__file__).with_name(name) for name in ("cpython.supp", "frame_walkers.supp")]
SCENARIOS = Path(__file__).parent.parent / "stress" / "scenarios.py"
OURS = re.compile(r"csrc/|_native\.|sigprof")
SERIOUS = ("Invalid read", "Invalid write", "Invalid free", "uninitialised",
           "Mismatched free", "overlap")


def error_blocks(log: str) -> list:
    blocks, current = [], []
    for line in log.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not body.strip():
            if current:
                blocks.append("\n".join(current))
                current = []
        else:
            current.append(body)
    if current:
        blocks.append("\n".join(current))
    return blocks


def workloads(scratch: str) -> list[list[str]]:
    """Arguments of each run; the stress scenarios shortened for valgrind's
    slowdown (about 50x), with fewer forks (each child is traced too)."""
    return [
        [str(WORKLOAD)],
        [str(SCENARIOS), "soak", "8", "--output-dir", scratch],
        [str(SCENARIOS), "churn", "3", "wall"],
        [str(SCENARIOS), "churn", "3", "cpu", "--forks", "12"],
    ]


def memcheck(python: str, arguments: list[str]) -> bool:
    env = dict(os.environ, PYTHONMALLOC="malloc")
    command = ["valgrind", "--tool=memcheck", "--leak-check=full",
               "--show-leak-kinds=definite", "--num-callers=40", "--track-origins=no",
               *(f"--suppressions={path}" for path in SUPPRESSIONS), python, *arguments]
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=1800)
    log = result.stderr
    if result.returncode != 0:
        own_lines = "\n".join(line for line in log.splitlines() if not line.startswith("=="))
        print(f"{log[-3000:]}\n--- the workload's own output ---\n{result.stdout[-3000:]}\n"
              f"{own_lines[-5000:]}")
        print(f"the workload failed under valgrind (exit {result.returncode})")
        return False
    failures = []
    leaks_elsewhere = 0
    for block in error_blocks(log):
        if any(kind in block for kind in SERIOUS):
            failures.append(block)
        elif "definitely lost" in block and "blocks are definitely lost" in block:
            if OURS.search(block):
                failures.append(block)
            else:
                leaks_elsewhere += 1
    summary = re.findall(r"ERROR SUMMARY: .*", log)
    print("\n".join(line for line in log.splitlines() if "samples" in line))
    print(summary[-1] if summary else "no error summary")
    print(f"definite leaks outside sigprof (CPython exit-time): {leaks_elsewhere}")
    if failures:
        print(f"{len(failures)} memcheck errors in or through sigprof:\n")
        print("\n\n".join(failures[:20]))
        return False
    return True


def main() -> int:
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    with tempfile.TemporaryDirectory(prefix="sigprof-memcheck-") as scratch:
        results = [memcheck(python, arguments) for arguments in workloads(scratch)]
    if not all(results):
        return 1
    print("memcheck: no invalid access, no uninitialised use, no definite leak in sigprof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
