#include "python_internal.h"

#include "sampler.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "code_lifetime.h"
#include "frame_walk.h"
#include "layout_check.h"
#include "platform.h"
#include "ring_buffer.h"
#include "thread_registry.h"

/* Scans that look a new thread's name up in threading._active. A thread
 * threading.Thread starts while the sampler runs names itself as it
 * registers, and every drain names the threads threading knows; the look-up
 * is for a thread whose start was in flight when the sampler started, found
 * at its registration or at the next scan. Threads threading never knows
 * (sigprof's own, C threads, _thread.start_new_thread) are looked for in
 * vain, and each scan takes the GIL from the running thread: two, not more. */
#define SP_NAME_ATTEMPTS 2
/* How often the ticker looks at the threads. The cpu clock's pass only
 * hands exited threads back and notices threads started outside Python
 * (10 Hz). The wall clock's runs at every tick while any thread may block
 * between two: it reads the stacks of threads that blocked since the last
 * one, and a wait shorter than a pass would otherwise go unseen (its ticks
 * filled with the stacks of the CPU work around it: at 20 Hz a web example's
 * 4 ms database sleeps fell from 17% of the samples to 2%). */
#define SP_CPU_PASS_NS 100000000LL
/* The wall clock's pass while nothing changes from one to the next: every
 * thread either ran for (nearly) all of the last pass (its CPU timer samples
 * it) or is still blocked where it was read without having used any CPU,
 * and the GIL did not change hands. A thread starting, a GIL hand-off, a
 * thread that fell short of running throughout, and a drain bring the
 * passes back to every tick. A wake of a sleeping thread costs 35-45 us of
 * its CPU on a 2-core VM, 0.4% of a core at 101 Hz, whatever the pass does.
 * While a thread runs throughout, its own signals watch for the rest: each
 * pushes back a deadline that expires once it stops running (a wait began),
 * and looks at the GIL's switch count (another thread ran Python code); the
 * passes come at every tick again from either. The slow pass is then a
 * fallback (a thread running without the GIL); without one, the pass alone
 * sees a wait begin or an idle thread run, at the latest this much later. */
#define SP_WALL_SLOW_PASS_NS 50000000LL
#define SP_WALL_WATCHED_PASS_NS 200000000LL

typedef struct {
    sp_config config;
    _Atomic int running;
    _Atomic int accepting;        /* signal handlers may write */
    _Atomic int handlers_active;  /* handlers between entry and exit */
    _Atomic int stopping;
    _Atomic uint64_t stale_signals;
    _Atomic int64_t last_tick;
    _Atomic int slow;             /* the ticker's next pass is a slow one (wall clock) */
    int has_run;
    uint64_t session;
    int64_t base_ns;
    PyInterpreterState *interp;
    PyThreadState *collector_tstate;
    pid_t ticker_tid;
    uintptr_t gil_low, gil_high;
    sp_ring ring;
    sp_thread_registry registry;
    sp_resolver resolver;
    pthread_t ticker, collector;
    pthread_mutex_t registry_mutex; /* held by the ticker per pass, and across fork */
    pthread_mutex_t work_mutex;
    pthread_cond_t work_cond;
    int wakeup_fd;                /* posted to wake the ticker: to stop, for exits, out of slow passes */
    int deadline_fd;              /* slow passes: expires once running threads stop pushing it back */
    int64_t deadline_after_ns;    /* how far each of their signals pushes it */
    struct _gil_runtime_state *gil;
    _Atomic uint64_t slow_gil_switches; /* the GIL's switch count as slow passes began */
    pthread_cond_t pass_cond;     /* on CLOCK_MONOTONIC: the ticker finished a regular pass */
    int collector_ready;
    _Atomic int want_scan, want_reclaim;
    _Atomic uint32_t exits_waiting; /* threads that left since the last pass */
    uint64_t seen_thread_serial;   /* written by the collector */
    _Atomic uint64_t collector_gil_rounds;
    _Atomic int scan_again;
    uint64_t random_state;
    /* ticker-private */
    int *state_fds;            /* per slot: its thread's open state file, or -1 */
    uint32_t state_fds_open, state_fds_max;
    uint64_t idle_checked_switch; /* the GIL's switch count at the last idle check */
    int idle_check_valid;
    int gil_switched;             /* since the last regular pass */
    int64_t last_pass_ns;         /* when the last regular pass began */
    int settled;                  /* this pass: nothing can change before a slow one */
    uint32_t ran_throughout;      /* this pass: threads that ran for all of it */
    sp_record *blocked_scratch;   /* a blocked thread's stack, until it is known good */
    _Atomic int capturing_blocked; /* a stack read without the GIL is not yet committed */
} sp_sampler_state;

static sp_sampler_state S = {
    .registry_mutex = PTHREAD_MUTEX_INITIALIZER,
    .work_mutex = PTHREAD_MUTEX_INITIALIZER,
    .work_cond = PTHREAD_COND_INITIALIZER,
    .wakeup_fd = -1,
    .deadline_fd = -1,
};

/* ---------------- the signal handler's part ---------------- */

typedef struct {
    struct _ts *tstate;
    sp_record *record;
} sp_walk_job;

static void walk_job(void *argument)
{
    sp_walk_job *job = argument;
    sp_walk_stack(job->tstate, job->record, S.config.max_depth);
}

/* Walks under the fault guard; a walk cut short by a fault is recorded as
 * such (the resolver names it unknown), never left uncommitted. */
static void walk_into(pid_t tid, struct _ts *tstate, sp_record *record)
{
    sp_walk_job job = {tstate, record};
    record->depth = 0;
    if (sp_guarded_run(tid, walk_job, &job) != 0) {
        record->depth = 0;
        record->flags |= SP_RECORD_FAULTED;
    }
}

/* How late the kernel delivers a CPU timer's expiration, learnt from the
 * first signals a process receives (kept across runs: it is the machine's
 * scheduler tick). A thread's first expiry is drawn that much earlier, so
 * that the samples delivered over its life are as many as its CPU time is
 * owed: a thread that ends between an expiration and the next tick
 * otherwise loses it (10 ms threads at 101 Hz: 82% of their samples with a
 * 4 ms tick, 94-100% drawn early). A signal that merged expirations stands
 * for each of them, the oldest the latest. */
#define SP_LATENESS_SIGNALS 64
#define SP_LONGEST_TICK_NS 10000000
static _Atomic uint32_t lateness_signals;
static _Atomic int64_t lateness_expirations;
static _Atomic int64_t lateness_sum_ns;

static void learn_lateness(const sp_thread_slot *slot, uint32_t merged)
{
    if (atomic_load_explicit(&lateness_signals, memory_order_relaxed) >= SP_LATENESS_SIGNALS) {
        return;
    }
    int64_t interval = S.config.interval_ns;
    int64_t late = sp_thread_timer_lateness_ns(&slot->timer, interval);
    /* Past the longest tick (10 ms at CONFIG_HZ=100), SIGPROF was blocked
     * for a while: not the kernel's lateness. */
    if (late < 0 || merged >= SP_MAX_MERGED || late + (int64_t)merged * interval > SP_LONGEST_TICK_NS ||
        atomic_fetch_add(&lateness_signals, 1) >= SP_LATENESS_SIGNALS) {
        return;
    }
    /* the newest expiration `late` ago, the oldest merged intervals before */
    int64_t count = (int64_t)merged + 1;
    atomic_fetch_add(&lateness_sum_ns, count * late + interval * (int64_t)merged * count / 2);
    atomic_fetch_add(&lateness_expirations, count);
}

static int64_t mean_lateness_ns(void)
{
    int64_t expirations = atomic_load(&lateness_expirations);
    return atomic_load(&lateness_signals) < 8 || expirations == 0
               ? 0
               : atomic_load(&lateness_sum_ns) / expirations;
}

/* Back to a pass at every tick (a thread started, a drain wants the
 * blocked threads' ticks up to now, another thread ran Python code): ends a
 * slow wait at once. Async-signal-safe. */
static void end_slow_passes(void)
{
    if (atomic_exchange(&S.slow, 0)) {
        sp_wakeup_post(S.wakeup_fd);
    }
}

static void capture_current_thread(uint64_t cookie, uint32_t merged)
{
    atomic_fetch_add(&S.handlers_active, 1);
    if (!atomic_load(&S.accepting)) {
        atomic_fetch_sub(&S.handlers_active, 1);
        return;
    }
    uint32_t index = sp_cookie_slot(cookie);
    sp_thread_slot *slot = index < S.registry.capacity ? &S.registry.slots[index] : NULL;
    pid_t tid = sp_current_tid();
    /* Only ever walk the interrupted thread's own stack. */
    if (slot == NULL || atomic_load_explicit(&slot->state, memory_order_acquire) != SP_SLOT_ALIVE ||
        atomic_load(&slot->generation) != sp_cookie_generation(cookie) ||
        slot->tid != tid) {
        atomic_fetch_add(&S.stale_signals, 1);
        atomic_fetch_sub(&S.handlers_active, 1);
        return;
    }
    learn_lateness(slot, merged);
    if (slot->phase_origin_cpu_ns != 0) {
        /* Counted from the phase drawn, not from the timer's own expirations
         * (which began at its arming): the rest then follow that phase. */
        int64_t now = sp_thread_cpu_ns(tid);
        int64_t interval = S.config.interval_ns;
        if (now >= slot->phase_origin_cpu_ns) {
            int64_t due = (now - slot->phase_origin_cpu_ns) / interval + 1;
            merged = due - 1 < SP_MAX_MERGED ? (uint32_t)(due - 1) : SP_MAX_MERGED;
            sp_thread_timer_rephase(&slot->timer, slot->phase_origin_cpu_ns + due * interval, interval);
        }
        slot->phase_origin_cpu_ns = 0;
    }
    if (!slot->altstack_checked) {
        slot->altstack_checked = 1;
        if (slot->altstack != NULL) {
            sp_altstack_adopt(slot->altstack, sp_altstack_size());
        }
    }
    uint64_t position;
    sp_record *record = sp_ring_reserve(&S.ring, &position);
    if (record != NULL) {
        record->timestamp_ns = sp_monotonic_ns();
        record->tick = 0;
        record->thread_ident = slot->ident;
        record->slot = index;
        record->generation = sp_cookie_generation(cookie);
        record->kind = SP_RECORD_SIGNAL_SAMPLE;
        record->flags = 0;
        record->merged = merged;
        walk_into(tid, slot->tstate, record);
        sp_ring_commit(&S.ring, position);
    }
    if (atomic_load_explicit(&S.slow, memory_order_acquire)) {
        uintptr_t holder;
        if (sp_gil_switches(S.gil, &holder) != atomic_load(&S.slow_gil_switches)) {
            end_slow_passes(); /* another thread ran Python code: it may have blocked elsewhere */
        } else {
            /* still running: the ticker need not look before this thread stops */
            sp_deadline_arm(S.deadline_fd, S.deadline_after_ns);
        }
    }
    atomic_fetch_sub(&S.handlers_active, 1);
}

/* ---------------- the ticker: no GIL, no Python ---------------- */

typedef struct {
    struct _ts *tstate;
    uint64_t fingerprint;
} sp_fingerprint_job;

static void fingerprint_job(void *argument)
{
    sp_fingerprint_job *job = argument;
    job->fingerprint = sp_stack_fingerprint(job->tstate);
}

/* 0 when the thread state could not be read. */
static uint64_t fingerprint_of(pid_t tid, struct _ts *tstate)
{
    sp_fingerprint_job job = {tstate, 0};
    return sp_guarded_run(tid, fingerprint_job, &job) == 0 ? job.fingerprint : 0;
}

typedef struct {
    volatile uint32_t next; /* read back after a fault: never cached in a register */
    uint32_t end;
    int trust_still_idle;   /* no GIL switch since the last pass */
    uintptr_t gil_holder;
} sp_fingerprint_pass;

static void fingerprint_pass(void *argument)
{
    sp_fingerprint_pass *pass = argument;
    for (; pass->next < pass->end; pass->next++) {
        sp_thread_slot *slot = &S.registry.slots[pass->next];
        if (pass->trust_still_idle && slot->still_idle && (uintptr_t)slot->tstate != pass->gil_holder) {
            continue; /* it cannot have run Python code: it did not take the GIL */
        }
        slot->still_idle = 0;
        if (atomic_load_explicit(&slot->idle_state, memory_order_acquire) == SP_IDLE_REPEATING &&
            slot->idle_fingerprint != 0 && sp_slot_begin_read(slot)) {
            /* Back at the same instruction after running (a loop that
             * waits) is not still idle: the repeats must end where it ran. */
            slot->still_idle = sp_stack_fingerprint(slot->tstate) == slot->idle_fingerprint &&
                               sp_thread_cpu_ns(slot->tid) == slot->last_cpu_ns;
            sp_slot_end_read(slot);
        }
    }
}

/* Which repeating threads are still at the frame and instruction they
 * blocked at: one guarded pass over all of them, no system call per thread.
 * Where the GIL has not changed hands since the last pass only the last
 * holder is looked at again, so idle threads cost next to nothing while one
 * thread keeps the GIL. */
static void mark_still_idle(uint32_t end)
{
    uintptr_t holder;
    uint64_t switches = sp_gil_switches(S.gil, &holder);
    sp_fingerprint_pass pass = {0, end, S.idle_check_valid && switches == S.idle_checked_switch, holder};
    S.gil_switched = !pass.trust_still_idle;
    S.idle_checked_switch = switches;
    S.idle_check_valid = 1;
    while (pass.next < end) {
        if (sp_guarded_run(S.ticker_tid, fingerprint_pass, &pass) != 0) {
            sp_slot_end_read(&S.registry.slots[pass.next]); /* the fault cut its read short */
            S.registry.slots[pass.next].still_idle = 0;
            pass.next++;
        }
    }
}

static void wake_collector(void)
{
    pthread_mutex_lock(&S.work_mutex);
    pthread_cond_signal(&S.work_cond);
    pthread_mutex_unlock(&S.work_mutex);
}

/* Exited threads' slots wait for the next pass, unless this many of them
 * (a quarter of the registry) wake the ticker before: threads that start and
 * end faster than the passes would otherwise run out of slots. */
static uint32_t exits_to_wake_ticker(void)
{
    return S.registry.capacity >= 8 ? S.registry.capacity / 4 : 1;
}

static void on_thread_exit(sp_thread_registry *registry)
{
    (void)registry;
    if (atomic_fetch_add(&S.exits_waiting, 1) + 1 == exits_to_wake_ticker()) {
        sp_wakeup_post(S.wakeup_fd);
    }
}

/* Until `ticks` after `tick`, or `slow_ticks` while S.slow holds (cleared
 * by another thread, or by the deadline's expiry: a running thread stopped
 * running, so a wait may have begun; the wait shortens). 1 when woken before
 * the deadline by threads that left (exits_only pass). */
static int sleep_until_next_pass(int64_t tick, int64_t ticks, int64_t slow_ticks)
{
    int exits = 0;
    for (;;) {
        int64_t deadline_ns = S.base_ns + (tick + (atomic_load(&S.slow) ? slow_ticks : ticks)) *
                                              S.config.interval_ns;
        if (atomic_load(&S.stopping) || sp_monotonic_ns() >= deadline_ns || exits) {
            break;
        }
        exits = atomic_load(&S.exits_waiting) >= exits_to_wake_ticker();
        if (!exits && sp_wait_for_wakeup(S.wakeup_fd, S.deadline_fd, deadline_ns) & SP_WOKE_DEADLINE) {
            atomic_store(&S.slow, 0);
        }
    }
    return exits && !atomic_load(&S.stopping);
}

static void stop_sampler_threads(void)
{
    pthread_mutex_lock(&S.work_mutex);
    atomic_store(&S.stopping, 1);
    pthread_cond_signal(&S.work_cond);
    pthread_mutex_unlock(&S.work_mutex);
    sp_wakeup_post(S.wakeup_fd);
}

/* Idle records are stamped with the tick they stand for. */
static void idle_record_header(sp_record *record, uint32_t index, const sp_thread_slot *slot,
                               int64_t tick, uint16_t kind)
{
    record->timestamp_ns = S.base_ns + tick * S.config.interval_ns;
    record->tick = tick;
    record->thread_ident = slot->ident;
    record->slot = index;
    record->generation = sp_cookie_generation(sp_cookie_make(index, atomic_load(&slot->generation)));
    record->kind = kind;
    record->flags = 0;
    record->merged = 0;
}

static int write_idle_end(uint32_t index, sp_thread_slot *slot, int64_t tick)
{
    uint64_t position;
    sp_record *record = sp_ring_reserve(&S.ring, &position);
    if (record == NULL) {
        return -1;
    }
    idle_record_header(record, index, slot, tick, SP_RECORD_IDLE_END);
    record->depth = 0;
    sp_ring_commit(&S.ring, position);
    return 0;
}

/* The ticker keeps the state files of the threads it reads open, up to a
 * small share of the process's descriptor limit. */
static sp_thread_run_state thread_state(uint32_t index, const sp_thread_slot *slot)
{
    int *fd = &S.state_fds[index];
    if (*fd < 0 && S.state_fds_open < S.state_fds_max) {
        *fd = sp_thread_state_open(slot->tid);
        S.state_fds_open += *fd >= 0;
    }
    int was_open = *fd >= 0;
    sp_thread_run_state state = sp_thread_state(slot->tid, fd, S.gil_low, S.gil_high);
    S.state_fds_open -= was_open && *fd < 0;
    return state;
}

static void close_state_file(uint32_t index)
{
    if (S.state_fds[index] >= 0) {
        close(S.state_fds[index]);
        S.state_fds[index] = -1;
        S.state_fds_open--;
    }
}

static void close_state_files(void)
{
    for (uint32_t index = 0; S.state_fds != NULL && index < S.registry.capacity; index++) {
        close_state_file(index);
    }
}

static uint32_t state_files_allowed(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
        return 64;
    }
    return limit.rlim_cur / 32 < 64 ? (uint32_t)(limit.rlim_cur / 32) : 64;
}

/* A thread that ran since the last tick and is now blocked in a system call
 * (not waiting for the GIL) must not be signalled. Its Python stack cannot
 * change until it runs again, so the ticker reads it, without the GIL: the
 * stack is good if the thread used no CPU from before its state was read
 * until after its stack was. Until the record is committed, code objects
 * being freed wait (on_code_destroyed): the record may name one of them.
 * Returns 0 once the thread repeats, -1 when it must be looked at again. */
static int capture_blocked(uint32_t index, sp_thread_slot *slot, int64_t tick, int64_t cpu_ns)
{
    sp_record *scratch = S.blocked_scratch;
    idle_record_header(scratch, index, slot, tick, SP_RECORD_IDLE_START);
    if (!sp_slot_begin_read(slot)) {
        return -1; /* it has just left */
    }
    atomic_store(&S.capturing_blocked, 1);
    walk_into(S.ticker_tid, slot->tstate, scratch);
    uint64_t fingerprint = fingerprint_of(S.ticker_tid, slot->tstate);
    sp_slot_end_read(slot);
    /* Read before the CPU time: if that is unchanged, the thread did not run
     * since its state was read, so a mark seen here came before the read. */
    int64_t marked = atomic_load(&slot->last_mark_ns);
    int good = fingerprint != 0 && !(scratch->flags & SP_RECORD_FAULTED) &&
               sp_thread_cpu_ns(slot->tid) == cpu_ns;
    if (marked >= scratch->timestamp_ns) {
        /* This pass began before the thread crossed a boundary, and read its
         * stack after: dated at the pass's tick, that stack would be on the
         * wrong side. Just after the mark instead, repeated from the next tick. */
        scratch->timestamp_ns = marked + 1;
        scratch->tick = (marked + 1 - S.base_ns) / S.config.interval_ns;
    }
    uint64_t position;
    sp_record *record = good ? sp_ring_reserve(&S.ring, &position) : NULL;
    if (record != NULL) {
        memcpy(record, scratch, sizeof(*scratch) + scratch->depth * sizeof(sp_frame_ref));
        sp_ring_commit(&S.ring, position);
    }
    atomic_store(&S.capturing_blocked, 0);
    if (record == NULL) {
        return -1; /* it ran meanwhile, or the ring is full: next tick */
    }
    slot->idle_fingerprint = fingerprint;
    atomic_store_explicit(&slot->idle_state, SP_IDLE_REPEATING, memory_order_release);
    return 0;
}

/* Wall clock, one thread, one pass. A thread that used an interval of CPU
 * time since the last pass is sampled by its own CPU timer; one that did
 * not is read here if it is blocked or waiting for the GIL (its stack cannot
 * change then), and then repeated at every tick until it runs again (read
 * again at the next pass if it used any CPU meanwhile: a loop that waits at
 * the same place each time round, whose runs between must not count as
 * waiting). Clears S.settled unless the thread leaves nothing to look at
 * before a slow pass. No
 * thread is ever signalled from here: a thread seen running could block
 * before the signal lands, and its system call would fail with EINTR. */
static void pass_wall_thread(uint32_t index, sp_thread_slot *slot, int64_t tick, int64_t since_last_pass_ns)
{
    if (atomic_load_explicit(&slot->idle_state, memory_order_acquire) == SP_IDLE_REPEATING) {
        if (slot->still_idle) {
            return; /* still where it blocked: nothing to do, no system call */
        }
        S.settled = 0;
        if (write_idle_end(index, slot, tick) != 0) {
            return; /* ring full: next pass */
        }
        atomic_store(&slot->idle_state, SP_IDLE_RUNNING);
    }
    int64_t cpu = sp_thread_cpu_ns(slot->tid);
    if (cpu < 0) {
        S.settled = 0;
        return; /* exiting: its sentinel will say so */
    }
    int64_t ran = slot->last_cpu_ns >= 0 ? cpu - slot->last_cpu_ns : 0;
    slot->last_cpu_ns = cpu;
    if (ran > 0 && ran >= since_last_pass_ns - since_last_pass_ns / 16) {
        S.ran_throughout++;
        return; /* ran throughout: its timer samples it; its stopping ends slow passes */
    }
    S.settled = 0; /* it waited or was kept off the CPU: a wait may come again */
    if (ran >= S.config.interval_ns) {
        return; /* its timer sampled it */
    }
    sp_thread_run_state run_state = thread_state(index, slot);
    if (run_state == SP_THREAD_BLOCKED || run_state == SP_THREAD_LOCK_WAIT) {
        capture_blocked(index, slot, tick, cpu);
    }
}

/* exits_only: a pass between the regular ones, which only hands the slots
 * of threads that left back to the collector. */
static void tick_pass(int64_t tick, int exits_only)
{
    atomic_store(&S.exits_waiting, 0);
    if (!exits_only &&
        (sp_interp_thread_serial(S.interp) != S.seen_thread_serial || atomic_load(&S.scan_again))) {
        atomic_store(&S.want_scan, 1);
    }
    uint32_t high_water = atomic_load(&S.registry.high_water);
    int64_t since_last_pass_ns = 0;
    if (S.config.clock == SP_CLOCK_WALL && !exits_only) {
        int64_t now = sp_monotonic_ns();
        since_last_pass_ns = now - S.last_pass_ns;
        S.last_pass_ns = now;
        mark_still_idle(high_water);
        S.settled = !S.gil_switched && !atomic_load(&S.want_scan);
        S.ran_throughout = 0;
    }
    for (uint32_t index = 0; index < high_water; index++) {
        sp_thread_slot *slot = &S.registry.slots[index];
        int state = atomic_load_explicit(&slot->state, memory_order_acquire);
        if (state == SP_SLOT_EXITED) {
            if (atomic_load(&slot->idle_state) == SP_IDLE_REPEATING &&
                write_idle_end(index, slot, tick) != 0) {
                continue; /* ring full: next tick */
            }
            close_state_file(index);
            atomic_store_explicit(&slot->state, SP_SLOT_RECLAIMABLE, memory_order_release);
            atomic_store(&S.want_reclaim, 1);
            S.settled &= exits_only; /* ticker-private: never written by reclaim_exited_now */
        } else if (state == SP_SLOT_ALIVE && S.config.clock == SP_CLOCK_WALL && !exits_only) {
            pass_wall_thread(index, slot, tick, since_last_pass_ns);
        }
    }
}

static void *ticker_main(void *unused)
{
    (void)unused;
    sp_block_async_signals();
    sp_thread_set_name("sigprof-ticker");
    S.ticker_tid = sp_current_tid();
    int64_t pass_ns = S.config.clock == SP_CLOCK_WALL ? S.config.interval_ns : SP_CPU_PASS_NS;
    int64_t ticks_per_pass = pass_ns > S.config.interval_ns ? pass_ns / S.config.interval_ns : 1;
    int64_t slow_ticks = SP_WALL_SLOW_PASS_NS > S.config.interval_ns
                             ? SP_WALL_SLOW_PASS_NS / S.config.interval_ns : 1;
    int64_t watched_ticks = SP_WALL_WATCHED_PASS_NS > S.config.interval_ns
                                ? SP_WALL_WATCHED_PASS_NS / S.config.interval_ns : 1;
    S.last_pass_ns = sp_monotonic_ns();
    S.settled = 0;
    S.ran_throughout = 0;
    /* The first pass at once, so that threads blocked at start repeat from
     * tick 0, and a last one at stop, so that they repeat until then. */
    for (int64_t tick = 0;;) {
        pthread_mutex_lock(&S.registry_mutex);
        tick_pass(tick, 0);
        pthread_mutex_unlock(&S.registry_mutex);
        /* the tick up to which blocked threads are known to be still blocked */
        atomic_store_explicit(&S.last_tick, tick, memory_order_release);
        int slow = S.config.clock == SP_CLOCK_WALL && S.settled;
        if (slow && S.ran_throughout > 0) {
            /* Its running threads' signals push this back; when one of them
             * stops, it expires and the passes come at every tick again. */
            sp_deadline_arm(S.deadline_fd, S.deadline_after_ns);
        }
        atomic_store(&S.slow_gil_switches, S.idle_checked_switch);
        atomic_store(&S.slow, slow);
        pthread_mutex_lock(&S.work_mutex);
        pthread_cond_broadcast(&S.pass_cond);
        pthread_mutex_unlock(&S.work_mutex);
        if (atomic_load(&S.stopping)) {
            break;
        }
        if (atomic_load(&S.want_scan) || atomic_load(&S.want_reclaim)) {
            wake_collector();
        }
        while (sleep_until_next_pass(tick, ticks_per_pass, S.ran_throughout ? watched_ticks : slow_ticks)) {
            pthread_mutex_lock(&S.registry_mutex);
            tick_pass((sp_monotonic_ns() - S.base_ns) / S.config.interval_ns, 1);
            pthread_mutex_unlock(&S.registry_mutex);
            wake_collector();
        }
        int64_t now_tick = (sp_monotonic_ns() - S.base_ns) / S.config.interval_ns;
        tick = now_tick > tick ? now_tick : tick + 1; /* late: skip, never run twice */
    }
    pthread_mutex_lock(&S.registry_mutex);
    close_state_files();
    pthread_mutex_unlock(&S.registry_mutex);
    return NULL;
}

/* ---------------- the collector: GIL work, only when needed ---------------- */

static uint64_t next_random(void)
{
    uint64_t x = S.random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    S.random_state = x;
    return x;
}

static void on_register(sp_thread_slot *slot, uint32_t index)
{
    end_slow_passes(); /* its waits are seen from the first */
    slot->name_attempts = SP_NAME_ATTEMPTS;
    /* Both clocks: a running thread samples itself every interval of its CPU
     * time. A random first expiry spreads threads over the interval; it is
     * drawn earlier by the kernel's lateness. Expirations that fall before
     * now (the lateness can pass the interval) are owed already: the first
     * signal stands for them too. */
    int64_t interval = S.config.interval_ns;
    int64_t first = 1 + (int64_t)(next_random() % (uint64_t)interval) - mean_lateness_ns();
    slot->phase_origin_cpu_ns = 0;
    if (first < 1) {
        /* Due already: the timer fires at the next tick, and that signal
         * stands for every expiration of the phase drawn until then. */
        int64_t cpu_now = sp_thread_cpu_ns(slot->tid);
        if (cpu_now + first > 0) {
            slot->phase_origin_cpu_ns = cpu_now + first;
        }
        first = 1;
    }
    sp_thread_timer_start(&slot->timer, slot->tid, first, interval,
                          sp_cookie_make(index, atomic_load(&slot->generation)));
}

/* threading.Thread registers itself in threading._active a moment after its
 * thread state exists: look the name up at registration, and again at the
 * next scans until found. */
static int record_thread_name(uint64_t ident)
{
    PyObject *key = PyLong_FromUnsignedLongLong(ident);
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    int found = 0;
    PyObject *thread = PyDict_GetItemWithError(S.config.threading_active, key);
    if (thread != NULL) {
        PyObject *name = PyObject_GetAttrString(thread, "name");
        if (name != NULL) {
            found = PyDict_SetItem(S.config.thread_names, key, name) == 0;
            Py_DECREF(name);
        }
    }
    PyErr_Clear();
    Py_DECREF(key);
    return found;
}

static int name_unnamed_threads(void)
{
    int pending = 0;
    uint32_t high_water = atomic_load(&S.registry.high_water);
    for (uint32_t index = 0; index < high_water; index++) {
        sp_thread_slot *slot = &S.registry.slots[index];
        if (slot->name_attempts <= 0 || atomic_load(&slot->state) != SP_SLOT_ALIVE) {
            continue;
        }
        if (record_thread_name(slot->ident)) {
            slot->name_attempts = 0;
        } else {
            pending |= --slot->name_attempts > 0;
        }
    }
    return pending;
}

/* Not in S, which start() resets: a start can be in flight across runs. */
static _Atomic int unsampled_starts_in_flight;

static void forget_unsampled_starts(void)
{
    atomic_store(&unsampled_starts_in_flight, 0); /* their threads are not in a forked child */
}

static void forget_unsampled_starts_at_fork(void)
{
    pthread_atfork(NULL, NULL, forget_unsampled_starts);
}

void sp_sampler_unsampled_start_begin(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, forget_unsampled_starts_at_fork);
    atomic_fetch_add(&unsampled_starts_in_flight, 1);
}

void sp_sampler_unsampled_start_end(void)
{
    if (atomic_load(&unsampled_starts_in_flight) > 0) {
        atomic_fetch_sub(&unsampled_starts_in_flight, 1);
    }
}

static void scan_threads(void)
{
    if (atomic_load(&unsampled_starts_in_flight) > 0) {
        atomic_store(&S.scan_again, 1);
        return;
    }
    uint64_t serial = sp_interp_thread_serial(S.interp);
    int result = sp_registry_scan(&S.registry, S.interp, S.collector_tstate, on_register);
    if (result < 0) {
        PyErr_WriteUnraisable(NULL);
    }
    S.seen_thread_serial = serial;
    int unnamed = name_unnamed_threads();
    atomic_store(&S.scan_again, result != 0 || unnamed);
}

static void reclaim_exited_threads(void)
{
    uint32_t high_water = atomic_load(&S.registry.high_water);
    for (uint32_t index = 0; index < high_water; index++) {
        if (atomic_load(&S.registry.slots[index].state) == SP_SLOT_RECLAIMABLE) {
            sp_registry_reclaim(&S.registry, index);
        }
    }
}

static void reclaim_exited_now(sp_thread_registry *registry)
{
    (void)registry;
    pthread_mutex_lock(&S.registry_mutex);
    tick_pass((sp_monotonic_ns() - S.base_ns) / S.config.interval_ns, 1);
    pthread_mutex_unlock(&S.registry_mutex);
    reclaim_exited_threads(); /* under the GIL, as in the collector */
}

static void *collector_main(void *unused)
{
    (void)unused;
    sp_block_async_signals();
    sp_thread_set_name("sigprof-collect");
    PyGILState_STATE gil = PyGILState_Ensure();
    atomic_fetch_add(&S.collector_gil_rounds, 1);
    S.collector_tstate = PyThreadState_Get();
    scan_threads();
    pthread_mutex_lock(&S.work_mutex);
    S.collector_ready = 1;
    pthread_cond_broadcast(&S.work_cond);
    pthread_mutex_unlock(&S.work_mutex);
    PyThreadState *saved = PyEval_SaveThread();
    for (;;) {
        pthread_mutex_lock(&S.work_mutex);
        while (!atomic_load(&S.stopping) && !atomic_load(&S.want_scan) && !atomic_load(&S.want_reclaim)) {
            pthread_cond_wait(&S.work_cond, &S.work_mutex);
        }
        pthread_mutex_unlock(&S.work_mutex);
        if (atomic_load(&S.stopping)) {
            break;
        }
        PyEval_RestoreThread(saved);
        atomic_fetch_add(&S.collector_gil_rounds, 1);
        if (!atomic_load(&S.stopping)) {
            if (atomic_exchange(&S.want_scan, 0)) {
                scan_threads();
            }
            if (atomic_exchange(&S.want_reclaim, 0)) {
                reclaim_exited_threads();
            }
        }
        saved = PyEval_SaveThread();
    }
    PyEval_RestoreThread(saved);
    S.collector_tstate = NULL;
    PyGILState_Release(gil);
    return NULL;
}

/* ---------------- threads registering or excluding themselves ---------------- */

int sp_sampler_register_current_thread(void)
{
    if (!atomic_load(&S.running) || atomic_load(&S.stopping)) {
        return 0;
    }
    return sp_registry_add(&S.registry, PyThreadState_Get(), on_register);
}

int sp_sampler_mark_current_thread(void)
{
    uint32_t index, generation;
    if (!atomic_load(&S.running) || atomic_load(&S.stopping) ||
        !sp_registry_slot_of(PyThreadState_Get(), &index, &generation)) {
        return 0;
    }
    uint64_t position;
    sp_record *record = sp_ring_reserve(&S.ring, &position);
    if (record == NULL) {
        return -1;
    }
    record->timestamp_ns = sp_monotonic_ns();
    atomic_store(&S.registry.slots[index].last_mark_ns, record->timestamp_ns);
    record->tick = 0;
    record->thread_ident = S.registry.slots[index].ident;
    record->slot = index;
    record->generation = generation;
    record->kind = SP_RECORD_MARK;
    record->flags = 0;
    record->depth = 0;
    record->merged = 0;
    sp_ring_commit(&S.ring, position);
    return 0;
}

int sp_sampler_exclude_current_thread(void)
{
    return sp_registry_exclude(PyThreadState_Get()) < 0 ? -1 : 0;
}

/* ---------------- code objects going away ---------------- */

static void on_code_destroyed(void *code)
{
    if (!S.has_run) {
        return;
    }
    while (atomic_load(&S.capturing_blocked)) {
        sched_yield(); /* the ticker never waits for the GIL: a few microseconds */
    }
    if (sp_ring_has_pending(&S.ring)) {
        sp_sampler_collect();
    }
    sp_resolver_forget_code(&S.resolver, code);
}

/* ---------------- fork ---------------- */

static void before_fork(void)
{
    /* A large process's clone() can take longer than the interval; a signal
     * would restart it forever. */
    sp_block_sigprof(1);
    pthread_mutex_lock(&S.registry_mutex);
}

static void after_fork_parent(void)
{
    pthread_mutex_unlock(&S.registry_mutex);
    sp_block_sigprof(0);
}

static void after_fork_child(void)
{
    /* Only this thread survives, and timers are not inherited: the child is
     * not sampled until started again. */
    pthread_mutex_init(&S.registry_mutex, NULL);
    pthread_mutex_init(&S.work_mutex, NULL);
    pthread_cond_init(&S.work_cond, NULL);
    /* Shared with the parent's: this process's own are made at its start. */
    if (S.wakeup_fd >= 0) {
        close(S.wakeup_fd);
    }
    if (S.deadline_fd >= 0) {
        close(S.deadline_fd);
    }
    S.wakeup_fd = S.deadline_fd = -1;
    sp_monotonic_cond_init(&S.pass_cond);
    atomic_store(&S.accepting, 0);
    atomic_store(&S.handlers_active, 0);
    atomic_store(&S.running, 0);
    for (uint32_t i = 0; i < S.registry.capacity; i++) {
        S.registry.slots[i].timer.valid = 0;
    }
    close_state_files(); /* the parent's threads' files */
    sp_block_sigprof(0);
}

/* ---------------- lifecycle ---------------- */

int sp_sampler_supported(char *why, size_t why_len)
{
    return sp_platform_supported(why, why_len) && sp_layout_check(why, why_len) == 0;
}

static uint64_t ring_capacity_for(const sp_config *config)
{
    if (config->ring_capacity) {
        return config->ring_capacity;
    }
    size_t record_size = 128 + (size_t)config->max_depth * sizeof(sp_frame_ref);
    uint64_t capacity = 256;
    while (capacity * 2 * record_size <= (8u << 20) && capacity < 65536) {
        capacity *= 2;
    }
    return capacity;
}

static void release_run_resources(void)
{
    if (!S.has_run) {
        return;
    }
    sp_ring_destroy(&S.ring);
    sp_registry_destroy(&S.registry);
    sp_resolver_destroy(&S.resolver);
    free(S.state_fds);
    S.state_fds = NULL;
    free(S.blocked_scratch);
    S.blocked_scratch = NULL;
    Py_CLEAR(S.config.threading_active);
    Py_CLEAR(S.config.thread_names);
    S.has_run = 0;
}

int sp_sampler_start(const sp_config *config, char *error, size_t error_len)
{
    static int fork_handlers_registered;
    if (!sp_sampler_supported(error, error_len)) {
        return -1;
    }
    if (atomic_load(&S.running)) {
        snprintf(error, error_len, "the sampler is already running: one sampler per process");
        return -1;
    }
    if (config->interval_ns < SP_MIN_INTERVAL_NS) {
        snprintf(error, error_len, "interval below 2 ms");
        return -1;
    }
    if (sp_itimer_prof_armed() && !config->chain) {
        snprintf(error, error_len,
                 "an ITIMER_PROF interval timer is armed: another profiler (vmprof, "
                 "pyinstrument's signal mode, yappi...) is sampling this process. Stop it first");
        return -1;
    }
    if (sp_signal_install(capture_current_thread, sp_cookie_magic(), config->chain, error,
                          error_len) != 0) {
        return -1;
    }
    if (sp_fault_guard_install(error, error_len) != 0) {
        return -1;
    }
    if (sp_code_lifetime_install(on_code_destroyed) != 0) {
        snprintf(error, error_len, "could not watch code objects");
        PyErr_Clear();
        return -1;
    }
    if (!fork_handlers_registered) {
        if (sp_monotonic_cond_init(&S.pass_cond) != 0) {
            snprintf(error, error_len, "could not create the ticker's condition variable");
            return -1;
        }
        pthread_atfork(before_fork, after_fork_parent, after_fork_child);
        fork_handlers_registered = 1;
    }
    if (S.wakeup_fd < 0) {
        S.wakeup_fd = sp_wakeup_fd_create();
    }
    if (S.deadline_fd < 0) {
        S.deadline_fd = sp_deadline_fd_create();
    }
    if (S.wakeup_fd < 0 || S.deadline_fd < 0) {
        snprintf(error, error_len, "could not create the ticker's wake-up: %s", strerror(errno));
        return -1;
    }
    release_run_resources();
    S.config = *config;
    /* Running threads' signals come every interval of CPU time, but no
     * closer than the kernel's tick (4 or 10 ms): twice the larger. */
    S.deadline_after_ns = 2 * (config->interval_ns > 10000000 ? config->interval_ns : 10000000);
    if (sp_ring_init(&S.ring, ring_capacity_for(config), config->max_depth) != 0 ||
        sp_registry_init(&S.registry, config->max_threads, ++S.session) != 0 ||
        sp_resolver_init(&S.resolver, config->max_threads, config->max_depth) != 0 ||
        (S.state_fds = malloc(config->max_threads * sizeof(int))) == NULL ||
        (S.blocked_scratch = malloc(S.ring.slot_size)) == NULL) {
        sp_ring_destroy(&S.ring);
        sp_registry_destroy(&S.registry);
        snprintf(error, error_len, "out of memory for the sample buffer");
        return -1;
    }
    S.registry.on_exit = on_thread_exit;
    S.registry.on_full = reclaim_exited_now;
    for (uint32_t i = 0; i < config->max_threads; i++) {
        S.state_fds[i] = -1;
    }
    S.state_fds_open = 0;
    S.state_fds_max = state_files_allowed();
    S.idle_check_valid = 0;
    Py_INCREF(S.config.threading_active);
    Py_INCREF(S.config.thread_names);
    S.has_run = 1;
    S.interp = PyThreadState_Get()->interp;
    sp_interp_gil_range(S.interp, &S.gil_low, &S.gil_high);
    S.gil = sp_interp_gil(S.interp);
    S.base_ns = sp_monotonic_ns();
    S.random_state = (uint64_t)S.base_ns | 1;
    atomic_store(&S.last_tick, 0);
    atomic_store(&S.slow, 0);
    atomic_store(&S.stale_signals, 0);
    atomic_store(&S.collector_gil_rounds, 0);
    atomic_store(&S.stopping, 0);
    atomic_store(&S.want_scan, 0);
    atomic_store(&S.capturing_blocked, 0);
    atomic_store(&S.want_reclaim, 0);
    atomic_store(&S.exits_waiting, 0);
    S.collector_ready = 0;
    atomic_store(&S.accepting, 1);
    atomic_store(&S.running, 1);

    int failed = pthread_create(&S.collector, NULL, collector_main, NULL);
    if (!failed) {
        /* The collector needs the GIL to register the threads that exist. */
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&S.work_mutex);
        while (!S.collector_ready) {
            pthread_cond_wait(&S.work_cond, &S.work_mutex);
        }
        pthread_mutex_unlock(&S.work_mutex);
        Py_END_ALLOW_THREADS
        failed = pthread_create(&S.ticker, NULL, ticker_main, NULL);
        if (failed) {
            stop_sampler_threads();
            Py_BEGIN_ALLOW_THREADS
            pthread_join(S.collector, NULL);
            Py_END_ALLOW_THREADS
        }
    }
    if (failed) {
        atomic_store(&S.accepting, 0);
        atomic_store(&S.running, 0);
        snprintf(error, error_len, "could not start the sampler's threads: %s", strerror(failed));
        return -1;
    }
    return 0;
}

int sp_sampler_stop(void)
{
    if (!atomic_load(&S.running)) {
        return 0;
    }
    stop_sampler_threads();
    Py_BEGIN_ALLOW_THREADS
    pthread_join(S.ticker, NULL);
    pthread_join(S.collector, NULL);
    Py_END_ALLOW_THREADS
    for (uint32_t i = 0; i < S.registry.capacity; i++) {
        sp_thread_timer_stop(&S.registry.slots[i].timer);
    }
    /* Signals already queued still arrive: they find `accepting` off. Wait
     * for any handler still writing before the ring can be reused. */
    atomic_store(&S.accepting, 0);
    while (atomic_load(&S.handlers_active) != 0) {
        sched_yield();
    }
    atomic_store(&S.running, 0);
    return 0;
}

int sp_sampler_running(void)
{
    return atomic_load(&S.running);
}

int sp_sampler_collect(void)
{
    if (!S.has_run) {
        return 0;
    }
    return sp_resolver_collect(&S.resolver, &S.ring, S.base_ns, S.config.interval_ns,
                               atomic_load_explicit(&S.last_tick, memory_order_acquire),
                               S.config.clock == SP_CLOCK_WALL);
}

void sp_sampler_catch_up(void)
{
    if (!atomic_load(&S.running) || atomic_load(&S.stopping) || !atomic_load(&S.slow)) {
        return; /* at every tick, the last pass is at most one tick behind */
    }
    int64_t now = sp_monotonic_ns();
    int64_t target = (now - S.base_ns) / S.config.interval_ns;
    int64_t deadline = now + 2 * S.config.interval_ns + 20000000LL;
    pthread_mutex_lock(&S.work_mutex);
    while (atomic_load(&S.last_tick) < target && !atomic_load(&S.stopping) && sp_monotonic_ns() < deadline) {
        end_slow_passes();
        sp_cond_wait_until_ns(&S.pass_cond, &S.work_mutex, deadline);
    }
    pthread_mutex_unlock(&S.work_mutex);
}

sp_resolver *sp_sampler_resolver(void)
{
    return S.has_run ? &S.resolver : NULL;
}

void sp_sampler_counters(sp_counters *counters)
{
    memset(counters, 0, sizeof(*counters));
    if (!S.has_run) {
        return;
    }
    counters->dropped = atomic_load(&S.ring.dropped);
    counters->untracked_threads = atomic_load(&S.registry.overflow);
    counters->stale_signals = atomic_load(&S.stale_signals);
    counters->ticks = (uint64_t)atomic_load(&S.last_tick);
    counters->collector_gil_rounds = atomic_load(&S.collector_gil_rounds);
    counters->ring_written = atomic_load(&S.ring.head);
    counters->ring_capacity = S.ring.capacity;
    for (uint32_t i = 0; i < S.registry.capacity; i++) {
        int state = atomic_load(&S.registry.slots[i].state);
        counters->registered_threads += state == SP_SLOT_ALIVE || state == SP_SLOT_EXITED;
    }
    counters->base_ns = S.base_ns;
    counters->interval_ns = S.config.interval_ns;
}
