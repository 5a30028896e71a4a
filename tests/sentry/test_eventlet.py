"""eventlet with monkey_patch() before sigprof.init: sampling works while a
green thread hogs the OS thread, the wall clock still tells a hub waiting in
epoll (blocked, never signalled) from green threads running, green sockets
see no EINTR, and the chunks reach the receiver and are accepted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.sentry.generations import sent_roots
from tests.sentry.judge import check_chunk, samples_between
from tests.sentry.receiver import Receiver

pytest.importorskip("eventlet")

APP = textwrap.dedent(
    """
    import eventlet
    eventlet.monkey_patch()

    import json, os, socket, sys, time
    import sentry_sdk
    # 3.x: a root span, 2.x: a transaction
    start_root = sentry_sdk.traces.start_span if int(sentry_sdk.VERSION[0]) >= 3 else sentry_sdk.start_transaction
    import sigprof
    from eventlet.patcher import original
    from sigprof.core.sample_source import SOURCE

    sigprof.init(dsn=sys.argv[1], traces_sample_rate=1.0, profile_session_sample_rate=1.0)
    sentry_sdk.profiler.start_profiler()

    def green_hog(seconds):
        # never yields to the hub: a green-thread drainer could not run now
        drained_before = SOURCE._last_drain
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(300))
        return SOURCE._last_drain > drained_before

    def echo_server(listener):
        def serve(connection):
            with connection:
                while data := connection.recv(4096):
                    connection.sendall(data)
        while True:
            connection, _ = listener.accept()
            eventlet.spawn(serve, connection)

    def echo_client(port, rounds):
        with socket.create_connection(("127.0.0.1", port)) as connection:
            for i in range(rounds):
                message = b"x" * (1 + i % 3000)
                connection.sendall(message)
                received = b""
                while len(received) < len(message):
                    received += connection.recv(4096)
        return rounds

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    eventlet.spawn(echo_server, listener)
    port = listener.getsockname()[1]

    with start_root(name="eventlet request"):
        # long enough for a drain (every ~1 s) on a loaded machine
        drained_while_hogged = eventlet.spawn(green_hog, 2.5).wait()
        idle_start = time.time()
        eventlet.sleep(1.0)  # every green thread idle: the hub waits in epoll
        idle_end = time.time()
        # long enough for samples of the clients: at 400 rounds this phase had
        # 9 samples, 4 in echo_client (none about 1 run in 200); at 1200, 24
        clients = [eventlet.spawn(echo_client, port, 1200) for _ in range(8)]
        rounds = sum(client.wait() for client in clients)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    with open(f"/proc/self/task/{os.getpid()}/status") as status:
        main_blocked = next(line.split()[1] for line in status if line.startswith("SigBlk:"))
    print(json.dumps({
        "main": original("_thread").get_ident(),
        "drained_while_green_thread_hogged": drained_while_hogged,
        "idle": [idle_start, idle_end],
        "rounds": rounds,
        "main_blocked_signals": int(main_blocked, 16),
    }))
    """
)


def test_eventlet_monkey_patched_app(receiver: Receiver, tmp_path: Path) -> None:
    script = tmp_path / "eventlet_app.py"
    script.write_text(APP)
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script), receiver.dsn],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "EINTR" not in result.stderr and "Interrupted" not in result.stderr, result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["drained_while_green_thread_hogged"]
    assert facts["rounds"] == 8 * 1200  # no green socket call failed
    # sentry-sdk's worker, a green thread on the main thread, left its signals alone
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        assert not facts["main_blocked_signals"] >> (number - 1) & 1, number
    receiver.wait_for(lambda r: bool(sent_roots(r)) and bool(r.payloads("profile_chunk")))
    (root,) = sent_roots(receiver)
    # Green threads run on the hub's OS thread, whose ident the samples carry.
    # (The transaction's thread.id is the green thread's: eventlet patches
    # threading.get_ident, and sentry-sdk reads it; its own profiler differs
    # the same way.)
    main = str(facts["main"])
    in_request: set[str] = set()
    idle_leaves: list[str] = []
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        samples = chunk["profile"]["samples"]
        for sample in samples_between(samples, main, root.start, root.end):
            in_request.update(frames[i]["function"] for i in stacks[sample["stack_id"]])
        idle_start, idle_end = facts["idle"]
        for sample in samples_between(samples, main, idle_start + 0.1, idle_end - 0.1):
            idle_leaves.append(frames[stacks[sample["stack_id"]][0]]["function"])
    assert "green_hog" in in_request, sorted(in_request)
    assert "echo_client" in in_request, sorted(in_request)
    # While idle the thread sat in the hub's wait: its samples (repeated from
    # one stack the collector took) show that wait, not a stale green frame.
    assert idle_leaves, "no sample of the idle hub"
    assert "green_hog" not in idle_leaves and "echo_client" not in idle_leaves
    assert {leaf.rsplit(".", 1)[-1] for leaf in idle_leaves} <= {"do_poll", "wait"}, idle_leaves
