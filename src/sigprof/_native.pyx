# cython: language_level=3
"""The bridge to the native core in csrc/. Everything here runs under the GIL;
the sampling itself happens in C, in signal handlers and two native threads.

Frames come out as raw tuples (kind, name, filename, lineno, first_lineno);
sigprof.core.sampler gives them their public shape."""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

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
    # A blocked thread's repeats come in runs of one thread and one stack:
    # their ints are made once per run, not per sample.
    cdef uint64_t ident = 0
    cdef int32_t stack = -1
    cdef object ident_object = None, stack_object = None
    try:
        for i in range(count):
            if ident_object is None or taken[i].thread_ident != ident:
                ident = taken[i].thread_ident
                ident_object = ident
            if stack_object is None or taken[i].stack_id != stack:
                stack = taken[i].stack_id
                stack_object = stack
            samples.append((taken[i].timestamp_ns, ident_object, stack_object))
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


# ---- a profile chunk's samples as JSON (sigprof.formats.chunk_json) ----


cdef inline char *write_text(char *out, const char *text, Py_ssize_t length) noexcept:
    memcpy(out, text, length)
    return out + length


@cython.cdivision(True)
cdef char *write_unsigned(char *out, unsigned long long value) noexcept:
    cdef char digits[20]
    cdef int count = 0
    while True:
        digits[count] = <char>(48 + value % 10)
        count += 1
        value //= 10
        if value == 0:
            break
    while count > 0:
        count -= 1
        out[0] = digits[count]
        out += 1
    return out


cdef char *write_signed(char *out, long long value) noexcept:
    if value < 0:
        out[0] = 45  # '-'
        return write_unsigned(out + 1, <unsigned long long>(-(value + 1)) + 1)
    return write_unsigned(out, <unsigned long long>value)


@cython.boundscheck(False)
@cython.wraparound(False)
def sentry_samples_json(samples, long long unix_offset_ns, Py_ssize_t stack_count):
    """The samples array of a format v2 chunk, as the pure-Python writer in
    sigprof.formats.chunk_json makes it (the same text, byte for byte): it
    is the bulk of a chunk, about 20,000 samples a second with 200 idle
    threads in the wall clock. ValueError for a stack id out of range."""
    cdef list items = list(samples)
    cdef Py_ssize_t count = len(items)
    if count == 0:
        return "[]"
    # per sample at most: {"timestamp": 20 digits e-9,"thread_id":" 20 digits ","stack_id": 20 digits }
    cdef Py_ssize_t capacity = 2 + count * 110
    cdef char *buffer = <char *>PyMem_Malloc(capacity)
    if buffer == NULL:
        raise MemoryError()
    cdef char *out = buffer
    cdef Py_ssize_t index
    cdef long long timestamp, stack_id
    cdef unsigned long long thread_id
    cdef object item
    try:
        out = write_text(out, b"[", 1)
        for index in range(count):
            item = items[index]
            if type(item) is tuple and len(<tuple>item) == 3:  # what drain() gives
                timestamp = (<tuple>item)[0]
                thread_id = (<tuple>item)[1]
                stack_id = (<tuple>item)[2]
            else:
                timestamp, thread_id, stack_id = item
            if not 0 <= stack_id < stack_count:
                raise ValueError(f"a sample names stack {stack_id} out of {stack_count}")
            if index:
                out = write_text(out, b",", 1)
            out = write_text(out, b'{"timestamp":', 13)
            out = write_signed(out, timestamp + unix_offset_ns)
            out = write_text(out, b'e-9,"thread_id":"', 17)
            out = write_unsigned(out, thread_id)
            out = write_text(out, b'","stack_id":', 13)
            out = write_signed(out, stack_id)
            out = write_text(out, b"}", 1)
        out = write_text(out, b"]", 1)
        return PyUnicode_DecodeASCII(buffer, out - buffer, NULL)
    finally:
        PyMem_Free(buffer)
