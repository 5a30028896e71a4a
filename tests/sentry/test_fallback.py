"""Where the native sampler cannot run, sigprof.init falls back to
sentry-sdk's own profiler with exactly one warning; profiles keep coming."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.sentry.generations import requires_sdk2
from tests.sentry.judge import check_chunk, check_profile_v1
from tests.sentry.receiver import Receiver

APP = textwrap.dedent(
    """
    import importlib.abc, json, sys, time, warnings

    class NoNativeExtension(importlib.abc.MetaPathFinder):
        # what a platform without the compiled extension looks like
        def find_spec(self, name, path, target=None):
            if name == "sigprof._native":
                raise ImportError("no native extension on this platform")
            return None

    sys.meta_path.insert(0, NoNativeExtension())
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import sentry_sdk
        import sigprof
        from sentry_sdk.profiler import continuous_profiler
        # 3.x: a root span, 2.x: a transaction
        start_root = sentry_sdk.traces.start_span if int(sentry_sdk.VERSION[0]) >= 3 else sentry_sdk.start_transaction

        mode = sys.argv[2]
        if mode == "transaction":
            sigprof.init(dsn=sys.argv[1], traces_sample_rate=1.0, profiles_sample_rate=1.0)
            sigprof.init(dsn=sys.argv[1], traces_sample_rate=1.0, profiles_sample_rate=1.0)
            from sentry_sdk.profiler import transaction_profiler  # 2.x only
            scheduler = type(transaction_profiler._scheduler).__name__
        else:
            sigprof.init(dsn=sys.argv[1], traces_sample_rate=1.0, profile_session_sample_rate=1.0)
            sigprof.start_profiler()
            scheduler = type(continuous_profiler._scheduler).__name__

        def fallback_work():
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                sum(range(300))

        with start_root(name="fallback"):
            fallback_work()

        @sigprof.profile()
        def decorated():
            return 3

        assert decorated() == 3
        if mode != "transaction":
            sigprof.stop_profiler()
        sentry_sdk.flush()
    ours = [str(w.message) for w in caught if issubclass(w.category, sigprof.SigprofFallbackWarning)]
    print(json.dumps({"warnings": ours, "scheduler": scheduler,
                      "reason": sigprof.native_unavailable_reason()}))
    """
)


def _run(receiver: Receiver, tmp_path: Path, mode: str) -> dict:
    script = tmp_path / "fallback_app.py"
    script.write_text(APP)
    result = subprocess.run(
        [sys.executable, str(script), receiver.dsn, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    facts: dict = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["reason"] and "could not be imported" in facts["reason"]
    assert len(facts["warnings"]) == 1 and "sentry-sdk's own profiler" in facts["warnings"][0]
    return facts


@requires_sdk2
def test_transaction_profiles_fall_back(receiver: Receiver, tmp_path: Path) -> None:
    facts = _run(receiver, tmp_path, "transaction")
    assert facts["scheduler"] == "ThreadScheduler"  # sentry-sdk's own
    receiver.wait_for(lambda r: bool(r.payloads("profile")))
    profile = receiver.payloads("profile")[0]
    check_profile_v1(profile)
    assert "fallback_work" in {f["function"] for f in profile["profile"]["frames"]}


def test_continuous_profiling_falls_back(receiver: Receiver, tmp_path: Path) -> None:
    facts = _run(receiver, tmp_path, "continuous")
    assert facts["scheduler"] == "ThreadContinuousScheduler"
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    chunk = receiver.payloads("profile_chunk")[0]
    check_chunk(chunk)
    assert "fallback_work" in {f["function"] for f in chunk["profile"]["frames"]}
