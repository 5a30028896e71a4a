from libc.stdint cimport int64_t, uint32_t, uint64_t

from sigprof._csrc.intern cimport sp_resolver


cdef extern from "sampler.h" nogil:
    ctypedef enum sp_clock:
        SP_CLOCK_WALL
        SP_CLOCK_CPU

    int64_t SP_MIN_INTERVAL_NS

    ctypedef struct sp_config:
        int64_t interval_ns
        sp_clock clock
        uint32_t max_depth
        uint32_t max_threads
        uint64_t ring_capacity
        int chain
        void *threading_active
        void *thread_names

    ctypedef struct sp_counters:
        uint64_t dropped
        uint64_t untracked_threads
        uint64_t stale_signals
        uint64_t ticks
        uint64_t registered_threads
        uint64_t collector_gil_rounds
        uint64_t ring_written
        uint64_t ring_capacity
        int64_t base_ns
        int64_t interval_ns

    int sp_sampler_start(const sp_config *config, char *error, size_t error_len) with gil
    int sp_sampler_stop() with gil
    int sp_sampler_running()
    int sp_sampler_collect() with gil
    void sp_sampler_catch_up()
    sp_resolver *sp_sampler_resolver()
    void sp_sampler_counters(sp_counters *counters)
    int sp_sampler_supported(char *why, size_t why_len)
    int sp_sampler_register_current_thread() with gil
    int sp_sampler_exclude_current_thread() with gil
    int sp_sampler_mark_current_thread() with gil
    void sp_sampler_unsampled_start_begin()
    void sp_sampler_unsampled_start_end()
