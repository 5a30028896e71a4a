"""Every sampling decision of the Sentry wing, one function each.

Who decides what, on both SDK generations:

- `profile_session_sample_rate`: whether this process profiles
  continuously at all; drawn once per process for a given rate
  (`session_sampled`), so a second `init()` does not re-roll it.
- `profile_lifecycle`: "manual" (`start_profiler`/`stop_profiler`) or
  "trace" (sampled root spans); anything else turns continuous profiling
  off with a warning (`lifecycle_valid`).
- `profiles_sample_rate` / `profiles_sampler`:
  - 2.x: the SDK's own decision for each sampled transaction's profile,
    made inside its `Profile`; a raising `profiles_sampler` unsamples the
    profile instead of losing the transaction (`transaction_profile_sampled`).
  - 3.x (which removed them): `sigprof.init` takes them out of the options
    (`take_root_span_rates`) and `RootSpanRates.decide` draws, per root span,
    whether the continuous session records that span's time.
  Either way they need sampled transactions or root spans: without any
  tracing option `sigprof.init` traces everything and says so
  (`default_tracing_for_profiles`).
- a profiling span's `sample_rate`: drawn once as the span opens
  (`profiling_span_sampled`); a profiled span holds the session open
  whatever `profile_session_sample_rate` decided.

Rates are checked as sentry-sdk checks them (`is_valid_sample_rate`, which
logs what is wrong); an invalid rate never samples.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable

from sentry_sdk.utils import is_valid_sample_rate, logger

LIFECYCLES = ("manual", "trace")
_TRACING_KEYS = ("traces_sample_rate", "traces_sampler", "enable_tracing")

# (pid, rate, decision) of the last session draw
_decision: tuple[int, Any, bool] | None = None


def drop_invalid_init_rates(kwargs: dict[str, Any]) -> None:
    """sentry-sdk compares the profiling rates with 0 before validating them,
    so a string would make init() itself raise; warn as it does and drop
    the rate instead."""
    for key in ("profiles_sample_rate", "profile_session_sample_rate"):
        rate = kwargs.get(key)
        if rate is not None and not is_valid_sample_rate(rate, source=f"Profiling ({key})"):
            kwargs[key] = None


def default_tracing_for_profiles(kwargs: dict[str, Any]) -> None:
    """Profiles per transaction (or root span) exist only for sampled ones:
    asking for them without any tracing option would silently produce
    nothing (the reference document's first snippet does exactly that).
    Trace everything then, and say so."""
    wants_profiles = kwargs.get("profiles_sampler") is not None or bool(
        kwargs.get("profiles_sample_rate")
    )
    if wants_profiles and all(kwargs.get(key) is None for key in _TRACING_KEYS):
        kwargs["traces_sample_rate"] = 1.0
        logger.warning(
            "[Profiling] profiles_sample_rate/profiles_sampler need sampled transactions; "
            "sigprof.init() set traces_sample_rate=1.0 because no tracing option was given"
        )


def session_sampled(rate: Any) -> bool:
    """profile_session_sample_rate's decision, made once per process."""
    global _decision
    if _decision is not None and _decision[0] == os.getpid() and _decision[1] == rate:
        return _decision[2]
    if rate is None:
        sampled = False
    elif not is_valid_sample_rate(rate, source="Continuous Profiling"):
        logger.warning(
            "[Profiling] Continuous profiling is off: invalid profile_session_sample_rate"
        )
        sampled = False
    else:
        sampled = random.random() < float(rate)
    _decision = (os.getpid(), rate, sampled)
    return sampled


def lifecycle_valid(lifecycle: Any) -> bool:
    if lifecycle in LIFECYCLES:
        return True
    logger.warning(
        "[Profiling] Continuous profiling is off: profile_lifecycle must be "
        "'manual' or 'trace', not %r",
        lifecycle,
    )
    return False


class RootSpanRates:
    """3.x: 2.x's `profiles_sample_rate` / `profiles_sampler`, as a decision
    per root span. The sampler (when given) is called with the 2.x-shaped
    sampling context; its float or bool return is the rate."""

    def __init__(self, rate: Any, sampler: Callable[[dict[str, Any]], Any] | None) -> None:
        self.rate = rate
        self.sampler = sampler

    def decide(self, sampling_context: dict[str, Any]) -> bool:
        if callable(self.sampler):
            try:
                rate = self.sampler(sampling_context)
            except Exception:  # noqa: BLE001 - the user's sampler may raise anything
                logger.warning("[Profiling] profiles_sampler raised; not profiling", exc_info=True)
                return False
        else:
            rate = self.rate
        if rate is None or not is_valid_sample_rate(rate, source="Profiling"):
            return False
        return random.random() < float(rate)


def take_root_span_rates(kwargs: dict[str, Any]) -> RootSpanRates | None:
    """3.x rejects profiles_sample_rate / profiles_sampler as unknown
    options: take them out of init's keywords, to apply per root span."""
    rate = kwargs.pop("profiles_sample_rate", None)
    sampler = kwargs.pop("profiles_sampler", None)
    if rate is None and sampler is None:
        return None
    return RootSpanRates(rate, sampler)


def transaction_profile_sampled(sdk_decision: Callable[[], None]) -> bool:
    """2.x: runs the SDK's own decision for a transaction's profile (which
    sets the profile's `sampled`); False when the user's profiles_sampler
    raised: sentry-sdk before 2.2x let that lose the transaction, later ones
    unsample the profile. sigprof does the latter on every version."""
    try:
        sdk_decision()
    except Exception:  # noqa: BLE001 - the user's sampler may raise anything
        logger.warning("[Profiling] profiles_sampler raised; unsampling profile", exc_info=True)
        return False
    return True


def profiling_span_sampled(sample_rate: Any) -> bool:
    """A profiling span's draw (no rate: always)."""
    if sample_rate is None:
        return True
    if not is_valid_sample_rate(sample_rate, source="Profiling span"):
        logger.warning("[Profiling] Not profiling this span: invalid sample_rate")
        return False
    return random.random() < float(sample_rate)
