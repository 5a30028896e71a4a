"""Other owners of sigprof's signals in the same process: crash reporters on
SIGSEGV (faulthandler, a C handler), profilers on SIGPROF (vmprof) or on the
profile hook (pyinstrument). The README's "Other profilers and crash
reporters" section states these outcomes."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.core.workloads import spin

CRASH_SCRIPT = textwrap.dedent(
    """
    import ctypes, faulthandler, os, signal, sys, time
    import sigprof

    mode, order = sys.argv[1], sys.argv[2]
    libc = ctypes.CDLL(None)
    HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)

    @HANDLER
    def c_handler(signo):
        os.write(2, b"C HANDLER GOT %d\\n" % signo)
        os._exit(42)

    def install():
        if mode == "faulthandler":
            faulthandler.enable()
        elif mode == "c-handler":
            libc.signal(signal.SIGSEGV, c_handler)

    def spin(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(100))

    def crash_outside_the_walk():
        ctypes.string_at(0)

    if order == "before":
        install()
    sampler = sigprof.Sampler(frequency=200, clock="cpu")
    sampler.start()
    if order == "after":
        install()
    spin(0.2)
    print("samples:", len(sampler.samples()), flush=True)
    crash_outside_the_walk()
    print("survived", flush=True)
    """
)

# A frame link set to an unmapped address while its function runs: every
# sample of that thread faults inside sigprof's frame walk. The offsets are
# CPython's frame layouts (what csrc/frame_walk.c reads).
GUARD_SCRIPT = textwrap.dedent(
    """
    import ctypes, faulthandler, sys, time
    import sigprof

    UNMAPPED = 0x1000  # aligned, below any mapping (vm.mmap_min_addr)

    def link_address(frame):
        if sys.version_info < (3, 11):
            return id(frame) + 24  # PyFrameObject.f_back, after PyObject_VAR_HEAD
        interpreter_frame = ctypes.c_void_p.from_address(id(frame) + 24).value  # f_frame
        return interpreter_frame + (48 if sys.version_info < (3, 12) else 8)  # .previous

    def spin_with_a_broken_link(seconds):
        link = ctypes.c_void_p.from_address(link_address(sys._getframe()))
        saved = link.value
        link.value = UNMAPPED
        try:
            deadline = time.monotonic() + seconds  # BROKEN LINK
            while time.monotonic() < deadline:  # BROKEN LINK
                pass  # BROKEN LINK
        finally:
            link.value = saved  # before this function returns through it

    def crash_outside_the_walk():
        ctypes.string_at(0)

    order = sys.argv[1]
    if order == "before":
        faulthandler.enable()
    sampler = sigprof.Sampler(frequency=200, clock="cpu")
    sampler.start()
    if order == "after":
        faulthandler.enable()
    spin_with_a_broken_link(0.5)
    sampler.stop()
    samples = sampler.samples()
    faulted = sum(1 for s in samples if [f.function for f in s.frames] == ["<unknown>"])
    # Samples taken before the link was broken or after it was restored walk
    # normally; none may have walked through the broken link.
    with open(__file__) as source:
        broken_lines = {n for n, line in enumerate(source, 1) if line.endswith("# BROKEN LINK\\n")}
    walked_through = sum(1 for s in samples if s.frames[0].lineno in broken_lines)
    print("faulted walks:", faulted, "of", len(samples), "walked through:", walked_through, flush=True)
    if order != "after":
        crash_outside_the_walk()
    """
)


def _run(script: str, *args: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "conflict.py"
    path.write_text(script)
    env = dict(os.environ)
    # Under the ASan session the preloaded runtime would own SIGSEGV.
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":handle_segv=0:handle_sigbus=0"
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def _walk_counts(stdout: str) -> tuple[int, int, int]:
    (line,) = [line for line in stdout.splitlines() if line.startswith("faulted walks:")]
    words = line.split()
    return int(words[2]), int(words[4]), int(words[7])


def _samples_taken(stdout: str) -> int:
    (line,) = [line for line in stdout.splitlines() if line.startswith("samples:")]
    return int(line.split()[1])


@pytest.mark.parametrize("order", ["before", "after"])
def test_real_segfault_reaches_faulthandler(tmp_path, order):
    result = _run(CRASH_SCRIPT, "faulthandler", order, tmp_path=tmp_path)
    assert result.returncode == -signal.SIGSEGV, (result.stdout, result.stderr)
    assert _samples_taken(result.stdout) > 0
    assert "survived" not in result.stdout
    assert "Fatal Python error: Segmentation fault" in result.stderr
    assert "crash_outside_the_walk" in result.stderr  # faulthandler's traceback


@pytest.mark.parametrize("order", ["before", "after"])
def test_real_segfault_reaches_a_c_handler(tmp_path, order):
    result = _run(CRASH_SCRIPT, "c-handler", order, tmp_path=tmp_path)
    assert result.returncode == 42, (result.stdout, result.stderr)
    assert _samples_taken(result.stdout) > 0
    assert f"C HANDLER GOT {int(signal.SIGSEGV)}" in result.stderr


@pytest.mark.parametrize("order", ["none", "before"])
def test_faults_in_the_walk_are_recovered_and_real_ones_still_crash(tmp_path, order):
    result = _run(GUARD_SCRIPT, order, tmp_path=tmp_path)
    assert result.returncode == -signal.SIGSEGV, (result.stdout, result.stderr)
    faulted, total, walked_through = _walk_counts(result.stdout)
    assert faulted > total // 2 and walked_through == 0, result.stdout
    if order == "before":
        # one report, for the real crash; none for the recovered faults
        assert result.stderr.count("Fatal Python error: Segmentation fault") == 1, result.stderr
        assert "crash_outside_the_walk" in result.stderr
    else:
        assert "Fatal Python error" not in result.stderr


def test_faults_in_the_walk_are_recovered_with_faulthandler_enabled_later(tmp_path):
    # faulthandler's handler then runs first: the process survives, but
    # faulthandler reports the first such fault and leaves (the README says so).
    result = _run(GUARD_SCRIPT, "after", tmp_path=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    faulted, total, walked_through = _walk_counts(result.stdout)
    assert faulted > total // 2 and walked_through == 0, result.stdout


VMPROF_SCRIPT = textwrap.dedent(
    """
    import sys, tempfile, time
    import sigprof, vmprof

    def spin(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(100))

    out = tempfile.TemporaryFile()
    sampler = sigprof.Sampler(frequency=200, clock=sys.argv[2])
    if sys.argv[1] == "vmprof-first":
        vmprof.enable(out.fileno(), period=0.005)
        try:
            sampler.start()
            print("STARTED")
        except sigprof.SamplerError as error:
            print("REFUSED:", error)
        spin(0.1)
        vmprof.disable()
        with sampler:
            spin(0.2)
        print("samples after vmprof:", len(sampler.samples()))
    else:
        sampler.start()
        spin(0.2)
        print("replaced before:", sampler.handler_replaced())
        vmprof.enable(out.fileno(), period=0.005)
        spin(0.2)
        print("replaced after:", sampler.stats()["handler_replaced"])
        vmprof.disable()
        sampler.stop()
    """
)


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_vmprof_running_first_is_refused_clearly(tmp_path, clock):
    pytest.importorskip("vmprof")
    result = _run(VMPROF_SCRIPT, "vmprof-first", clock, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "REFUSED: an ITIMER_PROF interval timer is armed" in result.stdout, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("samples after")]
    assert int(line.split()[-1]) > 0  # free again once vmprof stopped


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_vmprof_started_later_is_detected(tmp_path, clock):
    pytest.importorskip("vmprof")
    result = _run(VMPROF_SCRIPT, "sigprof-first", clock, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "replaced before: False" in result.stdout
    assert "replaced after: True" in result.stdout, result.stdout


@pytest.mark.parametrize("pyinstrument_first", [True, False])
def test_pyinstrument_coexists(sampler_factory, pyinstrument_first):
    pyinstrument = pytest.importorskip("pyinstrument")
    sampler = sampler_factory(frequency=200, clock="cpu")
    profiler = pyinstrument.Profiler(interval=0.001)
    if pyinstrument_first:
        profiler.start()
        sampler.start()
    else:
        sampler.start()
        profiler.start()
    spin(0.3)
    profiler.stop()
    sampler.stop()
    assert any(s.frames and s.frames[0].function == "spin" for s in sampler.samples())
    assert "spin" in profiler.output_text()


def _blocked_signals(tid: int) -> set:
    with open(f"/proc/self/task/{tid}/status") as status:
        (mask,) = [line.split()[1] for line in status if line.startswith("SigBlk:")]
    bits = int(mask, 16)
    return {signo for signo in range(1, 65) if bits & (1 << (signo - 1))}


def test_process_signals_never_run_on_sigprof_threads(sampler_factory):
    # A C handler that does real work (uWSGI's SIGTERM handler calls exit())
    # once ran on the ticker, inside a fault it was recovering from.
    sampler = sampler_factory(frequency=200, clock="wall")
    with sampler:
        spin(0.1)
        ours = {}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as comm:
                name = comm.read().strip()
            if name.startswith("sigprof-"):
                ours[name] = _blocked_signals(int(tid))
    assert set(ours) == {"sigprof-ticker", "sigprof-collect"}
    for name, blocked in ours.items():
        for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                      signal.SIGUSR1, signal.SIGCHLD, signal.SIGALRM, signal.SIGPROF):
            assert signo in blocked, (name, signo)
        for signo in (signal.SIGSEGV, signal.SIGBUS):
            assert signo not in blocked, (name, signo)  # the fault guard needs them
