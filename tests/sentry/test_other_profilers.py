"""Another sigprof user or another profiler in a process that uses the Sentry
drop-in: the outcome is a clear refusal or a clean stop, never a silent loss
while sigprof pretends to profile."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sentry_sdk

import sigprof
from sigprof.core.sample_source import SOURCE
from sigprof.sentry.session import SESSION
from tests.core.workloads import spin
from tests.sentry.judge import check_chunk
from tests.sentry.receiver import Receiver


def _init(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, profile_session_sample_rate=1.0)


def _chunk_functions(receiver: Receiver) -> set[str]:
    shown = set()
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
        profile = chunk["profile"]
        shown.update(profile["frames"][i]["function"] for s in profile["stacks"] for i in s)
    return shown


def test_a_second_sampler_is_refused_while_the_session_samples(receiver: Receiver) -> None:
    _init(receiver)
    sentry_sdk.profiler.start_profiler()
    with pytest.raises(sigprof.SamplerError, match="already running"):
        sigprof.Sampler().start()
    spin(0.3)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    assert "spin" in _chunk_functions(receiver)


def test_a_session_waits_for_a_running_sampler_then_starts(receiver: Receiver) -> None:
    user_sampler = sigprof.Sampler()
    user_sampler.start()
    try:
        _init(receiver)
        sentry_sdk.profiler.start_profiler()
        assert SESSION.profiler_id is None
        assert SOURCE.last_error is not None and "already running" in SOURCE.last_error
    finally:
        user_sampler.stop()
    sentry_sdk.profiler.start_profiler()  # free now
    assert SESSION.profiler_id is not None
    spin(0.3)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    assert "spin" in _chunk_functions(receiver)


def test_init_twice_keeps_one_sampler(receiver: Receiver) -> None:
    _init(receiver)
    sentry_sdk.profiler.start_profiler()
    first = SOURCE.sampler
    _init(receiver)
    sentry_sdk.profiler.start_profiler()
    assert SOURCE.running and SOURCE.sampler is not None
    assert first is not None and not (first.running and SOURCE.sampler is not first)
    spin(0.3)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    assert "spin" in _chunk_functions(receiver)


VMPROF_LATER = textwrap.dedent(
    """
    import json, sys, tempfile, time
    import sentry_sdk, sigprof, vmprof
    from sigprof.core.sample_source import SOURCE

    sigprof.init(dsn=sys.argv[1], profile_session_sample_rate=1.0)
    sentry_sdk.profiler.start_profiler()
    time.sleep(0.3)
    before = SOURCE.running
    out = tempfile.TemporaryFile()
    vmprof.enable(out.fileno(), period=0.005)
    deadline = time.monotonic() + 20
    # Few Python calls while vmprof samples: vmprof 0.6.0 on 3.11 reads the
    # frame pointer of a call being pushed before CPython has set it, and
    # crashes when its signal lands there (vmprof alone, polling a property
    # in a tight loop: 1 crash in 100 one-second runs). A poll every few
    # milliseconds makes hundreds of times fewer calls.
    while SOURCE.running and time.monotonic() < deadline:
        sum(range(300_000))
    print(json.dumps({"before": before, "after": SOURCE.running, "error": SOURCE.last_error}))
    vmprof.disable()
    """
)


def test_vmprof_taking_sigprof_over_stops_sigprof_with_a_reason(
    receiver: Receiver, tmp_path: Path
) -> None:
    pytest.importorskip("vmprof")
    script = tmp_path / "vmprof_later.py"
    script.write_text(VMPROF_LATER)
    result = subprocess.run([sys.executable, str(script), receiver.dsn], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["before"] and not facts["after"], facts
    assert "replaced sigprof's SIGPROF handler" in facts["error"]
