/* The sampler: one per process. Ties the pieces together:
 *  - the SIGPROF handler copies its own thread's stack into the ring; in
 *    both clocks, per-thread CPU timers do the signalling, so only a running
 *    thread is ever signalled, and only by the kernel;
 *  - a ticker thread (no GIL, ever; a slow pass, never per tick) reads, in
 *    the wall clock, the stacks of threads blocked or waiting for the GIL,
 *    which the drain repeats at every tick until they run, and hands the
 *    slots of threads that left back to the collector;
 *  - a collector thread takes the GIL only when there is work: registering
 *    new threads, taking blocked threads' stacks, reclaiming exited threads;
 *  - whoever holds the GIL drains the ring into the resolver. */
#ifndef SIGPROF_SAMPLER_H
#define SIGPROF_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "intern.h"

typedef struct _object PyObject;

typedef enum { SP_CLOCK_WALL = 0, SP_CLOCK_CPU = 1 } sp_clock;

#define SP_MIN_INTERVAL_NS 2000000LL /* 2 ms: faster livelocks some event loops */

typedef struct {
    int64_t interval_ns;
    sp_clock clock;
    uint32_t max_depth;
    uint32_t max_threads;
    uint64_t ring_capacity; /* 0: sized from max_depth */
    int chain;              /* forward foreign SIGPROF to an existing handler */
    /* threading._active, and the dict where thread names are recorded (by
     * thread ident) as threads register: short-lived threads are gone by the
     * time anyone drains. Borrowed; the sampler keeps references. */
    PyObject *threading_active;
    PyObject *thread_names;
} sp_config;

typedef struct {
    uint64_t dropped;          /* records lost to a full ring */
    uint64_t untracked_threads; /* threads beyond max_threads */
    uint64_t stale_signals;    /* signals for a thread that had already exited */
    uint64_t ticks;
    uint64_t registered_threads; /* threads with a registry slot (and timer) now */
    uint64_t collector_gil_rounds; /* times the collector took the GIL, its start included */
    uint64_t ring_written;     /* records written to the ring in this run */
    uint64_t ring_capacity;
    int64_t base_ns;           /* CLOCK_MONOTONIC at start */
    int64_t interval_ns;
} sp_counters;

/* All under the GIL. start/stop return 0, or -1 with a message in error. */
int sp_sampler_start(const sp_config *config, char *error, size_t error_len);
int sp_sampler_stop(void);
int sp_sampler_running(void);
/* Drains pending records into the resolver. 0, or -1 when out of memory. */
int sp_sampler_collect(void);
/* Before a drain that hands samples out: while the wall clock's passes are
 * slow, has the ticker pass now, so that blocked threads' ticks are there up
 * to now (a few microseconds' wait; bounded). */
void sp_sampler_catch_up(void);
/* The resolver of the current or last run, or NULL. */
sp_resolver *sp_sampler_resolver(void);
void sp_sampler_counters(sp_counters *counters);
/* Under the GIL, from a thread in its first moments: registers it now, so
 * it is sampled from its first instant rather than from the collector's next
 * scan (a new thread's cpu timer is armed here). 1 if it took a slot, 0 if
 * not (not running, registered already, excluded, no slot), -1 on error. */
int sp_sampler_register_current_thread(void);
/* Under the GIL: the calling thread is one of sigprof's own (or one the user
 * wants left out): never registered, in this run or a later one; if it was,
 * it is released. 0, or -1 on a Python error. */
int sp_sampler_exclude_current_thread(void);
/* Under the GIL, from a sampled thread: it crosses a boundary (a profiling
 * span starts or ends) now. In the wall clock the gap since its last sample
 * is filled up to here with that sample's stack, and the next gap begins
 * here, so that a stack is never dated across the boundary; in both clocks
 * no sample a later signal stands for is dated before it. 0, or -1 when the
 * buffer is full (the mark is dropped and counted). */
int sp_sampler_mark_current_thread(void);
/* Under the GIL, around the start of a thread that will exclude itself: from
 * before it is started until it has excluded itself (or failed to start),
 * the collector's scan registers no thread (it could register this one while
 * it waits for the GIL, and the wall clock would read its stack) and scans
 * again at the next pass. */
void sp_sampler_unsampled_start_begin(void);
void sp_sampler_unsampled_start_end(void);
/* Whether this platform, and this interpreter's memory layout
 * (layout_check.h), allow sampling at all, and why not. */
int sp_sampler_supported(char *why, size_t why_len);

#endif
