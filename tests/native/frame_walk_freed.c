/* The frame walkers read memory the program may have freed under them
 * (csrc/frame_walk.h says why): built with AddressSanitizer, walking a stack
 * whose frame and code object were freed must not be reported. Any read left
 * instrumented fails this, such as one of CPython's inline accessors (Py_TYPE
 * was one) that a compiler declines to inline into the walkers. */
#include "python_internal.h"

#include "frame_walk.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_DEPTH 8

/* One block holds a whole one-frame stack, so that freeing it frees all of it. */
typedef struct {
    /* The allocator keeps its own records in a freed block's first bytes:
     * the links after them still lead where they did. */
    char allocator_room[64];
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
    _PyCFrame cframe;
    _PyInterpreterFrame frame;
#elif PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame frame;
#else
    PyFrameObject frame;
#endif
    PyCodeObject code;
} one_frame_stack;

static one_frame_stack *build(PyThreadState *tstate)
{
    one_frame_stack *stack = calloc(1, sizeof(*stack));
    if (stack == NULL) {
        abort();
    }
    Py_SET_TYPE((PyObject *)&stack->code, &PyCode_Type);
    Py_SET_SIZE((PyVarObject *)&stack->code, 4);
    stack->code.co_firstlineno = 7;
#if PY_VERSION_HEX >= 0x030B0000
    /* Two code units in: past 3.11's first traceable instruction. */
    stack->frame.owner = FRAME_OWNED_BY_THREAD;
#if PY_VERSION_HEX >= 0x030D0000
#if PY_VERSION_HEX >= 0x030E0000
    /* A tagged reference: the low bit marks one that owns no count. */
    stack->frame.f_executable.bits = (uintptr_t)&stack->code | Py_TAG_REFCNT;
#else
    stack->frame.f_executable = (PyObject *)&stack->code;
#endif
    stack->frame.instr_ptr = _PyCode_CODE(&stack->code) + 2;
    tstate->current_frame = &stack->frame;
#else
    stack->frame.f_code = &stack->code;
    stack->frame.prev_instr = _PyCode_CODE(&stack->code) + 2;
    stack->cframe.current_frame = &stack->frame;
    tstate->cframe = &stack->cframe;
#endif
#else
    stack->frame.f_code = &stack->code;
    stack->frame.f_lasti = 2;
    tstate->frame = &stack->frame;
#endif
    return stack;
}

int main(void)
{
    PyThreadState *tstate = calloc(1, sizeof(PyThreadState));
    sp_record *record = calloc(1, sizeof(sp_record) + MAX_DEPTH * sizeof(sp_frame_ref));
    if (tstate == NULL || record == NULL) {
        abort();
    }
    one_frame_stack *stack = build(tstate);

    /* Alive: the walkers see the frame. */
    sp_walk_stack(tstate, record, MAX_DEPTH);
    uint64_t fingerprint = sp_stack_fingerprint(tstate);
    if (record->depth != 1 || record->frames[0].first_lineno != 7 || fingerprint == 0) {
        fprintf(stderr, "live stack: depth %u, first line %d, fingerprint %llu\n", record->depth,
                record->depth ? record->frames[0].first_lineno : -1, (unsigned long long)fingerprint);
        return 1;
    }

    /* Freed, still linked from the thread state: read all the way to the
     * code object, without a report. */
    free(stack);
    record->depth = 0;
    sp_walk_stack(tstate, record, MAX_DEPTH);
    sp_stack_fingerprint(tstate);
    if (record->depth != 1) {
        fprintf(stderr, "freed stack: depth %u, the walk stopped short of the code object\n",
                record->depth);
        return 1;
    }

    free(record);
    free(tstate);
    printf("walked a freed stack without a sanitizer report\n");
    return 0;
}
