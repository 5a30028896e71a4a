/* Fuzzes sp_walk_stack and sp_stack_fingerprint over a thread state and a
 * chain of frames the fuzzer builds (this interpreter version's layouts).
 *
 * Every pointer the walker can follow leads into a one-page arena the fuzzer
 * fills (frames, a C frame, code objects and other objects, all fakes), into
 * the PROT_NONE pages on either side of it, or to a low unmapped address
 * (aligned or not): the walker reads what a torn or freed frame could hold,
 * and reads that fault go to the real fault guard (sp_guarded_run), as in the
 * signal handler. The walkers are not instrumented by AddressSanitizer (they
 * read changing memory by design: csrc/frame_walk.h); UndefinedBehaviorSanitizer
 * checks them, and the invariants below check what they write. No
 * interpreter runs: the walker only compares type pointers with &PyCode_Type.
 *
 * Invariants: the walk ends (libFuzzer's -timeout); at most max_depth frames
 * are written (the record is allocated to exactly that size); every frame
 * kept is a code object whose co_firstlineno was copied, with an instruction
 * offset of -1 or one within the code or at its end (3.11+, where the walker
 * checks it; the resolver checks it again). */
#include "fuzz_common.h"

#include "frame_walk.h"
#include "platform.h"

#include <sanitizer/asan_interface.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#define ARENA_BYTES 4096
#define ARENA_WORDS (ARENA_BYTES / 8)

#if PY_VERSION_HEX >= 0x030B0000
typedef _PyInterpreterFrame fz_frame;
#define FRAME_BACK previous
#if PY_VERSION_HEX >= 0x030D0000
#define FRAME_CODE f_executable
#define FRAME_INSTR instr_ptr
#else
#define FRAME_CODE f_code
#define FRAME_INSTR prev_instr
#endif
#else
typedef PyFrameObject fz_frame;
#define FRAME_BACK f_back
#define FRAME_CODE f_code
#endif

static unsigned char *arena; /* ARENA_BYTES, between PROT_NONE pages */
static long page_size;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    page_size = sysconf(_SC_PAGESIZE);
    /* An inaccessible page on each side: every pointer value the arena can
     * hold, read as a link, lands in the three pages or at a low address. */
    unsigned char *pages = mmap(NULL, (size_t)page_size * 3, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0);
    if (pages == MAP_FAILED || ARENA_BYTES > page_size ||
        mprotect(pages + page_size, (size_t)page_size, PROT_READ | PROT_WRITE) != 0) {
        abort();
    }
    /* The range may have been the allocator's, its shadow still poisoned:
     * reads must reach the hardware, which faults on the outer pages. */
    ASAN_UNPOISON_MEMORY_REGION(pages, (size_t)page_size * 3);
    /* The arena ends where the inaccessible page begins. */
    arena = pages + 2 * page_size - ARENA_BYTES;
    return 0;
}

/* A pointer the walker may follow: never into memory the harness does not
 * own except the guard page and the unmapped low addresses. */
static uintptr_t pointer_from(uint16_t v)
{
    uintptr_t end = (uintptr_t)arena + ARENA_BYTES;
    switch (v & 7) {
    case 0:
        return 0;
    case 5: /* inside the inaccessible page, far enough from its end that a
             * struct read there stays in it */
        return end + ((uintptr_t)(v >> 3) % 256) * 8;
    case 6: /* a struct that straddles the arena's end */
        return end - ((uintptr_t)(v >> 3) % 24 + 1) * 8;
    case 7:
        if (v & 8) { /* a torn link: not even aligned */
            return ((uintptr_t)arena + (uintptr_t)(v >> 4) % ARENA_BYTES) | 1;
        }
        return ((uintptr_t)(v >> 4) + 1) * 8; /* low addresses are never mapped */
    default:
        return (uintptr_t)arena + ((uintptr_t)(v >> 3) % ARENA_WORDS) * 8;
    }
}

/* Code objects are fakes in the arena (op 2): a real one could be read as a
 * frame through a confused link, and its neighbours in the heap are not the
 * harness's to read. */
static uintptr_t code_from(uint16_t v)
{
    return v % 4 == 0 ? 0 : pointer_from((uint16_t)(v >> 2));
}

/* Writes a struct-sized overlay only where it fits in the arena. */
static void *overlay(uint16_t v, size_t size)
{
    size_t offset = ((size_t)v % ARENA_WORDS) * 8;
    return offset + size <= ARENA_BYTES ? arena + offset : NULL;
}

static void put_word(void *base, size_t offset, uintptr_t value)
{
    memcpy((unsigned char *)base + offset, &value, sizeof(value));
}

static int in_arena(uintptr_t p, size_t size)
{
    uintptr_t start = (uintptr_t)arena;
    return p >= start && p + size <= start + ARENA_BYTES;
}

static void build(fz_reader *in, PyThreadState *tstate)
{
    memset(arena, 0, ARENA_BYTES);
    while (fz_more(in)) {
        uint8_t op = fz_u8(in) % 4;
        uint16_t where = fz_u16(in);
        if (op == 0) {
            void *word = overlay(where, 8);
            put_word(word, 0, pointer_from(fz_u16(in)));
        } else if (op == 1) {
            fz_frame *frame = overlay(where, sizeof(fz_frame));
            uintptr_t code = code_from(fz_u16(in));
            uintptr_t back = pointer_from(fz_u16(in));
            int8_t delta = (int8_t)fz_u8(in);
            uint8_t owner = fz_u8(in);
            int32_t lasti = (int32_t)fz_u32(in);
            if (frame == NULL) {
                continue;
            }
#if PY_VERSION_HEX >= 0x030E0000
            /* 3.14+ frames hold tagged references: the low bit set marks one
             * that owns no count. */
            put_word(frame, offsetof(fz_frame, FRAME_CODE), code | (uintptr_t)(lasti & Py_TAG_REFCNT));
#else
            put_word(frame, offsetof(fz_frame, FRAME_CODE), code);
#endif
            put_word(frame, offsetof(fz_frame, FRAME_BACK), back);
#if PY_VERSION_HEX >= 0x030B0000
            /* Near the code's instructions: before, inside, at and past the end. */
            put_word(frame, offsetof(fz_frame, FRAME_INSTR),
                     code + offsetof(PyCodeObject, co_code_adaptive) + (intptr_t)delta * 2);
            frame->owner = (char)owner;
            (void)lasti;
#else
            (void)delta;
            (void)owner;
            frame->f_lasti = lasti;
#endif
        } else if (op == 2) {
            PyCodeObject *fake = overlay(where, sizeof(PyCodeObject));
            uint8_t type = fz_u8(in);
            int16_t size = (int16_t)fz_u16(in);
            int32_t first_lineno = (int32_t)fz_u32(in);
            uint8_t first_traceable = fz_u8(in);
            if (fake == NULL) {
                continue;
            }
            /* Mostly a code object; else an object of another type. */
            put_word(fake, offsetof(PyObject, ob_type),
                     type % 4 ? (uintptr_t)&PyCode_Type : (uintptr_t)&PyLong_Type);
            put_word(fake, offsetof(PyVarObject, ob_size), (uintptr_t)(intptr_t)size);
            fake->co_firstlineno = first_lineno;
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
            fake->_co_firsttraceable = first_traceable;
#else
            (void)first_traceable;
#endif
        } else {
            /* The thread state's way to its leaf frame: CPython stores it
             * whole, so it is aligned (what it leads to may not be). */
            uintptr_t leaf = pointer_from(fz_u16(in)) & ~(uintptr_t)7;
#if PY_VERSION_HEX >= 0x030D0000
            tstate->current_frame = (void *)leaf;
#elif PY_VERSION_HEX >= 0x030B0000
            tstate->cframe = (void *)leaf;
#else
            tstate->frame = (void *)leaf;
#endif
            (void)where;
        }
    }
}

typedef struct {
    PyThreadState *tstate;
    sp_record *record;
    uint32_t max_depth;
    uint64_t fingerprint;
} fz_job;

static void walk(void *argument)
{
    fz_job *job = argument;
    sp_walk_stack(job->tstate, job->record, job->max_depth);
}

static void fingerprint(void *argument)
{
    fz_job *job = argument;
    job->fingerprint = sp_stack_fingerprint(job->tstate);
}

static void check(const sp_record *record, uint32_t max_depth)
{
    if (record->depth > max_depth) {
        FZ_FAIL("depth %u > max_depth %u", record->depth, max_depth);
    }
    for (uint32_t i = 0; i < record->depth; i++) {
        const sp_frame_ref *ref = &record->frames[i];
        uintptr_t code = (uintptr_t)ref->code;
        if (!in_arena(code, sizeof(PyObject)) || Py_TYPE((PyObject *)code) != &PyCode_Type) {
            FZ_FAIL("frame %u keeps %p, not a code object", i, ref->code);
        }
        if (ref->first_lineno != ((PyCodeObject *)code)->co_firstlineno) {
            FZ_FAIL("frame %u: first_lineno not copied", i);
        }
        if (ref->instr_offset < -1) {
            FZ_FAIL("frame %u: offset %d", i, ref->instr_offset);
        }
#if PY_VERSION_HEX >= 0x030B0000
        if (ref->instr_offset >= 0 &&
            (ref->instr_offset % 2 != 0 || ref->instr_offset > fz_code_nbytes((PyCodeObject *)code))) {
            FZ_FAIL("frame %u: offset %d outside %zd bytes of code", i, ref->instr_offset,
                    fz_code_nbytes((PyCodeObject *)code));
        }
#endif
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int guard_installed;
    if (!guard_installed) {
        /* After libFuzzer's own handlers, which ours chains to, as it chains
         * to whatever a host process had installed. */
        char error[128];
        if (sp_fault_guard_install(error, sizeof(error)) != 0) {
            fprintf(stderr, "%s\n", error);
            abort();
        }
        guard_installed = 1;
    }
    fz_reader in = {data, size, 0};
    uint32_t max_depth = 1 + fz_u8(&in) % 48;
    PyThreadState *tstate = calloc(1, sizeof(PyThreadState));
    sp_record *record = malloc(sizeof(sp_record) + max_depth * sizeof(sp_frame_ref));
    if (tstate == NULL || record == NULL) {
        abort();
    }
    build(&in, tstate);
    memset(record, 0, sizeof(sp_record));
    fz_job job = {tstate, record, max_depth, 0};
    pid_t tid = sp_current_tid();
    if (sp_guarded_run(tid, walk, &job) == 0) {
        check(record, max_depth);
    }
    sp_guarded_run(tid, fingerprint, &job);
    free(record);
    free(tstate);
    return 0;
}
