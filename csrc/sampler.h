/* The sampler: one per process. Ties the pieces together:
 *  - the SIGPROF handler copies its own thread's stack into the ring;
 *  - a ticker thread (no GIL, ever) decides each tick which threads to
 *    signal: in the wall clock, those that used CPU since the last tick and
 *    are running now; a thread that is blocked is never signalled, its stack
 *    is taken once by the collector and repeated at every tick until it runs;
 *    in the cpu clock, per-thread CPU timers do the signalling;
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
    int64_t base_ns;           /* CLOCK_MONOTONIC at start */
    int64_t interval_ns;
} sp_counters;

/* All under the GIL. start/stop return 0, or -1 with a message in error. */
int sp_sampler_start(const sp_config *config, char *error, size_t error_len);
int sp_sampler_stop(void);
int sp_sampler_running(void);
/* Drains pending records into the resolver. 0, or -1 when out of memory. */
int sp_sampler_collect(void);
/* The resolver of the current or last run, or NULL. */
sp_resolver *sp_sampler_resolver(void);
void sp_sampler_counters(sp_counters *counters);
/* Whether this platform can sample at all, and why not. */
int sp_sampler_supported(char *why, size_t why_len);

#endif
