#include "python_internal.h"

#include "frame_walk.h"

/* Bounds the walk even through corrupted or cyclic links. */
#define SP_MAX_SKIPPED_FRAMES 4096

/* A signal can land between two stores of a frame push (the compiler orders
 * them freely), so a link may still hold a stale value: one that is not even
 * aligned cannot be a frame or a code object, and reading through it would be
 * undefined behaviour (UBSan reports it) even where the fault guard keeps it
 * from crashing. */
#define SP_MISALIGNED(pointer) (((uintptr_t)(pointer) & (_Alignof(void *) - 1)) != 0)

/* CPython's Py_TYPE, Py_SIZE and _PyFrame_IsIncomplete are inline functions
 * that compilers do not inline into functions with other sanitizer
 * attributes: the walkers read those fields themselves. */
SP_READS_CHANGING_MEMORY
static inline int is_code_object(const void *object)
{
    return ((const PyObject *)object)->ob_type == &PyCode_Type;
}

#if PY_VERSION_HEX >= 0x030B0000

SP_READS_CHANGING_MEMORY
static inline PyCodeObject *frame_code(_PyInterpreterFrame *frame)
{
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: a tagged stack reference; its low bit marks a reference that
     * owns no count. Other tag bits leave the pointer misaligned: not code. */
    PyObject *executable = (PyObject *)(frame->f_executable.bits & ~(uintptr_t)Py_TAG_REFCNT);
#elif PY_VERSION_HEX >= 0x030D0000
    PyObject *executable = frame->f_executable;
#endif
#if PY_VERSION_HEX >= 0x030D0000
    if (executable == NULL || SP_MISALIGNED(executable) || !is_code_object(executable)) {
        return NULL; /* shim frames carry None, not code */
    }
    return (PyCodeObject *)executable;
#else
    PyCodeObject *code = frame->f_code;
    return code != NULL && !SP_MISALIGNED(code) && is_code_object(code) ? code : NULL;
#endif
}

/* Frames that are not (yet) a Python function running: skip, never name. */
SP_READS_CHANGING_MEMORY
static inline int frame_is_skipped(_PyInterpreterFrame *frame, PyCodeObject *code)
{
    if (code == NULL) {
        return 1;
    }
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: owners past the frame object's are entry frames (3.12 and 3.13:
     * FRAME_OWNED_BY_CSTACK; 3.14+: FRAME_OWNED_BY_INTERPRETER, and 3.14's
     * FRAME_OWNED_BY_CSTACK after it); any other value is a torn frame. A
     * freshly pushed frame may point one code unit before its first
     * instruction: it is a real frame, keep it. */
    return (unsigned char)frame->owner > FRAME_OWNED_BY_FRAME_OBJECT;
#else /* 3.11: _PyFrame_IsIncomplete */
    return frame->owner != FRAME_OWNED_BY_GENERATOR &&
           frame->prev_instr < _PyCode_CODE(code) + code->_co_firsttraceable;
#endif
}

SP_READS_CHANGING_MEMORY
static inline int32_t frame_instr_offset(_PyInterpreterFrame *frame, PyCodeObject *code)
{
#if PY_VERSION_HEX >= 0x030D0000
    _Py_CODEUNIT *instr = frame->instr_ptr;
#else
    _Py_CODEUNIT *instr = frame->prev_instr;
#endif
    intptr_t units = instr - _PyCode_CODE(code);
    if (units < 0 || units > (intptr_t)((PyVarObject *)code)->ob_size) {
        return -1;
    }
    return (int32_t)(units * (intptr_t)sizeof(_Py_CODEUNIT));
}

SP_READS_CHANGING_MEMORY
static inline _PyInterpreterFrame *leaf_frame(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#else
    _PyCFrame *cframe = tstate->cframe;
    return cframe == NULL ? NULL : cframe->current_frame;
#endif
}

SP_READS_CHANGING_MEMORY
void sp_walk_stack(struct _ts *tstate, sp_record *record, uint32_t max_depth)
{
    uint32_t depth = 0;
    uint32_t skipped = 0;
    _PyInterpreterFrame *frame = leaf_frame(tstate);
    while (frame != NULL) {
        if (SP_MISALIGNED(frame)) {
            record->flags |= SP_RECORD_TRUNCATED; /* the rest of the stack is unknowable */
            break;
        }
        PyCodeObject *code = frame_code(frame);
        if (frame_is_skipped(frame, code)) {
            if (++skipped > SP_MAX_SKIPPED_FRAMES) {
                break;
            }
        } else {
            if (depth == max_depth) {
                record->flags |= SP_RECORD_TRUNCATED;
                break;
            }
            sp_frame_ref *ref = &record->frames[depth++];
            ref->code = code;
            ref->instr_offset = frame_instr_offset(frame, code);
            ref->first_lineno = code->co_firstlineno;
        }
        _PyInterpreterFrame *previous = frame->previous;
        if (previous == frame) {
            break;
        }
        frame = previous;
    }
    record->depth = depth;
}

SP_READS_CHANGING_MEMORY
uint64_t sp_stack_fingerprint(struct _ts *tstate)
{
    _PyInterpreterFrame *frame = leaf_frame(tstate);
    if (frame == NULL) {
        return 1;
    }
    if (SP_MISALIGNED(frame)) {
        return 0; /* unreadable, as after a fault (found by tests/fuzz) */
    }
#if PY_VERSION_HEX >= 0x030D0000
    uintptr_t instr = (uintptr_t)frame->instr_ptr;
#else
    uintptr_t instr = (uintptr_t)frame->prev_instr;
#endif
    return ((uint64_t)(uintptr_t)frame * 0x9E3779B97F4A7C15ULL) ^ instr ^ 2;
}

#else /* 3.9 and 3.10: a linked list of frame objects */

SP_READS_CHANGING_MEMORY
void sp_walk_stack(struct _ts *tstate, sp_record *record, uint32_t max_depth)
{
    uint32_t depth = 0;
    uint32_t skipped = 0;
    PyFrameObject *frame = tstate->frame;
    while (frame != NULL) {
        if (SP_MISALIGNED(frame)) {
            record->flags |= SP_RECORD_TRUNCATED; /* the rest of the stack is unknowable */
            break;
        }
        PyCodeObject *code = frame->f_code;
        if (code != NULL && (SP_MISALIGNED(code) || !is_code_object(code))) {
            code = NULL; /* not a live code object: skip, never name */
        }
        if (depth == max_depth) {
            record->flags |= SP_RECORD_TRUNCATED;
            break;
        }
        if (code != NULL) {
            sp_frame_ref *ref = &record->frames[depth++];
            ref->code = code;
#if PY_VERSION_HEX >= 0x030A0000
            /* 3.10 counts code units. A stale frame can hold any f_lasti:
             * doubling it must not overflow (found by tests/fuzz). */
            ref->instr_offset = frame->f_lasti < 0 || frame->f_lasti > INT32_MAX / 2 ? -1 : frame->f_lasti * 2;
#else
            ref->instr_offset = frame->f_lasti < 0 ? -1 : frame->f_lasti;
#endif
            ref->first_lineno = code->co_firstlineno;
        } else if (++skipped > SP_MAX_SKIPPED_FRAMES) {
            break; /* a cycle of stale frames without code (found by tests/fuzz) */
        }
        PyFrameObject *back = frame->f_back;
        if (back == frame) {
            break;
        }
        frame = back;
    }
    record->depth = depth;
}

SP_READS_CHANGING_MEMORY
uint64_t sp_stack_fingerprint(struct _ts *tstate)
{
    PyFrameObject *frame = tstate->frame;
    if (frame == NULL) {
        return 1;
    }
    if (SP_MISALIGNED(frame)) {
        return 0; /* unreadable, as after a fault (found by tests/fuzz) */
    }
    return ((uint64_t)(uintptr_t)frame * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)(uint32_t)frame->f_lasti ^ 2;
}

#endif
