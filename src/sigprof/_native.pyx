# cython: language_level=3
"""The bridge to the native core in csrc/. Everything here runs under the GIL;
the sampling itself happens in C, in signal handlers and two native threads.

Frames come out as raw tuples (kind, name, filename, lineno, first_lineno);
sigprof.core.sampler gives them their public shape."""

from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free

from sigprof._csrc.intern cimport (
    SP_FRAME_CODE,
    SP_FRAME_TRUNCATED,
    sp_frame_entry,
    sp_resolver,
    sp_resolver_frame,
    sp_resolver_reset_interning,
    sp_resolver_signal_bucket,
    sp_resolver_stack_frame,
    sp_resolver_stack_length,
    sp_resolver_take_samples,
    sp_sample_entry,
)
from sigprof._csrc.sampler cimport (
    SP_CLOCK_CPU,
    SP_CLOCK_WALL,
    sp_config,
    sp_counters,
    sp_sampler_catch_up,
    sp_sampler_collect,
    sp_sampler_counters,
    sp_sampler_resolver,
    sp_sampler_running,
    sp_sampler_start,
    sp_sampler_stop,
    sp_sampler_supported,
    sp_sampler_register_current_thread,
    sp_sampler_exclude_current_thread,
    sp_sampler_mark_current_thread,
    sp_sampler_unsampled_start_begin,
    sp_sampler_unsampled_start_end,
)
from sigprof._csrc.platform cimport (
    sp_signal_ignore_for_exec,
    sp_signal_handler_ours,
    sp_interrupt_thread_after,
    sp_signal_restore_after_exec_failure,
)
from sigprof._csrc.layout_check cimport (
    sp_layout_check_table,
    sp_layout_field_count,
    sp_layout_field_name,
    sp_layout_field_position,
    sp_layout_runtime_table,
    sp_layout_table_size,
)
from sigprof._csrc.thread_registry cimport sp_registry_ready_types

sp_registry_ready_types()

# The kind of a raw frame tuple that stands for frames cut off the root side.
FRAME_TRUNCATED = SP_FRAME_TRUNCATED

# How much of the resolver's tables the Python side has been given.
cdef uint64_t frames_reported = 0
cdef uint64_t stacks_reported = 0


def supported():
    """(True, "") when this platform can sample, else (False, why)."""
    cdef char why[512]
    why[0] = 0
    ok = sp_sampler_supported(why, sizeof(why))
    return bool(ok), why.decode("utf-8", "replace")


def layout_table():
    """A copy of the layout table the interpreter publishes for debuggers
    (_PyRuntime.debug_offsets), or b"" before CPython 3.13."""
    cdef const unsigned char *table = sp_layout_runtime_table()
    if table == NULL:
        return b""
    return table[:sp_layout_table_size()]


def layout_fields():
    """The fields of that table the layout check compares, as (name, byte
    position in the table)."""
    return [(sp_layout_field_name(i).decode("ascii"), sp_layout_field_position(i))
            for i in range(sp_layout_field_count())]


def layout_problem(bytes table):
    """The layout check run over `table` (laid out as layout_table()): why it
    refuses, or None. supported() runs it over the runtime's own table; tests
    give it an altered copy."""
    cdef char why[512]
    if len(table) != sp_layout_table_size():
        raise ValueError(f"a layout table has {sp_layout_table_size()} bytes, not {len(table)}")
    if sp_layout_table_size() == 0:
        return None
    why[0] = 0
    if sp_layout_check_table(table, why, sizeof(why)) == 0:
        return None
    return why.decode("utf-8", "replace")


def start(int64_t interval_ns, str clock, unsigned int max_depth, unsigned int max_threads,
          uint64_t ring_capacity, bint chain, dict threading_active, dict thread_names):
    global frames_reported, stacks_reported
    cdef sp_config config
    cdef char error[1024]
    config.interval_ns = interval_ns
    config.clock = SP_CLOCK_CPU if clock == "cpu" else SP_CLOCK_WALL
    config.max_depth = max_depth
    config.max_threads = max_threads
    config.ring_capacity = ring_capacity
    config.chain = chain
    config.threading_active = <void *>threading_active
    config.thread_names = <void *>thread_names
    error[0] = 0
    if sp_sampler_start(&config, error, sizeof(error)) != 0:
        raise RuntimeError(error.decode("utf-8", "replace"))
    frames_reported = 0
    stacks_reported = 0


def stop():
    sp_sampler_stop()


def running():
    return bool(sp_sampler_running())


cdef object frame_tuple(const sp_frame_entry *entry):
    if entry.kind == SP_FRAME_CODE:
        return (entry.kind, <object><PyObject *>entry.name, <object><PyObject *>entry.filename,
                entry.lineno, entry.first_lineno)
    return (entry.kind, None, None, 0, 0)


cdef int take_batch(sp_resolver *resolver, list frames, list stacks, list samples) except -1:
    global frames_reported, stacks_reported
    cdef uint64_t count = 0, i
    cdef uint32_t j, length
    cdef sp_sample_entry *taken = sp_resolver_take_samples(resolver, &count)
    # Python allocations below can destroy code objects, whose watcher may
    # collect more records: read the tables by index, up to this snapshot.
    cdef uint64_t frame_end = resolver.frame_count
    cdef uint64_t stack_end = resolver.stack_count
    try:
        for i in range(count):
            samples.append((taken[i].timestamp_ns, taken[i].thread_ident, taken[i].stack_id))
    finally:
        free(taken)
    for i in range(frames_reported, frame_end):
        frames.append(frame_tuple(sp_resolver_frame(resolver, i)))
    for i in range(stacks_reported, stack_end):
        length = sp_resolver_stack_length(resolver, i)
        stacks.append(tuple([sp_resolver_stack_frame(resolver, i, j) for j in range(length)]))
    frames_reported = frame_end
    stacks_reported = stack_end
    return 0


def drain(bint reset_interning=False):
    """Collects pending records. Returns (first_frame_id, frames, first_stack_id,
    stacks, samples): the frames and stacks not given before, ids counting on
    from the first ones, and the samples as (timestamp_ns, thread_ident,
    stack_id). With reset_interning, ids start again from 0 afterwards."""
    global frames_reported, stacks_reported
    cdef sp_resolver *resolver = sp_sampler_resolver()
    first_frame = frames_reported
    first_stack = stacks_reported
    frames, stacks, samples = [], [], []
    if resolver == NULL:
        return first_frame, frames, first_stack, stacks, samples
    sp_sampler_catch_up()
    if sp_sampler_collect() != 0:
        raise MemoryError("sigprof: out of memory while collecting samples")
    take_batch(resolver, frames, stacks, samples)
    if reset_interning:
        while resolver.sample_count:  # collected while the batch was built
            take_batch(resolver, frames, stacks, samples)
        if sp_resolver_reset_interning(resolver) != 0:
            raise MemoryError("sigprof: out of memory while starting new tables")
        frames_reported = 0
        stacks_reported = 0
    return first_frame, frames, first_stack, stacks, samples


def collect():
    """Moves pending records into the resolver (counted, interned), without
    handing them out: drain() still returns them."""
    if sp_sampler_collect() != 0:
        raise MemoryError("sigprof: out of memory while collecting samples")


def counters():
    cdef sp_counters c
    cdef sp_resolver *resolver = sp_sampler_resolver()
    cdef uint64_t bucket = 0, ident = 0, count = 0
    cdef int found
    sp_sampler_counters(&c)
    signals = {}
    result = {
        "dropped": c.dropped,
        "untracked_threads": c.untracked_threads,
        "stale_signals": c.stale_signals,
        "ticks": c.ticks,
        "registered_threads": c.registered_threads,
        "collector_gil_rounds": c.collector_gil_rounds,
        "ring_written": c.ring_written,
        "ring_capacity": c.ring_capacity,
        "base_ns": c.base_ns,
        "interval_ns": c.interval_ns,
        "samples": 0,
        "unresolved_frames": 0,
        "truncated": 0,
        "signals": signals,
    }
    if resolver != NULL:
        result["samples"] = resolver.emitted_samples
        result["unresolved_frames"] = resolver.unresolved_frames
        result["truncated"] = resolver.truncated_samples
        while True:
            found = sp_resolver_signal_bucket(resolver, bucket, &ident, &count)
            if found < 0:
                break
            if found:
                signals[ident] = count
            bucket += 1
    return result


def register_current_thread():
    """From a thread starting: sampled from now on, not from the next scan.
    True if it was registered by this call."""
    cdef int registered = sp_sampler_register_current_thread()
    if registered < 0:
        raise MemoryError("sigprof: could not register the thread")
    return registered == 1


def exclude_current_thread():
    """The calling thread is never sampled again (sigprof's own threads)."""
    if sp_sampler_exclude_current_thread() < 0:
        raise MemoryError("sigprof: could not mark the thread")


def mark_current_thread():
    """The calling thread crosses a boundary (a profiling span starts or
    ends): no sample is dated across it. Nothing if it is not sampled; a
    full buffer drops the mark (counted with the dropped records)."""
    sp_sampler_mark_current_thread()


def unsampled_start_begin():
    """A thread that will exclude itself is about to start: until
    unsampled_start_end(), the collector's scan registers no thread."""
    sp_sampler_unsampled_start_begin()


def unsampled_start_end():
    """That thread has excluded itself, or failed to start."""
    sp_sampler_unsampled_start_end()


def interrupt_thread_after(int native_id, double seconds):
    """A SIGINT to the thread in `seconds` (0: the one armed is cancelled),
    from a kernel timer: it arrives as a
    real Ctrl-C does. Sent by a thread of ours instead, it found the main
    thread parked at the eval loop's check for the GIL that thread took, and
    3.11/3.12 then raise the KeyboardInterrupt at the loop's back-jump,
    outside the `try` around a one-line `while` (a CPython bug)."""
    cdef long long delay_ns = <long long>(seconds * 1e9)
    if sp_interrupt_thread_after(native_id, delay_ns if delay_ns > 0 or seconds == 0 else 1) != 0:
        raise OSError("sigprof: could not arm the duration timer")


def ignore_sigprof_for_exec():
    """Right before execve: drop pending SIGPROF, which would kill the new program."""
    sp_signal_ignore_for_exec()


def restore_sigprof_after_failed_exec():
    sp_signal_restore_after_exec_failure()


def handler_ours():
    """Whether SIGPROF still runs sigprof's handler."""
    return sp_signal_handler_ours() != 0
