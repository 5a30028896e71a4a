"""Nothing lost silently: a full native buffer, a slow or unreachable Sentry,
and the three moments a chunk must leave (stop_profiler, flush, exit; exit
is in test_continuous.py). Everything goes through sentry-sdk's real HTTP
transport to a receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.profiler import continuous_profiler

import sigprof
from sigprof.core.sample_source import SOURCE
from sigprof.formats.chunk_json import LOSSES_KEY
from sigprof.sentry import session as continuous
from sigprof.sentry.session import SESSION
from tests.core.workloads import sum_size_holding_the_gil
from tests.sentry.generations import requires_sdk2, sent_roots, start_root
from tests.sentry.judge import check_chunk
from tests.sentry.receiver import Receiver, wait_until

SDK_LOGGER = "sentry_sdk.errors"


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(300))


def _chunks(receiver: Receiver) -> list[dict[str, Any]]:
    return receiver.payloads("profile_chunk")


def _losses(chunks: list[dict[str, Any]], key: str) -> int:
    return sum(int(chunk.get(LOSSES_KEY, {}).get(key, 0)) for chunk in chunks)


def _warnings(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and all(w in r.getMessage() for w in words)
    ]


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def spinners() -> Iterator[None]:
    """Four more busy threads: more samples per chunk."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            sum(range(300))

    threads = [threading.Thread(target=work, name=f"spinner-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    yield
    stop.set()
    for thread in threads:
        thread.join()


def _init(dsn: str, **options: Any) -> None:
    sigprof.init(
        dsn=dsn,
        traces_sample_rate=1.0,
        profile_session_sample_rate=1.0,
        integrations=[sigprof.SigprofIntegration(frequency=500)],
        **options,
    )


# ---- a full native buffer ----



def test_full_native_buffer_is_counted_logged_and_written_into_chunks(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 16 records at 500 Hz: the buffer fills in about 60 ms. The drain comes
    # sooner than that once it has seen the rate, so drops need the GIL held
    # past it: three C calls that hold it (sum over a range) for about 0.2 s
    # each, every one of them a drain with drops.
    monkeypatch.setattr(SOURCE, "buffer_capacity", 16)
    # a fresh warning policy: earlier tests' drops, not yet warned about
    # within their minute, would be summed into this test's first warning
    monkeypatch.setattr(SOURCE.drop_warning, "last_warning", None)
    monkeypatch.setattr(SOURCE.drop_warning, "unwarned", 0)
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    _init(receiver.dsn, debug=True)
    before = SOURCE.dropped_total
    sigprof.start_profiler()
    gil_held_sum = sum_size_holding_the_gil(0.2)
    with start_root("still sent"):
        for _ in range(3):
            spin(0.3)
            sum(range(gil_held_sum))
        spin(0.3)
    # stop sampling first: what the lingering sampler would drop after the
    # session's last chunk is no chunk's
    SOURCE.stop_now()
    sigprof.stop_profiler()
    dropped = SOURCE.dropped_total - before
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(_chunks(r)) and bool(sent_roots(r)))
    chunks = _chunks(receiver)
    for chunk in chunks:
        check_chunk(chunk)  # Sentry's parser takes a chunk with the extra key
    assert dropped > 0
    assert _losses(chunks, "dropped_samples") == dropped
    # one warning however many drains dropped samples; the rest wait their minute
    (message,) = _warnings(caplog, "dropped", "native buffer")
    assert int(message.split("dropped ")[1].split()[0]) < dropped


# ---- when chunks leave ----


def test_stop_profiler_alone_sends_the_chunk(receiver: Receiver) -> None:
    _init(receiver.dsn)
    sigprof.start_profiler()
    spin(0.3)
    sigprof.stop_profiler()
    # no flush: the transport's worker sends it on its own
    receiver.wait_for(lambda r: bool(_chunks(r)))
    (chunk,) = _chunks(receiver)
    check_chunk(chunk)
    assert "spin" in {frame["function"] for frame in chunk["profile"]["frames"]}


def test_flush_delivers_the_running_chunk_before_it_returns(receiver: Receiver) -> None:
    _init(receiver.dsn)
    sigprof.start_profiler()
    spin(0.3)
    sentry_sdk.flush()
    chunks = _chunks(receiver)  # already there: flush waits for the transport
    assert len(chunks) == 1
    check_chunk(chunks[0])
    assert continuous_profiler.get_profiler_id() is not None  # still profiling
    sigprof.stop_profiler()


def test_flush_waits_for_a_chunk_another_thread_is_building(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At exit the session's end is followed by the transport's close: a last
    # chunk the housekeeping thread had taken to build was lost (seen with
    # uWSGI workers). Here a thread takes the chunk and builds it slowly.
    _init(receiver.dsn)
    sigprof.start_profiler()
    spin(0.3)
    building = threading.Event()
    original_build = continuous.ChunkSession._build

    def slow_build(self: continuous.ChunkSession, chunk: Any) -> bytes | None:
        if threading.current_thread() is not threading.main_thread():
            building.set()
            time.sleep(0.5)  # still building when the main thread flushes
        return original_build(self, chunk)

    monkeypatch.setattr(continuous.ChunkSession, "_build", slow_build)
    with SESSION._lock:
        SOURCE.collect(reset=True)  # the running chunk, stashed
    other = threading.Thread(target=SESSION.flush)
    other.start()
    assert building.wait(10)
    sentry_sdk.flush()
    chunks = _chunks(receiver)  # the other thread's chunk is in: flush waited for it
    other.join()
    # The flush may send a chunk of its own: what was sampled since the other
    # thread took the spin's chunk (threads sleeping 20 ms are enough for one).
    sampled = [_sampled_functions(chunk) for chunk in chunks]
    assert [functions for functions in sampled if "spin" in functions], sampled
    for chunk in chunks:
        check_chunk(chunk)
    sigprof.stop_profiler()


def _sampled_functions(chunk: dict[str, Any]) -> set[str]:
    profile = chunk["profile"]
    return {
        profile["frames"][index]["function"]
        for sample in profile["samples"]
        for index in profile["stacks"][sample["stack_id"]]
    }


# ---- a slow or unreachable Sentry ----


def test_slow_sentry_bounded_queue_drops_oldest_tells_and_keeps_transactions(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(delay_s=3.0)
    try:
        monkeypatch.setattr(continuous, "CHUNK_SECONDS", 0.2)
        # Room for 2 s of the main thread's samples: a housekeeping round
        # that waited for one 3 s request would overflow it.
        monkeypatch.setattr(SOURCE, "buffer_capacity", 1024)
        monkeypatch.setattr(SESSION.drop_warning, "last_warning", None)
        caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
        _init(receiver.dsn, debug=True)
        native_drops = SOURCE.dropped_total
        dropped_before = SESSION.chunks_dropped
        sigprof.start_profiler()
        most_queued, most_bytes = 0, 0
        with start_root("behind the chunks"):
            # a chunk every 0.2 s, one sent every 3 s: the queue fills in a
            # few seconds (more on a loaded machine)
            deadline = time.monotonic() + 30.0
            while SESSION.chunks_dropped == dropped_before and time.monotonic() < deadline:
                spin(0.1)
                stats = continuous.stats()
                most_queued = max(most_queued, stats["chunks_queued"])
                most_bytes = max(most_bytes, stats["queued_bytes"])
        dropped = SESSION.chunks_dropped - dropped_before
        assert dropped > 0
        assert most_queued <= continuous.MAX_QUEUED_CHUNKS
        assert most_bytes <= continuous.MAX_QUEUED_BYTES
        # the housekeeping thread never waited on the transport: no drain was 2 s late
        assert SOURCE.dropped_total == native_drops
        # the count goes up just before the warning is logged, in another thread
        wait_until(lambda: bool(_warnings(caplog, "dropped", "profile chunks")))
        assert len(_warnings(caplog, "dropped", "profile chunks")) == 1
        receiver.delay_s = 0.0  # Sentry is back
        spin(0.5)
        sigprof.stop_profiler()
        sentry_sdk.flush(timeout=30)
        receiver.wait_for(lambda r: bool(sent_roots(r)), timeout=30)
        chunks = _chunks(receiver)
        for chunk in chunks:
            check_chunk(chunk)
        total_dropped = SESSION.chunks_dropped - dropped_before
        assert _losses(chunks, "dropped_chunks") == total_dropped
        receiver.wait_for(  # the client report may follow the last chunk
            lambda r: r.outcomes().count(("queue_overflow", "profile_chunk")) >= total_dropped
        )
        assert receiver.outcomes().count(("queue_overflow", "profile_chunk")) == total_dropped
    finally:
        SESSION.end()
        sentry_sdk.get_client().close(timeout=10)
        receiver.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_sentry_keeps_memory_bounded_then_chunks_arrive(
    monkeypatch: pytest.MonkeyPatch, spinners: None
) -> None:
    port = _free_port()  # nothing listens: connection refused
    monkeypatch.setattr(continuous, "CHUNK_SECONDS", 0.2)
    _init(f"http://public@127.0.0.1:{port}/1")
    sent_at_start = SESSION.chunks_sent
    sigprof.start_profiler()
    spin(1.0)
    rss_start = _rss_bytes()
    sent_before = SESSION.chunks_sent
    dropped_before = SESSION.chunks_dropped
    most_bytes, rss_most = 0, rss_start
    deadline = time.monotonic() + 6.0  # 30 chunk periods
    while time.monotonic() < deadline:
        spin(0.2)
        most_bytes = max(most_bytes, continuous.stats()["queued_bytes"])
        rss_most = max(rss_most, _rss_bytes())
    handed = SESSION.chunks_sent - sent_before
    # sentry-sdk fails each one (urllib3 retries a refused connection, more or
    # less quickly by version); what it cannot take waits or is dropped here
    assert handed >= 3
    assert most_bytes <= continuous.MAX_QUEUED_BYTES
    # Every chunk was handed over and let go of; keeping them would grow by
    # their size, a few hundred kB each at 5 threads x 500 Hz x 0.2 s.
    assert rss_most - rss_start < 32 << 20
    receiver = Receiver(port=port)
    try:
        spin(1.0)
        sigprof.stop_profiler()
        sentry_sdk.flush(timeout=10)
        receiver.wait_for(lambda r: bool(_chunks(r)))
        for chunk in _chunks(receiver):
            check_chunk(chunk)
        # chunks sentry-sdk failed to send are in its client report (all but
        # the one it was sending and the MAX_IN_FLIGHT waiting when Sentry came
        # back); those sigprof dropped, in the report and in the chunks that
        # came through
        def network_errors(r: Receiver) -> int:
            return r.outcomes().count(("network_error", "profile_chunk"))

        try:
            receiver.wait_for(lambda r: network_errors(r) >= handed - 1 - continuous.MAX_IN_FLIGHT)
        except AssertionError:
            # Seen once in CI's runs (3.14), never reproduced: say everything.
            raise AssertionError(
                f"{network_errors(receiver)} network errors reported for {handed} chunks handed"
                f" over while Sentry was down (MAX_IN_FLIGHT {continuous.MAX_IN_FLIGHT});"
                f" {SESSION.chunks_sent - sent_at_start} handed in all,"
                f" {len(_chunks(receiver))} arrived; outcomes {Counter(receiver.outcomes())};"
                f" {len(receiver.payloads('client_report'))} client reports"
            ) from None
        # at most every chunk handed over before Sentry came back
        assert network_errors(receiver) <= SESSION.chunks_sent - sent_at_start
        dropped = SESSION.chunks_dropped - dropped_before
        # A count rides on the next chunk handed over; when sentry-sdk then
        # fails that chunk too (Sentry still down), the count goes with it,
        # and only the client report below still has it.
        assert _losses(_chunks(receiver), "dropped_chunks") <= dropped
        receiver.wait_for(
            lambda r: r.outcomes().count(("queue_overflow", "profile_chunk")) >= dropped
        )
        assert receiver.outcomes().count(("queue_overflow", "profile_chunk")) == dropped
    finally:
        SESSION.end()
        sentry_sdk.get_client().close(timeout=10)
        receiver.close()


def _blocked_signals(native_id: int) -> set[int]:
    with open(f"/proc/self/task/{native_id}/status") as status:
        for line in status:
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return {number for number in range(1, 65) if mask >> (number - 1) & 1}
    raise AssertionError("no SigBlk")


@pytest.mark.parametrize("kind", ["continuous", pytest.param("transaction", marks=requires_sdk2)])
def test_process_signals_stay_off_the_transport_thread(receiver: Receiver, kind: str) -> None:
    """A server's C handler that exits (uWSGI's graceful stop of a worker),
    run on sentry-sdk's worker thread, leaves nobody to send what is queued:
    the thread blocks process-directed signals once profiling starts. Faults
    and SIGPROF stay deliverable; the main thread blocks nothing new."""
    if kind == "continuous":
        sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profile_session_sample_rate=1.0)
        sentry_sdk.profiler.start_profiler()
    else:
        sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
        with sentry_sdk.start_transaction(name="work"):
            spin(0.1)
    sentry_sdk.flush()  # the worker thread has run what was queued before
    worker = sentry_sdk.get_client().transport._worker  # type: ignore[union-attr]
    blocked = _blocked_signals(worker._thread.native_id)
    assert {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1} <= blocked
    assert not blocked & {signal.SIGSEGV, signal.SIGBUS, signal.SIGPROF}
    assert signal.SIGHUP not in _blocked_signals(threading.get_native_id())
    if kind == "continuous":
        sentry_sdk.profiler.stop_profiler()
