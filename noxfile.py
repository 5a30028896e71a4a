"""Test sessions on every supported CPython (the native core differs per
version). `nox` runs the default sessions; `nox -s tests-3.12` one of them.

.ci/run names the sessions it runs on each side: CPython 3.9 to 3.13 are the
host's (pyenv), 3.14 and 3.15 Debian sid's, inside a chroot (their binaries need
sid's C library). With CI=true nox fails on an interpreter it cannot find, so
nothing there relies on nox skipping the other side's sessions.

A new session installs sigprof with install_sigprof(session): the wheel is
built once per interpreter and source state, then reused (see built_wheel).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import nox

HOST_PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
CHROOT_PYTHONS = ["3.14", "3.15"]
PYTHONS = HOST_PYTHONS + CHROOT_PYTHONS
TEST_REQUIREMENTS = ["-r", "tests/requirements-sentry.txt", "-r", "tests/requirements-local.txt"]
# The sentry-sdk each tests-* session runs the whole suite against: the
# oldest supported on the oldest CPython, the newest 3.x on 3.13, the newest
# 2.x (tests/requirements-sentry.txt) elsewhere. Every SDK generation meets
# the suite without sessions of their own (they ran tests/sentry on 3.12
# again: 5 min 20 s of CI's hour).
SENTRY_SDK_BY_PYTHON = {
    "3.9": "sentry-sdk==2.22.0",  # the first 2.x with profile_lifecycle
    "3.13": "sentry-sdk>=3,<4",
}

nox.options.sessions = ["lint", "tests", "valgrind", "asan", "stress", "fuzz"]
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).resolve().parent
WHEELS = ROOT / ".nox" / "_sigprof_wheels"
# What a built wheel depends on. Cython's output (_native.c) is generated from
# the .pyx, and caches are not sources.
BUILD_INPUTS = ["setup.py", "pyproject.toml", "MANIFEST.in", "csrc/*", "src/sigprof/**/*"]


def source_digest() -> str:
    digest = hashlib.sha256()
    for pattern in BUILD_INPUTS:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and path.name != "_native.c" and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def built_wheel(session: nox.Session, sanitize: str) -> Path:
    """sigprof's wheel for this interpreter, built once per source state and
    flags. Every session used to compile the core and cythonize the bridge
    again: 11 builds in .ci/run's host part, now 6 (one per interpreter, one
    sanitized), and each sentry-sdk session adds none. Measured on the 2-core
    machine while others ran (load 8.6): a build 53 s, installing the built
    wheel 2 s."""
    flags = f"sanitize-{sanitize.replace(',', '-')}" if sanitize else "werror"
    target = WHEELS / f"{session.python}-{flags}-{source_digest()}"
    if not any(target.glob("sigprof-*.whl")):
        scratch = target.with_name(target.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        session.run("python", "-m", "pip", "wheel", "--no-deps", "-w", str(scratch), ".")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    else:
        session.log(f"reusing the wheel built in {target.name}")
    return next(target.glob("sigprof-*.whl"))


def install_sigprof(session: nox.Session, sanitize: str = "") -> None:
    # Strict warnings for the C core; installed (not editable), so the tests
    # run against the package as users get it.
    session.env["SIGPROF_WERROR"] = "1"
    if sanitize:
        session.env["SIGPROF_SANITIZE"] = sanitize
    session.install(str(built_wheel(session, sanitize)))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install(*TEST_REQUIREMENTS)
    install_sigprof(session)
    sentry_sdk = SENTRY_SDK_BY_PYTHON.get(str(session.python))
    if sentry_sdk is not None:
        session.install(sentry_sdk)
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


# 3.12 on the host; in the chroot the newest layout (3.15) stands for both.
@nox.session(python=["3.12", "3.15"])
def valgrind(session: nox.Session) -> None:
    """memcheck over a sampling workload: no invalid access in sigprof."""
    install_sigprof(session)
    session.run("python", "tests/valgrind/run_memcheck.py")


# The stress suite's lengths per interpreter: the full soak on 3.12 (in
# .ci/run), a short one on 3.9, the oldest frame walker (by hand: `nox -s
# stress-3.9`).
STRESS_SECONDS = {"3.12": {"SOAK": "180", "CHURN": "20"}, "3.9": {"SOAK": "45", "CHURN": "8"}}


@nox.session(python=list(STRESS_SECONDS))
def stress(session: nox.Session) -> None:
    """tests/stress (outside the default pytest run): soak, thread churn,
    forks under churn, exit paths; prints the figures the README quotes."""
    session.install("-r", "tests/requirements-sentry.txt")
    install_sigprof(session)
    seconds = STRESS_SECONDS[str(session.python)]
    session.env["SIGPROF_STRESS_SOAK_S"] = seconds["SOAK"]
    session.env["SIGPROF_STRESS_CHURN_S"] = seconds["CHURN"]
    session.run("pytest", "-p", "no:cacheprovider", "-s", "tests/stress", *session.posargs)


@nox.session(python=["3.12", *CHROOT_PYTHONS])
def asan(session: nox.Session) -> None:
    """tests/core against an extension built with AddressSanitizer and
    UndefinedBehaviorSanitizer (the interpreter itself is not instrumented:
    gcc's runtimes are preloaded, and PYTHONMALLOC=malloc lets ASan see every
    allocation). Any report fails the run."""
    session.install("-r", "tests/requirements-sentry.txt")
    install_sigprof(session, sanitize="address,undefined")
    runtimes = [
        session.run("gcc", f"-print-file-name={name}", silent=True, external=True).strip()
        for name in ("libasan.so", "libubsan.so")
    ]
    sanitized = {
        "LD_PRELOAD": ":".join(runtimes),
        # CPython frees nothing at exit by design: leak reports would be noise.
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "PYTHONMALLOC": "malloc",
    }
    session.run(
        "pytest", "-p", "no:cacheprovider", "--timeout", "600", "tests/core",
        # Measurements of shares, per-tick counts and rates: the sanitizers slow
        # sigprof's threads several times over; tests-* judge those unsanitized.
        # (The cpu clock's rate beside busy processes came out 0 to 4.6 samples
        # over CPU time x rate under ASan, -0.4 to +0.6 unsanitized, of ~390.)
        # And not the reused-address test: ASan's quarantine keeps freed
        # memory from being handed out again, so no code object ever gets a
        # dead one's address there (its precondition fails: 150 of 150 new).
        "-k", "not shares_match and not gets_its_share and not repeat_without_signals"
              " and not test_rate_ and not met_again_at_a_reused_address",
        *session.posargs,
        env=sanitized,
    )
    # The stress scenarios, short. RSS there is the sanitizer's (quarantine,
    # shadow memory), so its flatness is judged by the stress sessions instead.
    # Not the fork loop under thread churn: a child forked while a churning
    # thread holds one of the ASan runtime's own locks hangs in it (seen here,
    # about 1 child in 200; google/sanitizers#774), and a child's 20 ms of
    # sampling can end before the slowed sampler takes a sample.
    session.run(
        "pytest", "-p", "no:cacheprovider", "-s", "tests/stress", "-k", "not fork_loop",
        env={**sanitized, "SIGPROF_STRESS_SOAK_S": "20", "SIGPROF_STRESS_CHURN_S": "3",
             "SIGPROF_STRESS_RSS_SLACK_MIB": "1024"},
    )


@nox.session(python=False)
def fuzz(session: nox.Session) -> None:
    """libFuzzer with ASan and UBSan over the frame walker and the resolver,
    built against each CPython named (tests/fuzz/run.py; a few minutes). No
    venv: the script only drives clang and the fuzz binaries, so nox's own
    interpreter runs it, on either side. `nox -s fuzz -- --pythons 3.14,3.15`."""
    session.run(sys.executable, "tests/fuzz/run.py", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    # sdk_api types its 2.x adapters against 2.x's names (3.x has none of them)
    session.install("ruff", "mypy", "sentry-sdk<3")
    install_sigprof(session)
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py", "setup.py")
    session.run("mypy", "src/sigprof")
