"""Wall clock: blocked threads are reported at their blocking call on every
tick and are never signalled while blocked."""

import socket
import threading
import time

from tests.core.workloads import spin, spin_wall


def wait_until_blocked(threads) -> None:
    """Until none of the threads has used CPU for 50 ms."""
    clocks = [time.pthread_getcpuclockid(thread.ident) for thread in threads]
    previous = None
    while True:
        now = [time.clock_gettime_ns(clock) for clock in clocks]
        if now == previous:
            return
        previous = now
        time.sleep(0.05)


def test_blocked_threads_repeat_without_signals(sampler_factory):
    server, client = socket.socketpair()
    ready = threading.Barrier(3)
    release = threading.Event()

    def sleeper():
        ready.wait()
        time.sleep(4)  # blocking line: sleep; outlives the sampling

    def receiver():
        ready.wait()
        client.recv(1)  # blocking line: recv

    threads = [threading.Thread(target=sleeper, name="sleeper", daemon=True),
               threading.Thread(target=receiver, name="receiver")]
    for thread in threads:
        thread.start()
    ready.wait()
    wait_until_blocked(threads)
    sampler = sampler_factory(frequency=101, clock="wall")
    with sampler:
        spin_wall(1.0)  # wall time: under load, a CPU second could outlast the sleep
        stats = sampler.stats()
    server.send(b"x")
    release.set()
    threads[1].join()
    server.close()
    client.close()

    samples = sampler.samples()
    ticks = stats["ticks"]
    assert ticks >= 50
    by_thread = {}
    for sample in samples:
        by_thread.setdefault(sample.thread_name, []).append(sample)
    for name, function, line_text in (("sleeper", "sleeper", "time.sleep"),
                                      ("receiver", "receiver", "client.recv")):
        got = by_thread[name]
        # one sample per tick, give or take the first and the last
        assert len(got) >= ticks - 2, (name, len(got), ticks)
        for sample in got:
            assert sample.frames[0].function.endswith(f"<locals>.{function}")
        ident = threads[0 if name == "sleeper" else 1].ident
        assert stats["signals"].get(ident, 0) == 0, (name, stats["signals"])
    # The running main thread samples itself by its CPU timer, one signal
    # per interval of its CPU time; the ticks it spends runnable but off the
    # CPU (other processes running) are filled in at the drain.
    main = by_thread["MainThread"]
    assert len(main) >= ticks * 0.9, (len(main), ticks)
    assert stats["signals"][threading.main_thread().ident] >= 1


def test_thread_that_wakes_up_is_sampled_again(sampler_factory):
    phase = threading.Event()

    def sleeper_then_worker():
        phase.wait()
        spin(0.5)

    thread = threading.Thread(target=sleeper_then_worker)
    thread.start()
    sampler = sampler_factory(frequency=101, clock="wall")
    with sampler:
        time.sleep(0.3)
        phase.set()
        thread.join()
    functions = [s.frames[0].function for s in sampler.samples() if s.thread_id == thread.ident]
    assert "spin" in functions
    assert "Condition.wait" in functions
    # blocked first, then running: never back to the blocked stack after running
    first_spin = functions.index("spin")
    assert "Condition.wait" not in functions[first_spin:]


def short_wait() -> None:
    time.sleep(0.004)


def wait_after_a_run() -> None:
    time.sleep(0.04)


def test_a_short_wait_after_a_long_run_gets_its_share(sampler_factory):
    # 0.5 s of CPU, then a 40 ms wait: while the thread runs throughout, the
    # ticker passes seldom (slow passes), and must still see the wait begin.
    # Before the deadline its signals push back: 3.6% for a 7.4% wait (the
    # wait was seen up to 50 ms late, its time counted as the run's).
    sampler = sampler_factory(frequency=101, clock="wall")
    share, truth, _ = _share_of_the_wait(sampler, lambda: spin_wall(0.5), wait_after_a_run, rounds=10)
    assert abs(share - truth) < 0.25 * truth, (share, truth)


def _share_of_the_wait(sampler, run, wait, rounds=None, seconds=None):
    """`run()` then `wait()`, `rounds` times or for `seconds`: the wait's share
    of the main thread's samples, its share of the time, and those samples' count."""
    waited, count = 0.0, 0
    with sampler:
        start = time.monotonic()
        while (count < rounds) if rounds is not None else (time.monotonic() - start < seconds):
            run()
            before = time.monotonic()
            wait()
            waited += time.monotonic() - before
            count += 1
        elapsed = time.monotonic() - start
    main = [s for s in sampler.samples() if s.thread_id == threading.main_thread().ident]
    share = sum(1 for s in main if s.frames[0].function == wait.__name__) / len(main)
    return share, waited / elapsed, len(main)


def test_short_waits_in_a_loop_get_their_share(sampler_factory):
    # 6 ms of CPU, then a 4 ms wait, over and over: the wall clock owes the
    # wait its share of the ticks, and every tick about one sample. (The wait
    # is read at the pass that falls in it; the loop's runs between two reads
    # must end its repeats, and a signal between two ticks already given to
    # the wait adds no sample. Before: 18% for a 40% wait, and 8% more
    # samples than ticks.)
    sampler = sampler_factory(frequency=101, clock="wall")
    share, truth, samples = _share_of_the_wait(sampler, lambda: spin(0.006), short_wait, seconds=3)
    assert abs(share - truth) < 0.08, (share, truth)
    ticks = sampler.stats()["ticks"]
    assert abs(samples - ticks) <= 0.03 * ticks, (samples, ticks)
