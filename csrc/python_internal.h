/* The CPython internals sigprof reads: frames and thread states differ by
 * version, so every file that touches them includes this one header. */
#ifndef SIGPROF_PYTHON_INTERNAL_H
#define SIGPROF_PYTHON_INTERNAL_H

#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x03090000 || PY_VERSION_HEX >= 0x03100000
#error "sigprof's native core supports CPython 3.9 to 3.15"
#endif
/* Free-threaded builds have per-thread bytecode and frames freed concurrently
 * with the walk: not supported (packaging skips the core there, and
 * sigprof.native_unavailable_reason() says so). */
#ifdef Py_GIL_DISABLED
#error "sigprof's native core does not support free-threaded CPython builds"
#endif

#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_code.h"
#include "internal/pycore_frame.h"
#endif
#if PY_VERSION_HEX >= 0x030E0000
/* Frames hold tagged references (Py_TAG_REFCNT). The header's inline
 * functions leave parameters unused in this build configuration. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "internal/pycore_stackref.h"
#pragma GCC diagnostic pop
#endif
#include "internal/pycore_gil.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_pystate.h"
#include "internal/pycore_runtime.h"

/* Monotonically increasing count of thread states ever created: a cheap,
 * lock-free way to notice that a new thread exists. */
static inline uint64_t sp_interp_thread_serial(PyInterpreterState *interp)
{
#if PY_VERSION_HEX >= 0x030B0000
    return __atomic_load_n(&interp->threads.next_unique_id, __ATOMIC_RELAXED);
#else
    return __atomic_load_n(&interp->tstate_next_unique_id, __ATOMIC_RELAXED);
#endif
}

static inline struct _gil_runtime_state *sp_interp_gil(PyInterpreterState *interp)
{
#if PY_VERSION_HEX >= 0x030C0000
    return interp->ceval.gil;
#else
    (void)interp;
    return &_PyRuntime.ceval.gil;
#endif
}

/* The GIL's state: threads waiting for the GIL wait on its condition
 * variable (or mutex) inside it. */
static inline void sp_interp_gil_range(PyInterpreterState *interp, uintptr_t *low, uintptr_t *high)
{
    struct _gil_runtime_state *gil = sp_interp_gil(interp);
    *low = (uintptr_t)gil;
    *high = *low + sizeof(*gil);
}

/* How many times the GIL changed hands, and its last holder: while the count
 * stands still, no thread but the last holder can have run Python code.
 * Racy reads of aligned words, by design: a change seen one tick late is
 * seen at the next. */
static inline uint64_t sp_gil_switches(struct _gil_runtime_state *gil, uintptr_t *last_holder)
{
    *last_holder = __atomic_load_n((uintptr_t *)(void *)&gil->last_holder, __ATOMIC_ACQUIRE);
    return __atomic_load_n((unsigned long *)(void *)&gil->switch_number, __ATOMIC_ACQUIRE);
}

#endif
