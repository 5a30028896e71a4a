"""fork, multiprocessing, subprocess and exec while sampling; exit while sampling."""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

from sigprof.core.sampler import MAX_FREQUENCY
from tests.core.workloads import spin


def child_burn(_):
    spin(0.05)
    return os.getpid()


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_fork_child_not_sampled_until_started_again(sampler_factory, clock):
    sampler = sampler_factory(frequency=200, clock=clock)
    read_end, write_end = os.pipe()
    with sampler:
        spin(0.1)
        pid = os.fork()
        if pid == 0:  # child
            status = 1
            try:
                import sigprof

                assert not sampler.running
                spin(0.1)
                child = sigprof.Sampler(frequency=200, clock=clock)
                with child:
                    spin(0.2)
                got = [s for s in child.samples() if s.frames and s.frames[0].function == "spin"]
                os.write(write_end, str(len(got)).encode())
                status = 0
            finally:
                os._exit(status)
        spin(0.2)
        _, status = os.waitpid(pid, 0)
    os.close(write_end)
    child_samples = int(os.read(read_end, 100) or b"0")
    os.close(read_end)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert child_samples >= 10
    parent = [s for s in sampler.samples() if s.frames and s.frames[0].function == "spin"]
    assert len(parent) >= 30


def test_multiprocessing_fork_pool_while_sampling(sampler_factory):
    sampler = sampler_factory(frequency=MAX_FREQUENCY, clock="wall")
    context = multiprocessing.get_context("fork")
    with sampler:
        with context.Pool(2) as pool:
            pids = pool.map(child_burn, range(16))
        spin(0.1)
    assert len(set(pids)) >= 1
    assert any(s.frames for s in sampler.samples())


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_subprocesses_are_never_killed_by_inherited_timers(sampler_factory, clock):
    sampler = sampler_factory(frequency=MAX_FREQUENCY, clock=clock)
    with sampler:
        for _ in range(20):
            result = subprocess.run(
                [sys.executable, "-c", "import time\nt=time.process_time()+0.05\nwhile time.process_time()<t: pass"],
                check=False,
            )
            assert result.returncode == 0
            spin(0.01)


EXEC_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import sigprof
    sampler = sigprof.Sampler(frequency=500, clock=sys.argv[1])
    sampler.start()
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass
    # exec a program that runs long enough to receive a pending signal
    os.execv(sys.executable, [sys.executable, "-c",
             "import time\\nt=time.process_time()+0.2\\nwhile time.process_time()<t: pass"])
    """
)


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_execv_while_sampling_survives(tmp_path, clock):
    script = tmp_path / "exec_while_sampling.py"
    script.write_text(EXEC_SCRIPT)
    for _ in range(6):
        result = subprocess.run([sys.executable, str(script), clock], check=False,
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()


# The workers run on while sigprof stops at exit (its atexit hook), and end
# just after it: CPython 3.9-3.11 can crash a daemon thread that still runs
# when the interpreter is freed (a take_gil after finalize_interp_delete,
# CPython gh-87135; seen here once on 3.10 under load, with sigprof's
# threads already joined and none of its code on any stack). The hook that
# ends them is registered before sigprof is imported, so it runs after
# sigprof's (atexit runs last-registered first).
EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys, threading, time
    stop_workers = threading.Event()
    workers = []
    def end_workers():
        stop_workers.set()
        for thread in workers:
            thread.join()
    atexit.register(end_workers)
    import sigprof
    mode = sys.argv[1]
    sampler = sigprof.Sampler(frequency=500, clock="wall")
    sampler.start()
    def worker():
        end = time.monotonic() + 60
        while time.monotonic() < end and not stop_workers.is_set():
            sum(range(1000))
    for _ in range(4):
        workers.append(threading.Thread(target=worker, daemon=True))
        workers[-1].start()
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass
    if mode == "os_exit":
        os._exit(0)
    if mode == "sigterm":
        import signal
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    if mode == "exception":
        raise SystemExit(0)
    # "normal": fall off the end while sampling
    """
)


@pytest.mark.parametrize("mode", ["normal", "os_exit", "sigterm", "exception"])
def test_interpreter_exit_while_sampling(tmp_path, mode):
    script = tmp_path / "exit_while_sampling.py"
    script.write_text(EXIT_SCRIPT)
    for _ in range(2):
        result = subprocess.run([sys.executable, str(script), mode], check=False,
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_generators_created_at_data_stack_chunk_boundaries_do_not_crash(clock):
    script = os.path.join(os.path.dirname(__file__), "chunk_boundary_generators.py")
    result = subprocess.run([sys.executable, "-X", "faulthandler", script, "3", clock], check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Fatal Python error" not in result.stderr
