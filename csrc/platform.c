#define _GNU_SOURCE
#include "platform.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

static sp_signal_callback signal_callback;
static uint64_t signal_cookie_magic;
static struct sigaction previous_action;
static int chain_foreign;

#define SP_COOKIE_MAGIC_SHIFT 40

static void forward_foreign(int signo, siginfo_t *info, void *context)
{
    if (!chain_foreign) {
        return;
    }
    if (previous_action.sa_flags & SA_SIGINFO) {
        if (previous_action.sa_sigaction != NULL) {
            previous_action.sa_sigaction(signo, info, context);
        }
    } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
        previous_action.sa_handler(signo);
    }
}

static void on_sigprof(int signo, siginfo_t *info, void *context)
{
    int saved_errno = errno;
    if (info != NULL && info->si_code == SI_TIMER) {
        uint64_t cookie = (uint64_t)(uintptr_t)info->si_value.sival_ptr;
        if ((cookie >> SP_COOKIE_MAGIC_SHIFT) == signal_cookie_magic) {
            int merged = info->si_overrun;
            signal_callback(cookie, merged > 0 ? (uint32_t)merged : 0);
            errno = saved_errno;
            return;
        }
    }
    forward_foreign(signo, info, context);
    errno = saved_errno;
}

int sp_platform_supported(char *why, size_t why_len)
{
    (void)why;
    (void)why_len;
    return 1;
}

static void describe_handler(void *address, char *out, size_t out_len)
{
    Dl_info info;
    if (dladdr(address, &info) && info.dli_fname != NULL) {
        snprintf(out, out_len, "%s in %s", info.dli_sname ? info.dli_sname : "a function",
                 info.dli_fname);
    } else {
        snprintf(out, out_len, "a handler at %p", address);
    }
}

int sp_signal_install(sp_signal_callback callback, uint64_t cookie_magic, int chain, char *error,
                      size_t error_len)
{
    struct sigaction current;
    if (sigaction(SIGPROF, NULL, &current) != 0) {
        snprintf(error, error_len, "sigaction(SIGPROF) failed: %s", strerror(errno));
        return -1;
    }
    int ours = (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigprof;
    if (ours) {
        chain_foreign = chain;
        return 0;
    }
    int foreign = (current.sa_flags & SA_SIGINFO) ? current.sa_sigaction != NULL
                                                  : (current.sa_handler != SIG_DFL &&
                                                     current.sa_handler != SIG_IGN);
    if (foreign && !chain) {
        char owner[512];
        describe_handler((current.sa_flags & SA_SIGINFO) ? (void *)current.sa_sigaction
                                                         : (void *)current.sa_handler,
                         owner, sizeof(owner));
        snprintf(error, error_len,
                 "SIGPROF already has a handler (%s); another profiler is probably running. "
                 "Stop it first, or pass chain=True to forward its signals to it",
                 owner);
        return -1;
    }
    signal_callback = callback;
    signal_cookie_magic = cookie_magic;
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_sigprof;
    action.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    /* Never remember our own handler as the previous one. */
    if (sigaction(SIGPROF, &action, &previous_action) != 0) {
        snprintf(error, error_len, "sigaction(SIGPROF) failed: %s", strerror(errno));
        return -1;
    }
    chain_foreign = chain;
    return 0;
}

static struct sigaction installed_action;

void sp_signal_ignore_for_exec(void)
{
    struct sigaction ignore;
    memset(&ignore, 0, sizeof(ignore));
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPROF, &ignore, &installed_action);
}

void sp_signal_restore_after_exec_failure(void)
{
    sigaction(SIGPROF, &installed_action, NULL);
}

int sp_signal_handler_ours(void)
{
    struct sigaction current;
    if (sigaction(SIGPROF, NULL, &current) != 0) {
        return 1; /* cannot tell: assume nothing changed */
    }
    return (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigprof;
}


/* ---- fault guard ---- */

#define SP_MAX_GUARDED_THREADS 64 /* threads inside a guarded walk at once */

typedef struct {
    _Atomic pid_t tid;
    sigjmp_buf *jump;
} sp_guard_entry;

static sp_guard_entry guards[SP_MAX_GUARDED_THREADS];
static struct sigaction previous_segv, previous_bus;
static int fault_guard_installed;

static void on_fault(int signo, siginfo_t *info, void *context)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    for (int i = 0; i < SP_MAX_GUARDED_THREADS; i++) {
        if (atomic_load_explicit(&guards[i].tid, memory_order_acquire) == tid) {
            siglongjmp(*guards[i].jump, 1);
        }
    }
    struct sigaction *previous = signo == SIGBUS ? &previous_bus : &previous_segv;
    if ((previous->sa_flags & SA_SIGINFO) && previous->sa_sigaction != NULL) {
        previous->sa_sigaction(signo, info, context);
    } else if (!(previous->sa_flags & SA_SIGINFO) && previous->sa_handler != SIG_DFL &&
               previous->sa_handler != SIG_IGN) {
        previous->sa_handler(signo);
    } else {
        /* Default action: put it back and let the fault happen again. */
        sigaction(signo, previous, NULL);
    }
}

int sp_fault_guard_install(char *error, size_t error_len)
{
    if (fault_guard_installed) {
        return 0;
    }
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_fault;
    /* SA_NODEFER: a long jump out leaves SIGSEGV unblocked. */
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous_segv) != 0 ||
        sigaction(SIGBUS, &action, &previous_bus) != 0) {
        snprintf(error, error_len, "sigaction(SIGSEGV) failed: %s", strerror(errno));
        return -1;
    }
    fault_guard_installed = 1;
    return 0;
}

/* Kept apart from the slot search, and not inlined into it, so that no local
 * that changes after sigsetjmp lives across the long jump (gcc's -Wclobbered
 * found the search's loop counter there in the sanitizer build). */
static __attribute__((noinline)) int run_guarded(sp_guard_entry *guard, pid_t tid,
                                                 void (*walk)(void *), void *argument)
{
    sigjmp_buf jump;
    guard->jump = &jump;
    if (sigsetjmp(jump, 0) != 0) {
        return -1; /* on_fault jumped back */
    }
    atomic_store_explicit(&guard->tid, tid, memory_order_release);
    walk(argument);
    return 0;
}

int sp_guarded_run(pid_t tid, void (*walk)(void *), void *argument)
{
    int entry = -1;
    for (int i = 0; i < SP_MAX_GUARDED_THREADS && entry < 0; i++) {
        pid_t expected = 0;
        if (atomic_compare_exchange_strong(&guards[i].tid, &expected, -1)) {
            entry = i;
        }
    }
    if (entry < 0) {
        return -1;
    }
    int result = run_guarded(&guards[entry], tid, walk, argument);
    atomic_store_explicit(&guards[entry].tid, 0, memory_order_release);
    return result;
}

int sp_itimer_prof_armed(void)
{
    struct itimerval value;
    if (getitimer(ITIMER_PROF, &value) != 0) {
        return 0;
    }
    return value.it_value.tv_sec != 0 || value.it_value.tv_usec != 0;
}

int64_t sp_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

int sp_monotonic_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attributes;
    if (pthread_condattr_init(&attributes) != 0) {
        return -1;
    }
    int failed = pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC) != 0 ||
                 pthread_cond_init(cond, &attributes) != 0;
    pthread_condattr_destroy(&attributes);
    return failed ? -1 : 0;
}

void sp_cond_wait_until_ns(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns)
{
    struct timespec until = {deadline_ns / 1000000000, deadline_ns % 1000000000};
    pthread_cond_timedwait(cond, mutex, &until);
}

int sp_wakeup_fd_create(void)
{
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void sp_wakeup_post(int fd)
{
    uint64_t one = 1;
    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the ticker wakes anyway */
    }
}

int sp_deadline_fd_create(void)
{
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
}

void sp_deadline_arm(int fd, int64_t after_ns)
{
    struct itimerspec when = {{0, 0}, {after_ns / 1000000000, after_ns % 1000000000}};
    if (fd >= 0) {
        timerfd_settime(fd, 0, &when, NULL);
    }
}

static int consume(int fd)
{
    uint64_t count;
    return fd >= 0 && read(fd, &count, sizeof(count)) == (ssize_t)sizeof(count);
}

int sp_wait_for_wakeup(int wakeup_fd, int deadline_fd, int64_t until_ns)
{
    int64_t left = until_ns - sp_monotonic_ns();
    if (left <= 0) {
        return 0;
    }
    struct timespec timeout = {left / 1000000000, left % 1000000000};
    struct pollfd fds[2] = {{wakeup_fd, POLLIN, 0}, {deadline_fd, POLLIN, 0}};
    if (ppoll(fds, 2, &timeout, NULL) <= 0) {
        return 0; /* the time came (or EINTR: the caller looks at the time again) */
    }
    return (consume(wakeup_fd) ? SP_WOKE_POSTED : 0) | (consume(deadline_fd) ? SP_WOKE_DEADLINE : 0);
}

pid_t sp_current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Linux encodes a thread's CPU clock id from its tid: glibc and musl agree. */
static clockid_t thread_cpu_clock(pid_t tid)
{
    return (clockid_t)((~(unsigned int)tid) << 3) | 6; /* CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED */
}

pid_t sp_tid_of_pthread(unsigned long pthread_ident)
{
    clockid_t clock;
    if (pthread_getcpuclockid((pthread_t)pthread_ident, &clock) != 0) {
        return 0;
    }
    return (pid_t)~((int)clock >> 3);
}

int64_t sp_thread_cpu_ns(pid_t tid)
{
    struct timespec value;
    if (clock_gettime(thread_cpu_clock(tid), &value) != 0) {
        return -1;
    }
    return (int64_t)value.tv_sec * 1000000000 + value.tv_nsec;
}

int sp_thread_state_open(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* "running", or "-1 sp pc" (not in a system call), or "NR arg1 ... sp pc";
 * anything else was not read from a state file. */
static int parse_run_state(const char *text, uintptr_t lock_low, uintptr_t lock_high,
                           sp_thread_run_state *state)
{
    if (strncmp(text, "running", 7) == 0 || strncmp(text, "-1 ", 3) == 0) {
        *state = SP_THREAD_RUNNING;
        return 0;
    }
    char *end;
    long number = strtol(text, &end, 10);
    if (end == text || *end != ' ') {
        return -1;
    }
    *state = SP_THREAD_BLOCKED;
    if (number == SYS_futex) {
        unsigned long address = strtoul(end, NULL, 16);
        if (address >= lock_low && address < lock_high) {
            *state = SP_THREAD_LOCK_WAIT;
        }
    }
    return 0;
}

sp_thread_run_state sp_thread_state(pid_t tid, int *state_fd, uintptr_t lock_low, uintptr_t lock_high)
{
    char buffer[256];
    sp_thread_run_state state;
    if (*state_fd >= 0) {
        ssize_t length = pread(*state_fd, buffer, sizeof(buffer) - 1, 0);
        if (length < 0 && errno == ESRCH) {
            return SP_THREAD_GONE; /* still ours: closed when the thread's slot is */
        }
        if (length > 0) {
            buffer[length] = '\0';
            if (parse_run_state(buffer, lock_low, lock_high, &state) == 0) {
                return state;
            }
        }
        *state_fd = -1; /* closed behind our back, maybe reused: let it be */
    }
    int fd = sp_thread_state_open(tid);
    if (fd < 0) {
        return SP_THREAD_GONE;
    }
    ssize_t length = read(fd, buffer, sizeof(buffer) - 1);
    close(fd);
    if (length <= 0) {
        return SP_THREAD_GONE;
    }
    buffer[length] = '\0';
    return parse_run_state(buffer, lock_low, lock_high, &state) == 0 ? state : SP_THREAD_GONE;
}

int sp_interrupt_thread_after(pid_t tid, int64_t delay_ns)
{
    static timer_t id;
    static int created;
    if (!created) {
        struct sigevent event;
        memset(&event, 0, sizeof(event));
        event.sigev_notify = SIGEV_THREAD_ID;
        event.sigev_signo = SIGINT;
#ifdef sigev_notify_thread_id
        event.sigev_notify_thread_id = tid;
#else
        event._sigev_un._tid = tid;
#endif
        if (timer_create(CLOCK_MONOTONIC, &event, &id) != 0) {
            return -1;
        }
        created = 1;
    }
    struct itimerspec spec;
    memset(&spec, 0, sizeof(spec));
    if (delay_ns > 0) {
        spec.it_value.tv_sec = delay_ns / 1000000000;
        spec.it_value.tv_nsec = delay_ns % 1000000000;
    }
    return timer_settime(id, 0, &spec, NULL);
}

int sp_thread_timer_start(sp_thread_timer *timer, pid_t tid, int64_t first_ns, int64_t interval_ns,
                          uint64_t cookie)
{
    struct sigevent event;
    memset(&event, 0, sizeof(event));
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = SIGPROF;
    event.sigev_value.sival_ptr = (void *)(uintptr_t)cookie;
#ifdef sigev_notify_thread_id
    event.sigev_notify_thread_id = tid;
#else
    event._sigev_un._tid = tid;
#endif
    timer_t id;
    if (timer_create(thread_cpu_clock(tid), &event, &id) != 0) {
        return -1;
    }
    struct itimerspec spec;
    spec.it_value.tv_sec = first_ns / 1000000000;
    spec.it_value.tv_nsec = first_ns % 1000000000;
    spec.it_interval.tv_sec = interval_ns / 1000000000;
    spec.it_interval.tv_nsec = interval_ns % 1000000000;
    if (timer_settime(id, 0, &spec, NULL) != 0) {
        timer_delete(id);
        return -1;
    }
    timer->timer_id = (long)(intptr_t)id;
    timer->valid = 1;
    return 0;
}

int64_t sp_thread_timer_lateness_ns(const sp_thread_timer *timer, int64_t interval_ns)
{
    struct itimerspec spec;
    if (!timer->valid || timer_gettime((timer_t)(intptr_t)timer->timer_id, &spec) != 0) {
        return -1;
    }
    int64_t remaining = (int64_t)spec.it_value.tv_sec * 1000000000 + spec.it_value.tv_nsec;
    return remaining > 0 && remaining <= interval_ns ? interval_ns - remaining : -1;
}

void sp_thread_timer_rephase(const sp_thread_timer *timer, int64_t at_cpu_ns, int64_t interval_ns)
{
    struct itimerspec spec;
    spec.it_value.tv_sec = at_cpu_ns / 1000000000;
    spec.it_value.tv_nsec = at_cpu_ns % 1000000000;
    spec.it_interval.tv_sec = interval_ns / 1000000000;
    spec.it_interval.tv_nsec = interval_ns % 1000000000;
    if (timer->valid) {
        timer_settime((timer_t)(intptr_t)timer->timer_id, TIMER_ABSTIME, &spec, NULL);
    }
}

void sp_thread_timer_stop(sp_thread_timer *timer)
{
    if (timer->valid) {
        timer_delete((timer_t)(intptr_t)timer->timer_id);
        timer->valid = 0;
    }
}

int sp_altstack_adopt(void *memory, size_t size)
{
    stack_t current;
    if (syscall(SYS_sigaltstack, NULL, &current) != 0) {
        return 0;
    }
    if (!(current.ss_flags & SS_DISABLE)) {
        return 0; /* the thread has its own */
    }
    stack_t ours = {.ss_sp = memory, .ss_flags = 0, .ss_size = size};
    return syscall(SYS_sigaltstack, &ours, NULL) == 0;
}

void sp_altstack_release(void *memory)
{
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && current.ss_sp == memory &&
        !(current.ss_flags & (SS_DISABLE | SS_ONSTACK))) {
        stack_t disable = {.ss_sp = NULL, .ss_flags = SS_DISABLE, .ss_size = 0};
        sigaltstack(&disable, NULL);
    }
}

size_t sp_altstack_size(void)
{
    return 64 * 1024;
}

void sp_block_sigprof(int block)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPROF);
    pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

void sp_block_async_signals(void)
{
    sigset_t set;
    sigfillset(&set);
    sigdelset(&set, SIGSEGV);
    sigdelset(&set, SIGBUS);
    sigdelset(&set, SIGFPE);
    sigdelset(&set, SIGILL);
    sigdelset(&set, SIGTRAP);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
}

void sp_thread_set_name(const char *name)
{
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); /* at most 15 characters kept */
}

#else /* not Linux: the core builds, and says why it cannot sample */

int sp_platform_supported(char *why, size_t why_len)
{
    snprintf(why, why_len,
             "sigprof's native sampler needs Linux (per-thread CPU-clock timers and "
             "directed signals); this platform has neither");
    return 0;
}
int sp_signal_install(sp_signal_callback callback, uint64_t cookie_magic, int chain, char *error,
                      size_t error_len)
{
    (void)callback;
    (void)cookie_magic;
    (void)chain;
    return sp_platform_supported(error, error_len) ? 0 : -1;
}
int sp_guarded_run(pid_t tid, void (*walk)(void *), void *argument)
{
    (void)tid;
    walk(argument);
    return 0;
}
int sp_fault_guard_install(char *error, size_t error_len)
{
    (void)error;
    (void)error_len;
    return 0;
}
void sp_signal_ignore_for_exec(void) {}
void sp_signal_restore_after_exec_failure(void) {}
int sp_signal_handler_ours(void) { return 1; }
int sp_itimer_prof_armed(void) { return 0; }
int64_t sp_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}
int sp_monotonic_cond_init(pthread_cond_t *cond) { return pthread_cond_init(cond, NULL); }
void sp_cond_wait_until_ns(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns)
{
    (void)cond;
    (void)mutex;
    (void)deadline_ns;
}
int sp_wakeup_fd_create(void) { return -1; }
void sp_wakeup_post(int fd) { (void)fd; }
int sp_deadline_fd_create(void) { return -1; }
void sp_deadline_arm(int fd, int64_t after_ns) { (void)fd; (void)after_ns; }
int sp_wait_for_wakeup(int wakeup_fd, int deadline_fd, int64_t until_ns)
{
    (void)wakeup_fd;
    (void)deadline_fd;
    (void)until_ns;
    return 0;
}
pid_t sp_current_tid(void) { return 0; }
pid_t sp_tid_of_pthread(unsigned long pthread_ident) { (void)pthread_ident; return 0; }
int64_t sp_thread_cpu_ns(pid_t tid) { (void)tid; return -1; }
int sp_thread_state_open(pid_t tid) { (void)tid; return -1; }
sp_thread_run_state sp_thread_state(pid_t tid, int *state_fd, uintptr_t lock_low, uintptr_t lock_high)
{
    (void)tid;
    (void)state_fd;
    (void)lock_low;
    (void)lock_high;
    return SP_THREAD_GONE;
}
int sp_interrupt_thread_after(pid_t tid, int64_t delay_ns) { (void)tid; (void)delay_ns; return -1; }
int sp_thread_timer_start(sp_thread_timer *timer, pid_t tid, int64_t first_ns, int64_t interval_ns,
                          uint64_t cookie)
{
    (void)timer; (void)tid; (void)first_ns; (void)interval_ns; (void)cookie;
    return -1;
}
void sp_thread_timer_stop(sp_thread_timer *timer) { timer->valid = 0; }
int64_t sp_thread_timer_lateness_ns(const sp_thread_timer *timer, int64_t interval_ns)
{
    (void)timer; (void)interval_ns;
    return -1;
}
void sp_thread_timer_rephase(const sp_thread_timer *timer, int64_t at_cpu_ns, int64_t interval_ns)
{
    (void)timer; (void)at_cpu_ns; (void)interval_ns;
}
int sp_altstack_adopt(void *memory, size_t size) { (void)memory; (void)size; return 0; }
void sp_altstack_release(void *memory) { (void)memory; }
size_t sp_altstack_size(void) { return 0; }
void sp_block_sigprof(int block) { (void)block; }
void sp_block_async_signals(void) {}
void sp_thread_set_name(const char *name) { (void)name; }

#endif
