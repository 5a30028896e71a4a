"""Builds the libFuzzer targets against each CPython found (the frame layouts
differ per version) with AddressSanitizer and UndefinedBehaviorSanitizer, and
runs each for a bounded time from the committed seeds.

    python tests/fuzz/run.py                      # every target, every version, 6 s each
    python tests/fuzz/run.py --seconds 600 --targets walk --pythons 3.12 --keep /tmp/fz

Targets: walk (sp_walk_stack, sp_stack_fingerprint), records (the resolver
over arbitrary ring records, line numbers checked against CPython's tables),
lines (the resolver over code objects whose line tables are fuzzer bytes).
Needs clang with libFuzzer (Debian: clang, libclang-rt-dev) and interpreters
built with --enable-shared. Exits 1 on any finding, naming the input that
reproduces it: `<binary> <input>`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "csrc"
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]
RESOLVER = ["fuzz_resolver.c", "intern.c", "hash_map.c", "ring_buffer.c"]
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    # name: (sources, defines)
    "walk": (["fuzz_frame_walk.c", "frame_walk.c", "platform.c"], []),
    "records": (RESOLVER, []),
    "lines": (RESOLVER, ["-DFZ_LINES"]),
}
CFLAGS = [
    "-g", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
    "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
]


def candidates(version: str) -> list[str]:
    """python<version> on PATH, else pyenv's (its shims need a selected version)."""
    found = [shutil.which(f"python{version}") or ""]
    if shutil.which("pyenv"):
        prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True, check=False)
        found.append(f"{prefix.stdout.strip()}/bin/python{version}" if prefix.returncode == 0 else "")
    return [path for path in found if path]


def interpreter(version: str) -> dict[str, str] | None:
    """Headers, library and prefix of python<version>, from its sysconfig."""
    query = (
        "import json, sys, sysconfig as s; v = s.get_config_var;"
        "c = {k: v(k) or '' for k in ('INCLUDEPY', 'LIBDIR', 'LDVERSION', 'Py_ENABLE_SHARED')};"
        "c['prefix'] = sys.base_prefix; print(json.dumps(c))"
    )
    for executable in candidates(version):
        result = subprocess.run([executable, "-c", query], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return {key: str(value) for key, value in json.loads(result.stdout).items()}
    return None


def build(targets: list[str], version: str, config: dict[str, str], out: Path) -> list[Path]:
    """Builds a version's targets at once (clang runs in parallel)."""
    jobs = []
    for target in targets:
        sources, defines = TARGETS[target]
        paths = [str(HERE / name if name.startswith("fuzz_") else CSRC / name) for name in sources]
        binary = out / f"{target}-{version}"
        command = [
            "clang", *CFLAGS, *defines, f"-I{config['INCLUDEPY']}", f"-I{CSRC}", f"-I{HERE}", *paths,
            f"-L{config['LIBDIR']}", f"-lpython{config['LDVERSION']}", f"-Wl,-rpath,{config['LIBDIR']}",
            "-lm", "-lpthread", "-o", str(binary),
        ]
        jobs.append((binary, command, subprocess.Popen(command)))
    for _, command, process in jobs:
        if process.wait() != 0:
            raise subprocess.CalledProcessError(process.returncode, command)
    return [binary for binary, _, _ in jobs]


def run(binary: Path, target: str, seconds: int, config: dict[str, str], out: Path) -> dict[str, int]:
    corpus = out / f"corpus-{binary.name}"
    if not corpus.exists():
        shutil.copytree(HERE / "corpus" / target, corpus)
    artifacts = out / f"artifacts-{binary.name}"
    artifacts.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        PYTHONHOME=config["prefix"],
        # Python's objects through malloc, so AddressSanitizer checks them too.
        PYTHONMALLOC="malloc",
        # CPython's own allocations at exit are not the harness's to report.
        ASAN_OPTIONS="detect_leaks=0",
        UBSAN_OPTIONS="print_stacktrace=1",
    )
    result = subprocess.run(
        [str(binary), f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
         "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus)],
        env=env, capture_output=True, text=True, check=False,
    )
    stats = {key: int(value) for key, value in
             re.findall(r"stat::(number_of_executed_units|average_exec_per_sec):\s+(\d+)", result.stderr)}
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-6000:])
        found = sorted(artifacts.iterdir())
        print(f"FAILED {binary.name}: reproduce with {binary} {found[0] if found else '(no input saved)'}")
        stats["failed"] = 1
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=6, help="per target and version")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--pythons", default=",".join(VERSIONS))
    parser.add_argument("--keep", type=Path, help="build and corpus directory, kept (default: temporary)")
    args = parser.parse_args()
    if shutil.which("clang") is None:
        print("clang is needed (with libFuzzer: Debian's clang and libclang-rt-dev)")
        return 1
    out = args.keep or Path(tempfile.mkdtemp(prefix="sigprof-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = ran = 0
    for version in args.pythons.split(","):
        config = interpreter(version)
        if config is None or config["Py_ENABLE_SHARED"] != "1":
            print(f"python{version}: not found, or without libpython (--enable-shared): skipped")
            continue
        targets = args.targets.split(",")
        for target, binary in zip(targets, build(targets, version, config, out)):
            stats = run(binary, target, args.seconds, config, out)
            ran += 1
            failed += stats.get("failed", 0)
            print(f"{binary.name:14} {stats.get('number_of_executed_units', 0):>9} runs "
                  f"{stats.get('average_exec_per_sec', 0):>7} /s", flush=True)
    if not args.keep and not failed:
        shutil.rmtree(out, ignore_errors=True)
    if ran == 0:
        print("no interpreter to build against")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
