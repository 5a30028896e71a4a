#include "python_internal.h"

#include "layout_check.h"

#include <stdio.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030D0000

typedef enum {
    SP_LAYOUT_COOKIE,  /* the table's marker: without it, nothing else is read */
    SP_LAYOUT_VERSION, /* major and minor: the table's own layout is theirs */
    SP_LAYOUT_VALUE,   /* an offset, or a build flag: equal */
} sp_layout_kind;

typedef struct {
    const char *name;
    size_t position; /* in _Py_DebugOffsets */
    sp_layout_kind kind;
    uint64_t compiled;
} sp_layout_field;

#define SP_PUBLISHED(section, field, compiled)                                                    \
    {#section "." #field, offsetof(_Py_DebugOffsets, section.field), SP_LAYOUT_VALUE,              \
     (uint64_t)(compiled)}

/* Every published field sigprof reads, with where it was compiled to be. The
 * rest of what the core reads (a thread state's dict, the interpreter's
 * thread serial, the GIL's switch count, a code object's size) CPython does
 * not publish. */
static const sp_layout_field fields[] = {
    {"cookie", offsetof(_Py_DebugOffsets, cookie), SP_LAYOUT_COOKIE, 0},
    {"version", offsetof(_Py_DebugOffsets, version), SP_LAYOUT_VERSION, PY_VERSION_HEX},
    {"free_threaded", offsetof(_Py_DebugOffsets, free_threaded), SP_LAYOUT_VALUE, 0},
    SP_PUBLISHED(thread_state, interp, offsetof(PyThreadState, interp)),
    SP_PUBLISHED(thread_state, current_frame, offsetof(PyThreadState, current_frame)),
    SP_PUBLISHED(thread_state, thread_id, offsetof(PyThreadState, thread_id)),
    SP_PUBLISHED(interpreter_state, ceval_gil, offsetof(PyInterpreterState, ceval.gil)),
    SP_PUBLISHED(interpreter_state, gil_runtime_state_holder,
                 offsetof(PyInterpreterState, _gil.last_holder)),
    SP_PUBLISHED(interpreter_frame, previous, offsetof(_PyInterpreterFrame, previous)),
    SP_PUBLISHED(interpreter_frame, executable, offsetof(_PyInterpreterFrame, f_executable)),
    SP_PUBLISHED(interpreter_frame, instr_ptr, offsetof(_PyInterpreterFrame, instr_ptr)),
    SP_PUBLISHED(interpreter_frame, owner, offsetof(_PyInterpreterFrame, owner)),
    SP_PUBLISHED(code_object, filename, offsetof(PyCodeObject, co_filename)),
    SP_PUBLISHED(code_object, qualname, offsetof(PyCodeObject, co_qualname)),
    SP_PUBLISHED(code_object, firstlineno, offsetof(PyCodeObject, co_firstlineno)),
    SP_PUBLISHED(code_object, co_code_adaptive, offsetof(PyCodeObject, co_code_adaptive)),
    SP_PUBLISHED(pyobject, ob_type, offsetof(PyObject, ob_type)),
};

#define SP_FIELD_COUNT (sizeof(fields) / sizeof(fields[0]))

static uint64_t published_value(const unsigned char *table, const sp_layout_field *field)
{
    uint64_t value;
    memcpy(&value, table + field->position, sizeof(value));
    return value;
}

int sp_layout_check_table(const unsigned char *table, char *why, size_t why_len)
{
    static const char rebuild[] = "; sigprof's core was compiled for another build of CPython "
                                  "(reinstall sigprof from source with this interpreter)";
    for (uint32_t i = 0; i < SP_FIELD_COUNT; i++) {
        const sp_layout_field *field = &fields[i];
        uint64_t published = published_value(table, field);
        if (field->kind == SP_LAYOUT_COOKIE) {
            if (memcmp(table + field->position, _Py_Debug_Cookie, sizeof(published)) != 0) {
                snprintf(why, why_len,
                         "this interpreter publishes no layout table (_PyRuntime.debug_offsets: "
                         "its cookie is not \"%s\")%s",
                         _Py_Debug_Cookie, rebuild);
                return -1;
            }
        } else if (field->kind == SP_LAYOUT_VERSION) {
            /* Patch releases share a table layout; their offsets are compared below. */
            if ((published >> 16) != (field->compiled >> 16)) {
                snprintf(why, why_len,
                         "the layout table's version (_PyRuntime.debug_offsets) is CPython "
                         "%u.%u, sigprof was compiled for %u.%u%s",
                         (unsigned)(published >> 24) & 0xFF, (unsigned)(published >> 16) & 0xFF,
                         (unsigned)(field->compiled >> 24) & 0xFF,
                         (unsigned)(field->compiled >> 16) & 0xFF, rebuild);
                return -1;
            }
        } else if (published != field->compiled) {
            snprintf(why, why_len,
                     "this interpreter's memory layout differs from the one sigprof was "
                     "compiled for: %s is %llu in _PyRuntime.debug_offsets, %llu compiled%s",
                     field->name, (unsigned long long)published,
                     (unsigned long long)field->compiled, rebuild);
            return -1;
        }
    }
    return 0;
}

const unsigned char *sp_layout_runtime_table(void)
{
    return (const unsigned char *)&_PyRuntime.debug_offsets;
}

size_t sp_layout_table_size(void) { return sizeof(_Py_DebugOffsets); }

uint32_t sp_layout_field_count(void) { return SP_FIELD_COUNT; }

const char *sp_layout_field_name(uint32_t index)
{
    return index < SP_FIELD_COUNT ? fields[index].name : NULL;
}

size_t sp_layout_field_position(uint32_t index)
{
    return index < SP_FIELD_COUNT ? fields[index].position : 0;
}

int sp_layout_check(char *why, size_t why_len)
{
    return sp_layout_check_table(sp_layout_runtime_table(), why, why_len);
}

#else /* before 3.13 CPython publishes no layout: nothing to compare */

int sp_layout_check_table(const unsigned char *table, char *why, size_t why_len)
{
    (void)table;
    (void)why;
    (void)why_len;
    return 0;
}

const unsigned char *sp_layout_runtime_table(void) { return NULL; }

size_t sp_layout_table_size(void) { return 0; }

uint32_t sp_layout_field_count(void) { return 0; }

const char *sp_layout_field_name(uint32_t index)
{
    (void)index;
    return NULL;
}

size_t sp_layout_field_position(uint32_t index)
{
    (void)index;
    return 0;
}

int sp_layout_check(char *why, size_t why_len)
{
    (void)why;
    (void)why_len;
    return 0;
}

#endif
