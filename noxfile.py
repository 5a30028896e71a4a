"""Test sessions on every supported CPython (the native core differs per
version). `nox` runs the default sessions; `nox -s tests-3.12` one of them."""

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
TEST_REQUIREMENTS = ["-r", "tests/requirements-sentry.txt", "-r", "tests/requirements-local.txt"]
OLDEST_SENTRY_SDK = "2.22.0"  # the first 2.x with profile_lifecycle

nox.options.sessions = ["lint", "tests", "sentry_oldest", "valgrind", "asan", "stress", "fuzz"]
nox.options.reuse_existing_virtualenvs = False


def install_sigprof(session: nox.Session) -> None:
    # Strict warnings for the C core; installed (not editable), so the tests
    # run against the package as users get it.
    session.env["SIGPROF_WERROR"] = "1"
    session.install(".")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install(*TEST_REQUIREMENTS)
    install_sigprof(session)
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python="3.12")
def sentry_oldest(session: nox.Session) -> None:
    """The Sentry layer against the oldest supported sentry-sdk."""
    session.install(*TEST_REQUIREMENTS)
    install_sigprof(session)
    session.install(f"sentry-sdk=={OLDEST_SENTRY_SDK}")
    session.run("pytest", "-p", "no:cacheprovider", "tests/sentry", *session.posargs)


@nox.session(python="3.12")
def valgrind(session: nox.Session) -> None:
    """memcheck over a sampling workload: no invalid access in sigprof."""
    install_sigprof(session)
    session.run("python", "tests/valgrind/run_memcheck.py")


# The stress suite's lengths per interpreter: the full soak on 3.12, a short
# one on 3.9 (the oldest frame walker), within about 6 minutes together.
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


@nox.session(python="3.12")
def asan(session: nox.Session) -> None:
    """tests/core against an extension built with AddressSanitizer and
    UndefinedBehaviorSanitizer (the interpreter itself is not instrumented:
    gcc's runtimes are preloaded, and PYTHONMALLOC=malloc lets ASan see every
    allocation). Any report fails the run."""
    session.install("-r", "tests/requirements-sentry.txt")
    session.env["SIGPROF_SANITIZE"] = "address,undefined"
    install_sigprof(session)
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
        "-k", "not shares_match and not gets_its_share and not repeat_without_signals"
              " and not test_rate_",
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


@nox.session(python="3.12")
def fuzz(session: nox.Session) -> None:
    """libFuzzer with ASan and UBSan over the frame walker and the resolver,
    built against every CPython on PATH (tests/fuzz/run.py; a few minutes)."""
    session.run("python", "tests/fuzz/run.py", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    session.install("ruff", "mypy", "sentry-sdk")
    install_sigprof(session)
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py", "setup.py")
    session.run("mypy", "src/sigprof")
