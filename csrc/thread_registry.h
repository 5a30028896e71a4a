/* sigprof's own map from sampled threads to their thread states. The signal
 * handler finds its thread's state here (through the slot number its signal
 * carries), never through interpreter calls that may lock or that return
 * NULL while the thread has released the GIL.
 *
 * Slots are allocated under the GIL, by a thread starting (it registers
 * itself) or by the collector's scan (threads started otherwise), and
 * reclaimed by the collector (or at once by a registration that finds no
 * slot free); a thread's exit marks its slot EXITED from the thread itself,
 * before its thread state is freed (a sentinel object in the thread state's
 * dict is deallocated by PyThreadState_Clear). */
#ifndef SIGPROF_THREAD_REGISTRY_H
#define SIGPROF_THREAD_REGISTRY_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "platform.h"

struct _ts;
struct _is;

typedef enum {
    SP_SLOT_FREE = 0,
    SP_SLOT_ALIVE = 1,
    SP_SLOT_EXITED = 2,    /* thread gone; the ticker has not finished with it */
    SP_SLOT_RECLAIMABLE = 3,
} sp_slot_state;

typedef enum {
    SP_IDLE_RUNNING = 0,   /* sampled by signal when it runs */
    SP_IDLE_REPEATING = 2, /* blocked, stack taken: repeated at every tick */
} sp_idle_state;

typedef struct {
    _Atomic int state;
    _Atomic uint32_t generation;
    struct _ts *tstate;
    uint64_t ident;   /* threading.get_ident() */
    pid_t tid;        /* threading.get_native_id() */
    sp_thread_timer timer;
    void *altstack;   /* owned by the thread's sentinel */
    int altstack_checked; /* written by the thread's own signal handler only */
    /* Set when its timer is armed to fire at once, for expirations owed
     * already: the thread CPU time of the first expiration drawn (it may be
     * before the timer was armed; 0: none). The first signal stands for
     * every expiration due from there, and re-arms the timer for the next. */
    int64_t phase_origin_cpu_ns;
    int name_attempts;    /* collector-private: tries left to find the thread's name */
    _Atomic int idle_state;
    _Atomic int being_read; /* the ticker is reading this thread's state (see sp_slot_begin_read) */
    _Atomic int64_t last_mark_ns; /* when the thread last crossed a boundary, or INT64_MIN */
    /* ticker-private */
    int64_t last_cpu_ns;
    uint64_t idle_fingerprint; /* ticker-private, set with REPEATING */
    int still_idle;            /* ticker-private, this tick */
} sp_thread_slot;

struct sp_thread_registry;
/* Called by a thread leaving, after it marked its slot EXITED (holding the
 * GIL, never in a signal handler). */
typedef void (*sp_on_exit)(struct sp_thread_registry *registry);
/* Called under the GIL by a registration that found no FREE slot: frees the
 * slots of threads that already left, at once, instead of at the ticker's and
 * collector's next rounds (threads that start and end faster than those
 * would otherwise go unsampled with fewer than capacity of them alive). */
typedef void (*sp_on_full)(struct sp_thread_registry *registry);

typedef struct sp_thread_registry {
    sp_thread_slot *slots;
    uint32_t capacity;
    _Atomic uint32_t high_water; /* slots at or above are FREE */
    _Atomic uint64_t overflow;   /* threads not sampled: no free slot */
    uint64_t session;            /* distinguishes sentinels of earlier runs */
    sp_on_exit on_exit;          /* or NULL */
    sp_on_full on_full;          /* or NULL */
} sp_thread_registry;

/* The ticker reads another thread's state only between these two: a thread
 * leaving marks its slot EXITED, then waits (in its sentinel's dealloc, before
 * its state is freed) until no such read is in progress. Returns 0, without
 * a read begun, when the slot is no longer ALIVE. Both sides use sequentially
 * consistent atomics, so one of them always sees the other. */
static inline int sp_slot_begin_read(sp_thread_slot *slot)
{
    atomic_store(&slot->being_read, 1);
    if (atomic_load(&slot->state) == SP_SLOT_ALIVE) {
        return 1;
    }
    atomic_store(&slot->being_read, 0);
    return 0;
}

static inline void sp_slot_end_read(sp_thread_slot *slot) { atomic_store(&slot->being_read, 0); }

int sp_registry_init(sp_thread_registry *registry, uint32_t capacity, uint64_t session);
void sp_registry_destroy(sp_thread_registry *registry);

/* Cookies carried by signals: which slot, which generation of it. */
uint64_t sp_cookie_magic(void);
uint64_t sp_cookie_make(uint32_t slot, uint32_t generation);
uint32_t sp_cookie_slot(uint64_t cookie);
uint32_t sp_cookie_generation(uint64_t cookie);

/* Called for each newly registered thread (timers are created here). */
typedef void (*sp_on_register)(sp_thread_slot *slot, uint32_t index);

/* Under the GIL: registers one bound thread state unless it is registered
 * already or excluded. 1 if it took a slot, 0 if not, -1 on a Python error. */
int sp_registry_add(sp_thread_registry *registry, struct _ts *tstate, sp_on_register on_register);

/* Under the GIL, from the thread itself: marks it as one of sigprof's own, never to be
 * registered (in this run or any later one), and releases the slot it holds
 * in the active registry (the ticker reclaims it). 1 if it held one, 0 if
 * not, -1 on a Python error. */
int sp_registry_exclude(struct _ts *tstate);

/* Under the GIL: registers every thread state of interp not yet registered
 * (except skip and excluded ones). Returns 1 if some thread state was not yet bound to an OS
 * thread (scan again later), 0 otherwise, -1 on a Python error. */
int sp_registry_scan(sp_thread_registry *registry, struct _is *interp, struct _ts *skip,
                     sp_on_register on_register);

/* Under the GIL: the live slot of the active registry the thread of tstate
 * holds, and its generation as signals carry it. 1, or 0 if it holds none. */
int sp_registry_slot_of(struct _ts *tstate, uint32_t *slot, uint32_t *generation);

/* Frees a RECLAIMABLE slot for reuse. */
void sp_registry_reclaim(sp_thread_registry *registry, uint32_t index);

/* Python objects that carry a thread's registration; the module init adds the type. */
int sp_registry_ready_types(void);

#endif
