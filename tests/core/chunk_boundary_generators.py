"""Creates generators at every stack depth up to a few data-stack chunks deep,
while sampling at the highest frequency: on 3.11+ CPython frees a chunk an
instant before it unlinks the frame that lived there (RETURN_GENERATOR), so a
sample landing then reads freed memory. Exits 0 if the process survives."""

import sys
import time

import sigprof


def at_depth(depth: int) -> int:
    if depth:
        return at_depth(depth - 1)
    total = 0
    for _ in range(20):
        total += sum(i for i in range(3))
    return total


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    clock = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    sampler = sigprof.Sampler(frequency=500, clock=clock)
    with sampler:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for depth in range(400):
                at_depth(depth)
    stats = sampler.stats()
    print("samples", stats["samples"], "unresolved", stats["unresolved_frames"])


if __name__ == "__main__":
    main()
