/* Fuzzes the resolver: ring records (sp_record) with arbitrary kinds, flags,
 * slots, thread idents, depths and instruction offsets, naming real code
 * objects, non-code objects and NULL, go through a real ring into
 * sp_resolver_collect, with chunk resets (sp_resolver_reset_interning) in
 * between. Built twice:
 *
 *  - records: code objects from the pool; every line number is checked
 *    against CPython's own table (co_lines(), or the line starts of co_lnotab
 *    on 3.9) for offsets within the code, and must be co_firstlineno for any
 *    other offset;
 *  - lines (FZ_LINES): the code objects' line tables are the fuzzer's bytes
 *    (code.replace(co_linetable=...), co_lnotab on 3.9), as a program that
 *    builds code objects can make them; the resolver decodes them through
 *    PyCode_Addr2Line at any offset. Only memory safety and the structure of
 *    what comes out are checked: CPython defines no line for a malformed table.
 *
 * Records often repeat the one before (a stack met again is interned whole,
 * by one hash of the record): every record remembered that way must name
 * the stack its frames resolve to, frame by frame.
 *
 * Invariants (both): no read or write out of bounds by sigprof's code
 * (AddressSanitizer; PYTHONMALLOC=malloc puts Python's objects in its view
 * too, though CPython's own reads, PyCode_Addr2Line's included, are not
 * instrumented: there only crashes and wrong lines show); every sample's
 * stack and every stack's frames exist; a frame is a code frame with a str
 * name and file, or one of the synthetic kinds; stacks are at most
 * max_depth + 1 long. */
#include "fuzz_common.h"

#include "intern.h"
#include "ring_buffer.h"

#define RING_CAPACITY 64

/* Real code objects of every shape the pool source has: functions,
 * generators, coroutines, lambdas, comprehensions, class bodies, a module,
 * lines past 32767 (3.11's line array switches to 4-byte entries). On 3.11
 * the module runs under a tracer first, so the code objects carry the line
 * array that tracing creates. */
static const char fz_pool_source[] =
    "import sys\n"
    "def empty(): pass\n"
    "def branches(a, b=2, *args, **kw):\n"
    "    total = 0\n"
    "    for i in range(a):\n"
    "        if i % 2:\n"
    "            total += i\n"
    "        else:\n"
    "            total -= b\n"
    "    try:\n"
    "        total //= a\n"
    "    except ZeroDivisionError:\n"
    "        total = -1\n"
    "    return [x * 2 for x in range(total if total > 0 else 1)]\n"
    "def gen(n):\n"
    "    for i in range(n):\n"
    "        yield i\n"
    "async def coro():\n"
    "    return 1\n"
    "class Shape:\n"
    "    side = 3\n"
    "    def area(self):\n"
    "        return self.side * self.side\n"
    "square = lambda v: v * v\n"
    "def nested():\n"
    "    def inner():\n"
    "        return (lambda: 4)()\n"
    "    return inner()\n"
    "tail = compile('\\n' * 40000 + 'def far():\\n    x = 1\\n    return x\\nfar()\\n', 'far.py', 'exec')\n"
    "def run_all():\n"
    "    branches(5); list(gen(3)); c = coro(); c.close(); Shape().area(); square(2); nested()\n"
    "    exec(tail, {})\n";

#define FZ_MAX_POOL 64

static PyObject *fz_pool[FZ_MAX_POOL];
static int fz_pool_count;

static void fz_collect_code(PyObject *code)
{
    if (fz_pool_count == FZ_MAX_POOL) {
        return;
    }
    Py_INCREF(code);
    fz_pool[fz_pool_count++] = code;
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *item = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(item)) {
            fz_collect_code(item);
        }
    }
}

static void fz_python_start(void)
{
    Py_InitializeEx(0);
    PyObject *module = PyImport_AddModule("__main__");
    PyObject *globals = PyModule_GetDict(module);
    PyObject *code = Py_CompileString(fz_pool_source, "pool.py", Py_file_input);
    if (code == NULL) {
        PyErr_Print();
        abort();
    }
    PyObject *result = PyEval_EvalCode(code, globals, globals);
    if (result == NULL) {
        PyErr_Print();
        abort();
    }
    Py_DECREF(result);
    /* Run everything once (under a tracer: 3.11 builds its line arrays). */
    PyObject *run = PyRun_String("sys.settrace(lambda *a: None)\n"
                                 "try:\n"
                                 "    run_all()\n"
                                 "finally:\n"
                                 "    sys.settrace(None)\n",
                                 Py_file_input, globals, globals);
    if (run == NULL) {
        PyErr_Print();
        abort();
    }
    Py_DECREF(run);
    fz_collect_code(code);
    fz_collect_code(PyDict_GetItemString(globals, "tail"));
    Py_DECREF(code);
}


/* Per pool code object: the line CPython gives each code unit. */
static int32_t *expected_lines[FZ_MAX_POOL];

static const char oracle_source[] =
    "import dis\n"
    "def unit_lines(code, nbytes):\n"
    "    first = code.co_firstlineno\n"
    "    out = [first] * (nbytes // 2)\n"
    "    if hasattr(code, 'co_lines'):\n"
    "        for start, end, line in code.co_lines():\n"
    "            for offset in range(start, min(end, nbytes), 2):\n"
    "                out[offset // 2] = line if line is not None and line > 0 else first\n"
    "    else:\n"
    "        starts = dict(dis.findlinestarts(code))\n"
    "        line = first\n"
    "        for offset in range(0, nbytes, 2):\n"
    "            line = starts.get(offset, line)\n"
    "            out[offset // 2] = line if line > 0 else first\n"
    "    return out\n"
    "def with_table(code, table):\n"
    "    if hasattr(code, 'co_linetable'):\n"
    "        return code.replace(co_linetable=table)\n"
    "    return code.replace(co_lnotab=table)\n";

static PyObject *oracle_globals;
static PyObject *others[3]; /* objects that are not code */

static PyObject *call(const char *name, PyObject *args)
{
    PyObject *function = PyDict_GetItemString(oracle_globals, name);
    PyObject *result = function ? PyObject_CallObject(function, args) : NULL;
    Py_DECREF(args);
    return result;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_python_start();
    oracle_globals = PyDict_New();
    PyDict_SetItemString(oracle_globals, "__builtins__", PyEval_GetBuiltins());
    PyObject *done = PyRun_String(oracle_source, Py_file_input, oracle_globals, oracle_globals);
    if (done == NULL) {
        PyErr_Print();
        abort();
    }
    Py_DECREF(done);
    for (int i = 0; i < fz_pool_count; i++) {
        PyCodeObject *code = (PyCodeObject *)fz_pool[i];
        Py_ssize_t nbytes = fz_code_nbytes(code);
        PyObject *lines = call("unit_lines", Py_BuildValue("(On)", code, nbytes));
        if (lines == NULL) {
            PyErr_Print();
            abort();
        }
        expected_lines[i] = malloc((size_t)(nbytes / 2 + 1) * sizeof(int32_t));
        for (Py_ssize_t unit = 0; unit < nbytes / 2; unit++) {
            expected_lines[i][unit] = (int32_t)PyLong_AsLong(PyList_GET_ITEM(lines, unit));
        }
        Py_DECREF(lines);
    }
    others[0] = Py_None;
    others[1] = PyUnicode_FromString("not code");
    others[2] = PyLong_FromLong(12345);
    return 0;
}

/* Offsets around every edge: negative, odd, at and past the end, extreme. */
static int32_t offset_from(fz_reader *in, PyCodeObject *code)
{
    int32_t nbytes = code != NULL ? (int32_t)fz_code_nbytes(code) : 0;
    uint8_t how = fz_u8(in);
    int32_t small = (int32_t)(int8_t)fz_u8(in);
    switch (how % 6) {
    case 0:
        return -1;
    case 1:
        return nbytes + small;
    case 2:
        return (int32_t)fz_u32(in);
    case 3:
        return small < 0 ? INT32_MIN - small - 1 : INT32_MAX - small;
    default:
        return nbytes > 0 ? (int32_t)(fz_u16(in) % (uint32_t)nbytes) : small;
    }
}

typedef struct {
    sp_resolver resolver;
    sp_ring ring;
    uint32_t max_depth;
    PyObject **codes; /* what frames may name: pool, or this input's tables */
    int32_t **lines;  /* expected lines per code unit, or NULL (not checked) */
    int code_count;
} fz_state;

static PyObject *code_of_serial(const fz_state *s, uint64_t serial)
{
    const sp_u64_map *map = &s->resolver.code_serials;
    for (uint64_t i = 0; i < map->capacity; i++) {
        if (map->keys[i] != 0 && map->values[i] == serial) {
            return (PyObject *)(uintptr_t)map->keys[i];
        }
    }
    return NULL;
}

static void check_frame(const fz_state *s, const sp_frame_entry *frame)
{
    if (frame->kind != SP_FRAME_CODE) {
        if ((frame->kind != SP_FRAME_UNKNOWN && frame->kind != SP_FRAME_TRUNCATED) ||
            frame->name != NULL || frame->filename != NULL) {
            FZ_FAIL("synthetic frame of kind %u", frame->kind);
        }
        return;
    }
    if (frame->name == NULL || !PyUnicode_Check(frame->name) || frame->filename == NULL ||
        !PyUnicode_Check(frame->filename)) {
        FZ_FAIL("code frame without a str name and file");
    }
    PyCodeObject *code = (PyCodeObject *)code_of_serial(s, frame->key >> 32);
    int index = -1;
    for (int i = 0; i < s->code_count; i++) {
        if ((PyObject *)code == s->codes[i]) {
            index = i;
        }
    }
    if (index < 0) {
        FZ_FAIL("code frame for an object that is not one of the input's code objects");
    }
    if (frame->first_lineno != code->co_firstlineno) {
        FZ_FAIL("first line %d, code says %d", frame->first_lineno, code->co_firstlineno);
    }
    if (s->lines[index] == NULL) {
        return;
    }
    int32_t offset = (int32_t)(uint32_t)frame->key;
    int32_t expected = offset >= 0 && offset < fz_code_nbytes(code) ? s->lines[index][offset / 2]
                                                                     : code->co_firstlineno;
    if (frame->lineno != expected) {
        FZ_FAIL("offset %d of %s:%d: line %d, CPython's table says %d", offset,
                PyUnicode_AsUTF8(code->co_filename), code->co_firstlineno, frame->lineno, expected);
    }
}

static void check_samples(fz_state *s)
{
    uint64_t count;
    sp_sample_entry *samples = sp_resolver_take_samples(&s->resolver, &count);
    for (uint64_t i = 0; i < count; i++) {
        int32_t stack = samples[i].stack_id;
        if (stack < 0 || (uint64_t)stack >= s->resolver.stack_count) {
            FZ_FAIL("sample %lu names stack %d of %lu", (unsigned long)i, stack,
                    (unsigned long)s->resolver.stack_count);
        }
        uint32_t length = sp_resolver_stack_length(&s->resolver, (uint64_t)stack);
        if (length > s->max_depth + 1) {
            FZ_FAIL("stack of %u frames, max_depth %u", length, s->max_depth);
        }
        for (uint32_t f = 0; f < length; f++) {
            int32_t id = sp_resolver_stack_frame(&s->resolver, (uint64_t)stack, f);
            const sp_frame_entry *frame = id < 0 ? NULL : sp_resolver_frame(&s->resolver, (uint64_t)id);
            if (frame == NULL) {
                FZ_FAIL("stack %d names frame %d of %lu", stack, id,
                        (unsigned long)s->resolver.frame_count);
            }
            check_frame(s, frame);
        }
    }
    free(samples);
}

/* Each remembered record's stack is its frames, resolved: same code (by
 * serial), same offset, the truncation marker where the record had one. */
static void check_raw_stacks(const fz_state *s)
{
    const sp_resolver *r = &s->resolver;
    for (uint64_t i = 0; i < r->raw_count; i++) {
        const struct sp_raw_stack *raw = &r->raw_stacks[i];
        uint32_t truncated = (raw->flags & SP_RECORD_TRUNCATED) != 0;
        if (raw->stack_id < 0 || (uint64_t)raw->stack_id >= r->stack_count ||
            sp_resolver_stack_length(r, (uint64_t)raw->stack_id) != raw->length + truncated) {
            FZ_FAIL("remembered record %lu: stack %d does not have its %u frames",
                    (unsigned long)i, raw->stack_id, raw->length);
        }
        for (uint32_t f = 0; f < raw->length + truncated; f++) {
            int32_t id = sp_resolver_stack_frame(r, (uint64_t)raw->stack_id, f);
            const sp_frame_entry *frame = sp_resolver_frame(r, (uint64_t)id);
            if (f == raw->length) {
                if (frame->kind != SP_FRAME_TRUNCATED) {
                    FZ_FAIL("remembered record %lu: no truncation marker", (unsigned long)i);
                }
                continue;
            }
            const sp_frame_ref *ref = &r->raw_frames[raw->offset + f];
            if (frame->kind != SP_FRAME_CODE || code_of_serial(s, frame->key >> 32) != ref->code ||
                (int32_t)(uint32_t)frame->key != ref->instr_offset) {
                FZ_FAIL("remembered record %lu: frame %u is not the record's", (unsigned long)i, f);
            }
        }
    }
}

/* The record added last, for repeats; depth 0 until there is one. */
static unsigned char fz_last_record[sizeof(sp_record) + 32 * sizeof(sp_frame_ref)];

static void repeat_record(fz_state *s)
{
    const sp_record *last = (const sp_record *)fz_last_record;
    uint64_t position;
    sp_record *record = sp_ring_reserve(&s->ring, &position);
    if (record == NULL) {
        return;
    }
    uint32_t stored = last->depth < s->max_depth ? last->depth : s->max_depth;
    memcpy(record, last, sizeof(sp_record) + stored * sizeof(sp_frame_ref));
    sp_ring_commit(&s->ring, position);
}

static void add_record(fz_state *s, fz_reader *in)
{
    uint64_t position;
    sp_record *record = sp_ring_reserve(&s->ring, &position);
    if (record == NULL) {
        return; /* full: the next collect empties it */
    }
    record->timestamp_ns = (int64_t)fz_u32(in);
    record->tick = fz_u8(in) % 40;
    record->thread_ident = fz_u8(in) % 6;
    record->slot = fz_u8(in) % 12; /* past the registry's slots too */
    record->generation = fz_u8(in) % 3; /* a slot's later thread may reuse an ident */
    record->kind = fz_u8(in) % 6;  /* including kinds that do not exist */
    record->flags = fz_u8(in) % 4;
    /* A depth past the slot's room is what a corrupted record would say. */
    uint32_t depth = fz_u8(in) % (s->max_depth + 8);
    record->depth = depth;
    for (uint32_t i = 0; i < depth && i < s->max_depth; i++) {
        sp_frame_ref *ref = &record->frames[i];
        uint8_t which = fz_u8(in);
        PyCodeObject *code = NULL;
        if (which % 8 < 6) {
            code = (PyCodeObject *)s->codes[(which >> 3) % s->code_count];
            ref->code = code;
        } else {
            ref->code = which % 8 == 6 ? others[(which >> 3) % 3] : NULL;
        }
        ref->instr_offset = offset_from(in, code);
        /* Mostly the code's own first line; sometimes one that changed. */
        ref->first_lineno = code != NULL && (which & 0x80) == 0 ? code->co_firstlineno
                                                               : (int32_t)fz_u16(in);
    }
    uint32_t stored = depth < s->max_depth ? depth : s->max_depth;
    memcpy(fz_last_record, record, sizeof(sp_record) + stored * sizeof(sp_frame_ref));
    sp_ring_commit(&s->ring, position);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader in = {data, size, 0};
    fz_state s;
    s.max_depth = 1 + fz_u8(&in) % 24;
    uint32_t thread_slots = 1 + fz_u8(&in) % 8;
    int64_t interval_ns = 1 + fz_u16(&in);
    int64_t base_ns = (int64_t)fz_u32(&in);
    int fill_gaps = (int)(base_ns & 1); /* the wall clock's resolver, or the cpu clock's */
    PyObject *codes[4];
    int32_t *lines[FZ_MAX_POOL];
#ifdef FZ_LINES
    /* Up to four code objects with tables from the input. */
    s.code_count = 1 + fz_u8(&in) % 4;
    for (int i = 0; i < s.code_count; i++) {
        PyObject *base = fz_pool[fz_u8(&in) % fz_pool_count];
        size_t length = fz_u8(&in) % 64;
        size_t available = in.at < in.size ? in.size - in.at : 0;
        length = length < available ? length : available;
        PyObject *table = PyBytes_FromStringAndSize((const char *)data + in.at, (Py_ssize_t)length);
        in.at += length;
        codes[i] = call("with_table", Py_BuildValue("(ON)", base, table));
        if (codes[i] == NULL) {
            PyErr_Print();
            abort();
        }
        lines[i] = NULL;
    }
    s.codes = codes;
#else
    (void)codes;
    s.code_count = fz_pool_count;
    s.codes = fz_pool;
    for (int i = 0; i < fz_pool_count; i++) {
        lines[i] = expected_lines[i];
    }
#endif
    s.lines = lines;
    memset(fz_last_record, 0, sizeof(fz_last_record));
    if (sp_ring_init(&s.ring, RING_CAPACITY, s.max_depth) != 0 ||
        sp_resolver_init(&s.resolver, thread_slots, s.max_depth) != 0) {
        abort();
    }
    int64_t last_tick = 0;
    while (fz_more(&in)) {
        uint8_t op = fz_u8(&in);
        if (op % 8 < 4) {
            add_record(&s, &in);
        } else if (op % 8 < 6) {
            repeat_record(&s);
        } else {
            last_tick += op >> 4;
            sp_resolver_collect(&s.resolver, &s.ring, base_ns, interval_ns, last_tick, fill_gaps);
            check_samples(&s);
            check_raw_stacks(&s);
            if (op % 8 == 7 && sp_resolver_reset_interning(&s.resolver) != 0) {
                abort();
            }
        }
    }
    sp_resolver_collect(&s.resolver, &s.ring, base_ns, interval_ns, last_tick + 1, fill_gaps);
    check_samples(&s);
#ifdef FZ_LINES
    /* As the code watcher does before a code object goes. */
    for (int i = 0; i < s.code_count; i++) {
        sp_resolver_forget_code(&s.resolver, codes[i]);
    }
#endif
    sp_resolver_destroy(&s.resolver);
    sp_ring_destroy(&s.ring);
#ifdef FZ_LINES
    for (int i = 0; i < s.code_count; i++) {
        Py_DECREF(codes[i]);
    }
#endif
    return 0;
}
