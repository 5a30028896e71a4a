#include "python_internal.h"

#include <sched.h>

#include "thread_registry.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SP_COOKIE_MAGIC 0x5197F1ULL /* 24 bits */
#define SP_SENTINEL_KEY "sigprof.thread"

static sp_thread_registry *active_registry;

uint64_t sp_cookie_magic(void) { return SP_COOKIE_MAGIC; }

uint64_t sp_cookie_make(uint32_t slot, uint32_t generation)
{
    return (SP_COOKIE_MAGIC << 40) | ((uint64_t)(generation & 0xFFFFFF) << 16) | (slot & 0xFFFF);
}

uint32_t sp_cookie_slot(uint64_t cookie) { return (uint32_t)(cookie & 0xFFFF); }

uint32_t sp_cookie_generation(uint64_t cookie) { return (uint32_t)((cookie >> 16) & 0xFFFFFF); }

/* The sentinel: lives in the thread state's dict, dies with the thread. */
typedef struct {
    PyObject_HEAD
    uint64_t session;
    uint32_t slot;
    uint32_t generation;
    pid_t tid;
    pid_t pid;    /* the process the thread ran in */
    int excluded; /* one of sigprof's own threads: never registered */
    void *altstack;
} sp_sentinel;

/* Marks the sentinel's slot EXITED and waits until the ticker no longer
 * reads its thread state. 1 if it held a live slot of the active registry. */
static int release_slot(sp_sentinel *sentinel)
{
    sp_thread_registry *registry = active_registry;
    if (registry == NULL || sentinel->session != registry->session ||
        sentinel->slot >= registry->capacity) {
        return 0;
    }
    sp_thread_slot *slot = &registry->slots[sentinel->slot];
    if (atomic_load(&slot->generation) != sentinel->generation) {
        return 0;
    }
    int expected = SP_SLOT_ALIVE;
    int released = atomic_compare_exchange_strong(&slot->state, &expected, SP_SLOT_EXITED);
    while (atomic_load(&slot->being_read)) {
        sched_yield(); /* the ticker's read of this thread state: microseconds */
    }
    if (released && registry->on_exit != NULL) {
        registry->on_exit(registry);
    }
    return released;
}

static void sentinel_dealloc(PyObject *self)
{
    sp_sentinel *sentinel = (sp_sentinel *)self;
    release_slot(sentinel);
    if (sentinel->altstack != NULL) {
        /* Only the owning thread can uninstall its alternate stack; at
         * finalization another thread clears the dicts of threads still
         * running, and leaves the memory to the process. In a forked child
         * those threads do not exist: their stacks are free to go. */
        if (sentinel->tid == sp_current_tid()) {
            sp_altstack_release(sentinel->altstack);
            free(sentinel->altstack);
        } else if (sentinel->pid != getpid()) {
            free(sentinel->altstack);
        }
    }
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject sp_sentinel_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sigprof._native.ThreadRegistration",
    .tp_basicsize = sizeof(sp_sentinel),
    .tp_dealloc = sentinel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Marks a thread as registered with sigprof's sampler; unregisters it on exit.",
};

int sp_registry_ready_types(void) { return PyType_Ready(&sp_sentinel_type); }

int sp_registry_init(sp_thread_registry *registry, uint32_t capacity, uint64_t session)
{
    memset(registry, 0, sizeof(*registry));
    registry->slots = calloc(capacity, sizeof(sp_thread_slot));
    if (registry->slots == NULL) {
        return -1;
    }
    registry->capacity = capacity;
    registry->session = session;
    active_registry = registry;
    return 0;
}

void sp_registry_destroy(sp_thread_registry *registry)
{
    if (active_registry == registry) {
        active_registry = NULL;
    }
    if (registry->slots != NULL) {
        for (uint32_t i = 0; i < registry->capacity; i++) {
            sp_thread_timer_stop(&registry->slots[i].timer);
        }
        free(registry->slots);
    }
    memset(registry, 0, sizeof(*registry));
}

/* The kernel thread id, from the pthread (alive while its thread state is
 * listed and we hold the GIL). Not tstate->native_thread_id: 3.9/3.10 lack
 * it, and a forked child's thread state keeps the parent's value. */
static pid_t native_tid(PyThreadState *tstate)
{
    return sp_tid_of_pthread(tstate->thread_id);
}

static int find_free_slot(sp_thread_registry *registry, uint32_t *index)
{
    for (uint32_t i = 0; i < registry->capacity; i++) {
        if (atomic_load_explicit(&registry->slots[i].state, memory_order_acquire) == SP_SLOT_FREE) {
            *index = i;
            return 1;
        }
    }
    return 0;
}

static sp_sentinel *sentinel_for(PyThreadState *tstate, int *error)
{
    *error = 0;
    if (tstate->dict == NULL) {
        tstate->dict = PyDict_New();
        if (tstate->dict == NULL) {
            *error = 1;
            return NULL;
        }
    }
    PyObject *existing = PyDict_GetItemString(tstate->dict, SP_SENTINEL_KEY);
    if (existing != NULL && Py_TYPE(existing) == &sp_sentinel_type) {
        return (sp_sentinel *)existing;
    }
    sp_sentinel *sentinel = PyObject_New(sp_sentinel, &sp_sentinel_type);
    if (sentinel == NULL) {
        *error = 1;
        return NULL;
    }
    sentinel->session = 0;
    sentinel->slot = UINT32_MAX;
    sentinel->generation = 0;
    sentinel->excluded = 0;
    sentinel->pid = getpid();
    sentinel->tid = native_tid(tstate);
    sentinel->altstack = sp_altstack_size() ? malloc(sp_altstack_size()) : NULL;
    int failed = PyDict_SetItemString(tstate->dict, SP_SENTINEL_KEY, (PyObject *)sentinel);
    Py_DECREF(sentinel); /* the dict keeps it */
    if (failed) {
        *error = 1;
        return NULL;
    }
    return sentinel;
}

/* Up to 3.11, _thread.start_new_thread creates the new thread's state in the
 * parent, carrying the PARENT's thread ids until the child overwrites them.
 * Such a state has an older twin (the parent's own) further down the list,
 * which is ordered newest first. */
static int carries_parent_ids(PyThreadState *tstate)
{
#if PY_VERSION_HEX < 0x030C0000
    for (PyThreadState *older = PyThreadState_Next(tstate); older != NULL;
         older = PyThreadState_Next(older)) {
        if (older->thread_id == tstate->thread_id) {
            return 1;
        }
    }
#else
    (void)tstate; /* 3.12+ binds a thread state in its own thread */
#endif
    return 0;
}

int sp_registry_add(sp_thread_registry *registry, struct _ts *tstate, sp_on_register on_register)
{
    int error;
    sp_sentinel *sentinel = sentinel_for(tstate, &error);
    if (error) {
        return -1;
    }
    if (sentinel->excluded || sentinel->session == registry->session) {
        return 0; /* sigprof's own, or registered in this run already */
    }
    uint32_t index;
    int found = find_free_slot(registry, &index);
    if (!found && registry->on_full != NULL) {
        registry->on_full(registry);
        found = find_free_slot(registry, &index);
    }
    if (!found) {
        atomic_fetch_add(&registry->overflow, 1);
        return 0;
    }
    sp_thread_slot *slot = &registry->slots[index];
    uint32_t generation = (atomic_load(&slot->generation) + 1) & 0xFFFFFF;
    slot->tstate = tstate;
    slot->ident = tstate->thread_id;
    sentinel->tid = native_tid(tstate);
    slot->tid = sentinel->tid;
    slot->altstack = sentinel->altstack;
    slot->altstack_checked = 0;
    slot->timer.valid = 0;
    slot->last_cpu_ns = -1;
    atomic_store(&slot->idle_state, SP_IDLE_RUNNING);
    atomic_store(&slot->last_mark_ns, INT64_MIN);
    atomic_store(&slot->generation, generation);
    sentinel->session = registry->session;
    sentinel->slot = index;
    sentinel->generation = generation;
    atomic_store_explicit(&slot->state, SP_SLOT_ALIVE, memory_order_release);
    if (index >= atomic_load(&registry->high_water)) {
        atomic_store(&registry->high_water, index + 1);
    }
    on_register(slot, index);
    return 1;
}

int sp_registry_scan(sp_thread_registry *registry, struct _is *interp, struct _ts *skip,
                     sp_on_register on_register)
{
    int unbound = 0;
    for (PyThreadState *tstate = PyInterpreterState_ThreadHead(interp); tstate != NULL;
         tstate = PyThreadState_Next(tstate)) {
        if (tstate == skip) {
            continue;
        }
        if (tstate->thread_id == 0 || carries_parent_ids(tstate) || native_tid(tstate) == 0) {
            unbound = 1;
            continue;
        }
        if (sp_registry_add(registry, tstate, on_register) < 0) {
            return -1;
        }
    }
    return unbound;
}

int sp_registry_exclude(struct _ts *tstate)
{
    int error;
    sp_sentinel *sentinel = sentinel_for(tstate, &error);
    if (error) {
        return -1;
    }
    sentinel->excluded = 1;
    int released = release_slot(sentinel);
    if (sentinel->altstack != NULL && sentinel->tid == sp_current_tid()) {
        /* Never signalled from now on: no alternate stack needed. Freed here,
         * by its own thread, since a thread still running at exit has its
         * dict cleared by another one, which must leave it in place. */
        sp_altstack_release(sentinel->altstack);
        free(sentinel->altstack);
        sentinel->altstack = NULL;
    }
    return released;
}

int sp_registry_slot_of(PyThreadState *tstate, uint32_t *slot, uint32_t *generation)
{
    sp_thread_registry *registry = active_registry;
    PyObject *found = tstate->dict != NULL ? PyDict_GetItemString(tstate->dict, SP_SENTINEL_KEY) : NULL;
    if (registry == NULL || found == NULL || Py_TYPE(found) != &sp_sentinel_type) {
        return 0;
    }
    sp_sentinel *sentinel = (sp_sentinel *)found;
    if (sentinel->session != registry->session || sentinel->slot >= registry->capacity ||
        atomic_load(&registry->slots[sentinel->slot].generation) != sentinel->generation ||
        atomic_load(&registry->slots[sentinel->slot].state) != SP_SLOT_ALIVE) {
        return 0;
    }
    *slot = sentinel->slot;
    *generation = sp_cookie_generation(sp_cookie_make(sentinel->slot, sentinel->generation));
    return 1;
}

void sp_registry_reclaim(sp_thread_registry *registry, uint32_t index)
{
    sp_thread_slot *slot = &registry->slots[index];
    sp_thread_timer_stop(&slot->timer);
    slot->tstate = NULL;
    slot->altstack = NULL;
    atomic_store_explicit(&slot->state, SP_SLOT_FREE, memory_order_release);
}
