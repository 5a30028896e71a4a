/* Everything the core needs from the operating system, behind one small
 * interface: the signal handler, per-thread CPU clocks and timers, directed
 * signals, thread run state, alternate signal stacks. Linux has all of it;
 * elsewhere sp_platform_supported() says why not and the rest are stubs. */
#ifndef SIGPROF_PLATFORM_H
#define SIGPROF_PLATFORM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Called in signal context with the cookie the signal carried and the
 * expirations of the CPU timer the kernel merged into it (si_overrun). */
typedef void (*sp_signal_callback)(uint64_t cookie, uint32_t merged);

typedef struct {
    int valid;
    long timer_id; /* the kernel's timer_t, as an integer */
} sp_thread_timer;

int sp_platform_supported(char *why, size_t why_len);

/* Installs the SIGPROF handler once per process. Refuses (-1, with a message
 * naming the owner when it can be told) when another handler is installed,
 * unless chain is set: then signals that are not ours go to it. */
int sp_signal_install(sp_signal_callback callback, uint64_t cookie_magic, int chain,
                      char *error, size_t error_len);
/* Around execve: a SIGPROF still pending when the new program starts would
 * kill it (its disposition is back to the default). Ignoring SIGPROF discards
 * pending ones, and the new program inherits "ignored". If exec fails, the
 * handler goes back. */
void sp_signal_ignore_for_exec(void);
void sp_signal_restore_after_exec_failure(void);
/* Whether SIGPROF still runs sigprof's handler (another profiler started
 * after sigprof may have taken it over). */
int sp_signal_handler_ours(void);
/* Whether an ITIMER_PROF interval timer is armed (someone else is sampling). */
int sp_itimer_prof_armed(void);

int64_t sp_monotonic_ns(void);
/* A condition variable whose timed waits are on CLOCK_MONOTONIC. */
int sp_monotonic_cond_init(pthread_cond_t *cond);
/* Waits on cond (mutex held) until signalled, or until CLOCK_MONOTONIC
 * reaches deadline_ns; callers check their own condition again. */
void sp_cond_wait_until_ns(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns);
/* The ticker's wake-ups. A wakeup fd (an eventfd) any thread, or a signal
 * handler, posts to; a deadline fd (a CLOCK_MONOTONIC timerfd) that a signal
 * handler can push back: it expires only once nothing pushed it for
 * after_ns. Both -1 when they cannot be made. */
int sp_wakeup_fd_create(void);
void sp_wakeup_post(int fd); /* async-signal-safe */
int sp_deadline_fd_create(void);
void sp_deadline_arm(int fd, int64_t after_ns); /* async-signal-safe; 0 disarms */
#define SP_WOKE_POSTED 1
#define SP_WOKE_DEADLINE 2
/* Sleeps until CLOCK_MONOTONIC reaches until_ns, a post, or the deadline's
 * expiry; returns which of the last two woke it (SP_WOKE_* bits, consumed). */
int sp_wait_for_wakeup(int wakeup_fd, int deadline_fd, int64_t until_ns);
pid_t sp_current_tid(void);
/* The kernel thread id of a live pthread (the value threading.get_native_id gives). */
pid_t sp_tid_of_pthread(unsigned long pthread_ident);
/* CPU time a thread has used, or -1 when the thread is gone. */
int64_t sp_thread_cpu_ns(pid_t tid);
typedef enum {
    SP_THREAD_GONE = -1,
    SP_THREAD_BLOCKED = 0,    /* in a system call a signal could interrupt */
    SP_THREAD_RUNNING = 1,    /* on a CPU, runnable, or stopped outside a system call */
    SP_THREAD_LOCK_WAIT = 2,  /* in futex() on an address within [lock_low, lock_high) */
} sp_thread_run_state;

/* What the thread is doing now, from /proc/self/task/TID/syscall. A thread
 * waiting for the GIL (a futex wait on the GIL's condition variable or mutex,
 * which glibc retries after a signal) can be signalled safely; one blocked
 * in any other system call must not be.
 * Opening that file costs several times more than reading it, so a caller
 * that asks often keeps it open: state_fd is a descriptor from
 * sp_thread_state_open(tid), or -1 to open and close the file for this call.
 * When state_fd no longer reads as the thread's state file, *state_fd is set
 * to -1 without closing it (it may be someone else's descriptor by now). */
int sp_thread_state_open(pid_t tid);
sp_thread_run_state sp_thread_state(pid_t tid, int *state_fd, uintptr_t lock_low, uintptr_t lock_high);

/* A SIGINT to thread tid in delay_ns, from a kernel timer (one per process,
 * bound to the first tid given; a later call re-arms it, delay_ns 0 disarms
 * it). 0, or -1. */
int sp_interrupt_thread_after(pid_t tid, int64_t delay_ns);
/* A timer on the thread's CPU clock that sends it SIGPROF carrying cookie
 * every interval_ns of CPU time, first after first_ns. */
int sp_thread_timer_start(sp_thread_timer *timer, pid_t tid, int64_t first_ns, int64_t interval_ns,
                          uint64_t cookie);
void sp_thread_timer_stop(sp_thread_timer *timer);
/* In the timer's signal handler (async-signal-safe): the CPU time since its
 * last expiration was due, which is how late the kernel delivered it. Linux
 * checks CPU timers at the scheduler tick, so on average half a tick. -1 if
 * unknown. */
int64_t sp_thread_timer_lateness_ns(const sp_thread_timer *timer, int64_t interval_ns);
/* In the timer's signal handler (async-signal-safe): the next expirations
 * are due at at_cpu_ns of the thread's CPU time and every interval_ns after
 * (expirations already past are merged into one signal at once). */
void sp_thread_timer_rephase(const sp_thread_timer *timer, int64_t at_cpu_ns, int64_t interval_ns);

/* Gives the calling thread an alternate signal stack at memory, unless it has
 * one already; async-signal-safe. Returns 1 if memory was installed. */
int sp_altstack_adopt(void *memory, size_t size);
/* Removes memory as the calling thread's alternate stack if it is installed. */
void sp_altstack_release(void *memory);
size_t sp_altstack_size(void);

/* Runs walk(argument) on the calling thread with memory faults (SIGSEGV,
 * SIGBUS) turned into an early return of -1: frame memory can be freed under
 * a signal handler (CPython pops a frame's data-stack chunk an instant before
 * it unlinks the frame when it creates a generator). Faults anywhere else go
 * to the handler that was there before. tid is the caller's kernel thread
 * id. Async-signal-safe; 0 when it ran. */
int sp_guarded_run(pid_t tid, void (*walk)(void *), void *argument);
/* Installs the fault handler once (chaining to the existing ones). */
int sp_fault_guard_install(char *error, size_t error_len);

/* Blocks / unblocks SIGPROF for the calling thread (around fork). */
void sp_block_sigprof(int block);
/* For sigprof's own threads: blocks every signal but the synchronous faults,
 * so that signals meant for the process (SIGTERM, SIGINT, SIGHUP...) reach
 * the program's threads. A C handler that does real work (uWSGI's SIGTERM
 * handler calls exit()) must never run on the ticker or the collector. */
void sp_block_async_signals(void);
/* Names the calling thread (its comm, seen in /proc/PID/task/TID/comm, top -H,
 * gdb): the sampler's own threads are recognisable from outside. */
void sp_thread_set_name(const char *name);

#endif
