"""Runs the sampling workload under valgrind memcheck and fails on any invalid
read or write, any use of uninitialised memory, or any definite leak whose
stack passes through sigprof's code. CPython's own exit-time leaks (it does
not free everything at exit) are reported in the count, not failed on.

    PYTHONMALLOC=malloc is set here, so that memcheck sees every allocation.
    usage: python tests/valgrind/run_memcheck.py [python-executable]
"""

import os
import re
import subprocess
import sys
from pathlib import Path

WORKLOAD = Path(__file__).with_name("workload.py")
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


def main() -> int:
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    env = dict(os.environ, PYTHONMALLOC="malloc")
    command = ["valgrind", "--tool=memcheck", "--leak-check=full",
               "--show-leak-kinds=definite", "--num-callers=40", "--track-origins=no",
               python, str(WORKLOAD)]
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=1800)
    log = result.stderr
    if result.returncode != 0:
        print(log[-5000:])
        print(f"the workload failed under valgrind (exit {result.returncode})")
        return 1
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
        return 1
    print("memcheck: no invalid access, no uninitialised use, no definite leak in sigprof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
