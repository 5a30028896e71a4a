"""Frames carry the fields sentry-sdk's own profiler sends, computed the same
way (abs_path, filename, module, function, in_app from the client's options)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import sentry_sdk
from sentry_sdk._lru_cache import LRUCache
from sentry_sdk.profiler.utils import extract_stack
from sentry_sdk.utils import set_in_app_in_frames

import sigprof
from tests.sentry.judge import check_chunk
from tests.sentry.receiver import Receiver


class Checkout:
    def total(self, seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(300))
        # what sentry-sdk's own sampler would extract for this very frame
        _, _, frames = extract_stack(sys._getframe(), LRUCache(16), os.getcwd())
        return frames


def test_frames_match_the_sdks_own(receiver: Receiver) -> None:
    options = {"in_app_include": ["tests.sentry"], "in_app_exclude": ["tests.sentry.judge"]}
    sigprof.init(
        dsn=receiver.dsn, traces_sample_rate=1.0, profile_session_sample_rate=1.0, **options
    )
    sigprof.start_profiler()
    sdk_frames = Checkout().total(0.3)
    sigprof.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    client_options = sentry_sdk.get_client().options
    set_in_app_in_frames(
        sdk_frames,
        client_options["in_app_exclude"],
        client_options["in_app_include"],
        client_options["project_root"],
    )
    ours = {}
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
        for frame in chunk["profile"]["frames"]:
            ours.setdefault((frame["module"], frame["function"]), frame)
    compared = 0
    for sdk_frame in sdk_frames:
        key = (sdk_frame["module"], sdk_frame["function"])
        if key not in ours:
            continue  # a frame the sampler did not happen to catch
        frame = ours[key]
        for key in ("abs_path", "filename", "module", "function"):
            assert frame[key] == sdk_frame[key], (key, frame, sdk_frame)
        assert frame.get("in_app") == sdk_frame.get("in_app"), (frame, sdk_frame)
        assert isinstance(frame["lineno"], int) and frame["lineno"] > 0
        compared += 1
    total = ours[("tests.sentry.test_frames", "Checkout.total")]
    assert total["in_app"] is True
    assert compared >= 5  # the test's own frames and pytest's
    pytest_frames = [f for f in ours.values() if (f["module"] or "").startswith("_pytest")]
    assert pytest_frames and all(f["in_app"] is False for f in pytest_frames)
