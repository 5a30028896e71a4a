#include "python_internal.h"

#include "intern.h"

#include <stdlib.h>
#include <string.h>

struct sp_stack_entry {
    uint64_t offset;
    uint32_t length;
    uint32_t hash;
};

#define SP_KEY_UNKNOWN ((1ULL << 63) | 1)
#define SP_KEY_TRUNCATED ((1ULL << 63) | 2)

/* ---- growable arrays ---- */

static int reserve(void **items, uint64_t *capacity, uint64_t needed, size_t item_size)
{
    if (needed <= *capacity) {
        return 0;
    }
    uint64_t new_capacity = *capacity ? *capacity : 64;
    while (new_capacity < needed) {
        new_capacity *= 2;
    }
    void *grown = realloc(*items, new_capacity * item_size);
    if (grown == NULL) {
        return -1;
    }
    *items = grown;
    *capacity = new_capacity;
    return 0;
}

/* ---- frames ---- */

static int64_t add_frame(sp_resolver *r, const sp_frame_entry *entry)
{
    if (reserve((void **)&r->frames, &r->frame_capacity, r->frame_count + 1, sizeof(sp_frame_entry))) {
        return -1;
    }
    uint64_t id = r->frame_count;
    if (sp_map_put(&r->frame_ids, entry->key, id + 1) != 0) {
        return -1;
    }
    r->frames[id] = *entry;
    Py_XINCREF(entry->name);
    Py_XINCREF(entry->filename);
    r->frame_count++;
    return (int64_t)id;
}

static int64_t synthetic_frame(sp_resolver *r, uint64_t key, sp_frame_kind kind)
{
    uint64_t found = sp_map_get(&r->frame_ids, key);
    if (found) {
        return (int64_t)found - 1;
    }
    sp_frame_entry entry = {NULL, NULL, 0, 0, kind, key};
    return add_frame(r, &entry);
}

#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030B0000
/* 3.10's decoder skips entries that advance no address without checking for
 * the table's end: a table whose last entry advances none (code.replace()
 * can make one, the compiler does not) has it read past the bytes until it
 * crashes (found by tests/fuzz). */
static int linetable_is_safe(PyCodeObject *code)
{
    Py_ssize_t length = PyBytes_GET_SIZE(code->co_linetable);
    const unsigned char *table = (const unsigned char *)PyBytes_AS_STRING(code->co_linetable);
    return length == 0 || table[(length - 1) & ~(Py_ssize_t)1] != 0;
}
#else
static int linetable_is_safe(PyCodeObject *code)
{
    (void)code;
    return 1;
}
#endif

static int32_t line_for(PyCodeObject *code, int32_t instr_offset)
{
#if PY_VERSION_HEX >= 0x030B0000
    Py_ssize_t code_bytes = _PyCode_NBYTES(code);
#else
    Py_ssize_t code_bytes = PyBytes_GET_SIZE(code->co_code);
#endif
    /* PyCode_Addr2Line requires an offset within the code: 3.11 indexes its
     * line array with it unchecked (a crash, found by tests/fuzz), 3.9 answers
     * the last line. A stale frame can give any offset: name the def line. */
    if (instr_offset < 0 || instr_offset >= code_bytes || !linetable_is_safe(code)) {
        return code->co_firstlineno;
    }
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: once a code object has been instrumented (sys.settrace,
     * sys.monitoring: coverage, debuggers), PyCode_Addr2Line answers from
     * per-instruction data, -1 inside an instruction's cache entries; the
     * location call reads the line table itself, as co_lines() does (found
     * by tests/fuzz). */
    int line, end_line, column, end_column;
    PyCode_Addr2Location(code, instr_offset, &line, &end_line, &column, &end_column);
#else
    int line = PyCode_Addr2Line(code, instr_offset);
#endif
    return line > 0 ? line : code->co_firstlineno;
}

static int64_t intern_frame(sp_resolver *r, const sp_frame_ref *ref)
{
    PyCodeObject *code = (PyCodeObject *)ref->code;
    uint64_t serial = sp_map_get(&r->code_serials, (uint64_t)(uintptr_t)code);
    uint64_t key = 0;
    if (serial) {
        key = (serial << 32) | (uint32_t)ref->instr_offset;
        uint64_t found = sp_map_get(&r->frame_ids, key);
        if (found) {
            return (int64_t)found - 1;
        }
    }
    /* First sight of this (code, offset). The code object is alive (see
     * code_lifetime.h); check it is what the handler saw all the same. */
    if (code == NULL || Py_TYPE(code) != &PyCode_Type || code->co_firstlineno != ref->first_lineno) {
        r->unresolved_frames++;
        return synthetic_frame(r, SP_KEY_UNKNOWN, SP_FRAME_UNKNOWN);
    }
    if (!serial) {
        serial = ++r->next_code_serial;
        if (sp_map_put(&r->code_serials, (uint64_t)(uintptr_t)code, serial) != 0) {
            return -1;
        }
        key = (serial << 32) | (uint32_t)ref->instr_offset;
    }
    sp_frame_entry entry;
#if PY_VERSION_HEX >= 0x030B0000
    entry.name = code->co_qualname;
#else
    entry.name = code->co_name;
#endif
    entry.filename = code->co_filename;
    entry.lineno = line_for(code, ref->instr_offset);
    entry.first_lineno = code->co_firstlineno;
    entry.kind = SP_FRAME_CODE;
    entry.key = key;
    return add_frame(r, &entry);
}

/* ---- stacks ---- */

static uint32_t hash_frames(const int32_t *ids, uint32_t length)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ length;
    for (uint32_t i = 0; i < length; i++) {
        h = sp_mix64(h ^ (uint64_t)(uint32_t)ids[i]);
    }
    return (uint32_t)h;
}

static int stack_index_rebuild(sp_resolver *r, uint64_t capacity)
{
    int32_t *index = malloc(capacity * sizeof(int32_t));
    if (index == NULL) {
        return -1;
    }
    memset(index, 0xFF, capacity * sizeof(int32_t));
    for (uint64_t s = 0; s < r->stack_count; s++) {
        uint64_t i = r->stacks[s].hash & (capacity - 1);
        while (index[i] >= 0) {
            i = (i + 1) & (capacity - 1);
        }
        index[i] = (int32_t)s;
    }
    free(r->stack_index);
    r->stack_index = index;
    r->stack_index_capacity = capacity;
    return 0;
}

static int64_t intern_stack(sp_resolver *r, const int32_t *ids, uint32_t length)
{
    uint32_t hash = hash_frames(ids, length);
    uint64_t mask = r->stack_index_capacity - 1;
    uint64_t i = hash & mask;
    for (; r->stack_index[i] >= 0; i = (i + 1) & mask) {
        const struct sp_stack_entry *s = &r->stacks[r->stack_index[i]];
        if (s->hash == hash && s->length == length &&
            (length == 0 || memcmp(&r->stack_frames[s->offset], ids, length * sizeof(int32_t)) == 0)) {
            return r->stack_index[i];
        }
    }
    if (reserve((void **)&r->stacks, &r->stack_capacity, r->stack_count + 1,
                sizeof(struct sp_stack_entry)) ||
        reserve((void **)&r->stack_frames, &r->stack_frames_capacity,
                r->stack_frames_count + length, sizeof(int32_t))) {
        return -1;
    }
    uint64_t id = r->stack_count++;
    r->stacks[id].offset = r->stack_frames_count;
    r->stacks[id].length = length;
    r->stacks[id].hash = hash;
    if (length > 0) { /* an empty first stack: stack_frames is still NULL */
        memcpy(&r->stack_frames[r->stack_frames_count], ids, length * sizeof(int32_t));
        r->stack_frames_count += length;
    }
    r->stack_index[i] = (int32_t)id;
    if (r->stack_count * 2 > r->stack_index_capacity &&
        stack_index_rebuild(r, r->stack_index_capacity * 2) != 0) {
        return -1;
    }
    return (int64_t)id;
}

/* ---- whole records ---- */

static uint64_t hash_record(const sp_frame_ref *frames, uint32_t depth, uint32_t flags)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ depth ^ ((uint64_t)flags << 32);
    for (uint32_t i = 0; i < depth; i++) {
        h = sp_mix64(h ^ (uint64_t)(uintptr_t)frames[i].code ^
                     ((uint64_t)(uint32_t)frames[i].instr_offset << 32) ^
                     (uint64_t)(uint32_t)frames[i].first_lineno);
    }
    return h ? h : 1; /* 0 marks an empty slot of the map */
}

static int64_t raw_stack_lookup(const sp_resolver *r, uint64_t key, const sp_frame_ref *frames,
                                uint32_t depth, uint32_t flags)
{
    uint64_t found = sp_map_get(&r->raw_ids, key);
    if (!found) {
        return -1;
    }
    const struct sp_raw_stack *raw = &r->raw_stacks[found - 1];
    if (raw->length != depth || raw->flags != flags ||
        (depth > 0 && memcmp(&r->raw_frames[raw->offset], frames, depth * sizeof(sp_frame_ref)) != 0)) {
        return -1; /* another record with the same hash: resolved frame by frame */
    }
    return raw->stack_id;
}

/* Out of memory here only means the next repeat is resolved frame by frame. */
static void raw_stack_remember(sp_resolver *r, uint64_t key, const sp_frame_ref *frames,
                               uint32_t depth, uint32_t flags, int64_t stack_id)
{
    if (sp_map_get(&r->raw_ids, key) ||
        reserve((void **)&r->raw_stacks, &r->raw_capacity, r->raw_count + 1,
                sizeof(struct sp_raw_stack)) ||
        reserve((void **)&r->raw_frames, &r->raw_frames_capacity, r->raw_frames_count + depth,
                sizeof(sp_frame_ref)) ||
        sp_map_put(&r->raw_ids, key, r->raw_count + 1) != 0) {
        return;
    }
    struct sp_raw_stack *raw = &r->raw_stacks[r->raw_count++];
    raw->offset = r->raw_frames_count;
    raw->length = depth;
    raw->flags = flags;
    raw->stack_id = (int32_t)stack_id;
    if (depth > 0) {
        memcpy(&r->raw_frames[r->raw_frames_count], frames, depth * sizeof(sp_frame_ref));
        r->raw_frames_count += depth;
    }
}

static void raw_stacks_forget(sp_resolver *r)
{
    sp_map_clear(&r->raw_ids);
    r->raw_count = 0;
    r->raw_frames_count = 0;
}

static int64_t intern_record(sp_resolver *r, const sp_record *record)
{
    uint32_t length = 0;
    if (record->flags & SP_RECORD_FAULTED) {
        int64_t frame = synthetic_frame(r, SP_KEY_UNKNOWN, SP_FRAME_UNKNOWN);
        if (frame < 0) {
            return -1;
        }
        r->unresolved_frames++;
        r->scratch[0] = (int32_t)frame;
        return intern_stack(r, r->scratch, 1);
    }
    /* Only sp_walk_stack writes depth, and it stops at max_depth; the clamp
     * keeps a corrupted record from reading past its ring slot and writing
     * past scratch (found by tests/fuzz). */
    uint32_t depth = record->depth < (uint32_t)r->scratch_capacity ? record->depth
                                                                    : (uint32_t)r->scratch_capacity - 1;
    uint32_t flags = record->flags & SP_RECORD_TRUNCATED;
    uint64_t key = hash_record(record->frames, depth, flags);
    int64_t known = raw_stack_lookup(r, key, record->frames, depth, flags);
    if (known >= 0) {
        return known;
    }
    uint64_t unresolved_before = r->unresolved_frames;
    for (uint32_t i = 0; i < depth; i++) {
        int64_t frame = intern_frame(r, &record->frames[i]);
        if (frame < 0) {
            return -1;
        }
        r->scratch[length++] = (int32_t)frame;
    }
    if (record->flags & SP_RECORD_TRUNCATED) {
        int64_t frame = synthetic_frame(r, SP_KEY_TRUNCATED, SP_FRAME_TRUNCATED);
        if (frame < 0) {
            return -1;
        }
        r->scratch[length++] = (int32_t)frame;
    }
    int64_t stack = intern_stack(r, r->scratch, length);
    /* A frame that did not resolve may resolve the next time (and is
     * counted each time): such a record is not remembered. */
    if (stack >= 0 && r->unresolved_frames == unresolved_before) {
        raw_stack_remember(r, key, record->frames, depth, flags, stack);
    }
    return stack;
}

/* ---- samples ---- */

static int emit(sp_resolver *r, int64_t timestamp_ns, uint64_t ident, int64_t stack_id)
{
    if (reserve((void **)&r->samples, &r->sample_capacity, r->sample_count + 1,
                sizeof(sp_sample_entry))) {
        return -1;
    }
    sp_sample_entry *sample = &r->samples[r->sample_count++];
    sample->timestamp_ns = timestamp_ns;
    sample->thread_ident = ident;
    sample->stack_id = (int32_t)stack_id;
    sample->reserved = 0;
    r->emitted_samples++;
    /* per sample, like emitted_samples: a stack repeated for a blocked thread
     * or for a signal's merged expirations counts each time */
    const struct sp_stack_entry *stack = &r->stacks[stack_id];
    if (stack->length > 0 &&
        r->frames[r->stack_frames[stack->offset + stack->length - 1]].kind == SP_FRAME_TRUNCATED) {
        r->truncated_samples++;
    }
    return 0;
}

/* The thread's last sample in this registry slot, forgotten when the slot
 * carries another thread. */
static sp_last_sample *last_sample_of(sp_resolver *r, const sp_record *record)
{
    if (record->slot >= r->slot_count) {
        return NULL;
    }
    sp_last_sample *last = &r->last_sample[record->slot];
    if (last->thread_ident != record->thread_ident || last->generation != record->generation) {
        last->thread_ident = record->thread_ident;
        last->generation = record->generation;
        last->timestamp_ns = INT64_MIN;
        last->stack_id = -1;
        last->on_tick = 0;
    }
    return last;
}

/* `count` samples, the last at `now` with `stack_id`, the others evenly back
 * to `since` (exclusive). With a `previous_stack` (the stack of the sample at
 * `since`; -1: none), each earlier sample takes the stack of the nearer of
 * the two, a tie going to the earlier: the stack changed somewhere in the
 * gap, and code that ran after it must not be dated before it by more than
 * half the gap. */
static int emit_spread(sp_resolver *r, uint64_t ident, int64_t stack_id, int64_t previous_stack,
                       int64_t since, int64_t now, uint32_t count)
{
    int64_t step = (now - since) / (int64_t)count;
    for (uint32_t i = count - 1; i > 0; i--) {
        int64_t timestamp = now - (int64_t)i * step;
        /* sample count - i of count, decided exactly: a rounded timestamp
         * would miss the tie at the halfway sample */
        int nearer_previous = previous_stack >= 0 && 2 * (uint64_t)(count - i) <= count;
        if (emit(r, timestamp, ident, nearer_previous ? previous_stack : stack_id) != 0) {
            return -1;
        }
    }
    return emit(r, now, ident, stack_id);
}

/* The wall clock's tick at or before t. */
static int64_t tick_of(const sp_resolver *r, int64_t t)
{
    int64_t d = t - r->tick_base_ns;
    return d >= 0 ? d / r->interval_ns : -((-d + r->interval_ns - 1) / r->interval_ns);
}

/* The wall clock owes a thread about one sample per tick. A sample at `now`
 * stands for the time since the thread's last one (it was runnable but not
 * running, or it blocked and a pass read it later): the thread's stack only
 * changes while it runs, and it ran less than one interval of CPU time in
 * that gap without a timer sample. A blocked thread's stack takes the whole
 * gap; a signal's shares it with the last sample's. by_grid (the last sample
 * was dated at a tick): the ticks passed since, none when none did (the
 * thread's last stack then becomes this one: the next gap begins in it);
 * otherwise the intervals since, rounded, at least one (a running thread's
 * signals sample its CPU time evenly). The cpu clock's (fill_gaps 0) and a
 * thread's first: `at_least`, dated back from now. */
static uint32_t samples_owed(const sp_resolver *r, const sp_last_sample *last, int64_t now,
                             uint32_t at_least, int fill_gaps, int by_grid, int64_t *since)
{
    *since = now - (int64_t)at_least * r->interval_ns;
    if (last == NULL || last->timestamp_ns == INT64_MIN || last->timestamp_ns >= now) {
        return at_least;
    }
    if (!fill_gaps) {
        /* squeezed to stay after the thread's previous sample */
        if (last->timestamp_ns > *since) {
            *since = last->timestamp_ns;
        }
        return at_least;
    }
    int64_t owed = by_grid ? tick_of(r, now) - tick_of(r, last->timestamp_ns)
                           : (now - last->timestamp_ns + r->interval_ns / 2) / r->interval_ns;
    *since = last->timestamp_ns;
    if (!by_grid && owed < 1) {
        owed = 1;
    }
    return owed > SP_MAX_MERGED + 1 ? SP_MAX_MERGED + 1 : (uint32_t)owed;
}

/* The `count` ticks after the one of `since`, each dated at its tick. With a
 * `previous_stack` (the stack of the sample at `since`; -1: none), the first
 * half of them take it, a tie going to the earlier: the stack changed
 * somewhere in the gap, and code that ran after it must not be dated before
 * it by more than half the gap. */
static int emit_ticks(sp_resolver *r, uint64_t ident, int64_t stack_id, int64_t previous_stack,
                      int64_t since, uint32_t count)
{
    int64_t first = tick_of(r, since) + 1;
    for (uint32_t i = 1; i <= count; i++) {
        int nearer_previous = previous_stack >= 0 && 2 * (uint64_t)i <= count;
        int64_t timestamp = r->tick_base_ns + (first + (int64_t)i - 1) * r->interval_ns;
        if (emit(r, timestamp, ident, nearer_previous ? previous_stack : stack_id) != 0) {
            return -1;
        }
    }
    return 0;
}

static int repeat_idle(sp_resolver *r, sp_idle_thread *idle, sp_last_sample *last, int64_t until_tick,
                       int64_t base_ns, int64_t interval_ns)
{
    for (; idle->next_tick <= until_tick; idle->next_tick++) {
        int64_t timestamp = base_ns + idle->next_tick * interval_ns;
        if (emit(r, timestamp, idle->thread_ident, idle->stack_id)) {
            return -1;
        }
        if (last != NULL && last->thread_ident == idle->thread_ident &&
            last->generation == idle->generation) {
            last->timestamp_ns = timestamp;
            last->stack_id = idle->stack_id;
            last->on_tick = 1;
        }
    }
    return 0;
}

/* A signal whose CPU timer expired `merged` more times while it was pending
 * stands for merged + 1 samples of its stack: without them the cpu clock
 * loses most of its samples when the thread shares its CPU (the kernel checks
 * CPU timers at the scheduler tick only while the thread runs). They are
 * back-dated one interval apart (the least wall time that CPU time took). In
 * the wall clock the gap since the thread's last sample is filled instead
 * (samples_owed). */
static int emit_signal_sample(sp_resolver *r, const sp_record *record, sp_last_sample *last,
                              int64_t stack_id, int fill_gaps)
{
    uint32_t merged = record->merged < SP_MAX_MERGED ? record->merged : SP_MAX_MERGED;
    int64_t since;
    int by_grid = last != NULL && last->on_tick;
    uint32_t count = samples_owed(r, last, record->timestamp_ns, merged + 1, fill_gaps, by_grid, &since);
    /* a filled gap (wall clock) ends in this stack and begins in the last one */
    int filled = fill_gaps && last != NULL && last->timestamp_ns == since;
    int64_t previous_stack = filled ? last->stack_id : -1;
    if (count == 0) {
        last->stack_id = stack_id; /* the tick is the blocked stack's already */
        return 0;
    }
    if (last != NULL) {
        last->timestamp_ns = record->timestamp_ns;
        last->stack_id = stack_id;
        last->on_tick = 0;
    }
    return filled && by_grid
               ? emit_ticks(r, record->thread_ident, stack_id, previous_stack, since, count)
               : emit_spread(r, record->thread_ident, stack_id, previous_stack, since, record->timestamp_ns,
                             count);
}

/* A blocked thread's stack, read at `record->tick`, stands for the time since
 * its last sample as well (samples_owed): the thread ran less than an
 * interval of CPU time in that gap, and spent the rest of it blocked there. */
static int emit_idle_start(sp_resolver *r, const sp_record *record, sp_last_sample *last,
                           int64_t stack_id, int fill_gaps)
{
    int64_t since;
    uint32_t count = samples_owed(r, last, record->timestamp_ns, 1, fill_gaps, 1, &since);
    int by_ticks = fill_gaps && last != NULL && last->timestamp_ns == since;
    if (count == 0) {
        last->stack_id = stack_id;
        return 0;
    }
    if (last != NULL) {
        last->timestamp_ns = record->timestamp_ns;
        last->stack_id = stack_id;
        last->on_tick = 1;
    }
    return by_ticks ? emit_ticks(r, record->thread_ident, stack_id, -1, since, count)
                    : emit_spread(r, record->thread_ident, stack_id, -1, since, record->timestamp_ns, count);
}

/* The thread crossed a boundary at `record->timestamp_ns`. The wall clock
 * fills the gap since its last sample up to the mark with that sample's
 * stack (the stack the thread had on this side), and begins the next gap
 * at the mark with no stack, so the next sample's stack takes all of it. In
 * both clocks a later signal's samples are dated after the mark. */
static int mark_boundary(sp_resolver *r, const sp_record *record, sp_last_sample *last, int fill_gaps)
{
    int64_t mark = record->timestamp_ns;
    if (last->timestamp_ns != INT64_MIN && last->timestamp_ns >= mark) {
        return 0;
    }
    if (fill_gaps && last->timestamp_ns != INT64_MIN && last->stack_id >= 0) {
        int64_t owed = tick_of(r, mark) - tick_of(r, last->timestamp_ns);
        if (owed > SP_MAX_MERGED) {
            owed = SP_MAX_MERGED;
        }
        if (owed > 0 && emit_ticks(r, record->thread_ident, last->stack_id, -1, last->timestamp_ns,
                                   (uint32_t)owed) != 0) {
            return -1;
        }
    }
    last->timestamp_ns = mark;
    last->stack_id = -1;
    last->on_tick = 0;
    return 0;
}

int sp_resolver_collect(sp_resolver *r, sp_ring *ring, int64_t tick_base_ns, int64_t interval_ns,
                        int64_t last_tick, int fill_gaps)
{
    const sp_record *record;
    int status = 0;
    r->tick_base_ns = tick_base_ns;
    r->interval_ns = interval_ns;
    while ((record = sp_ring_peek(ring)) != NULL) {
        sp_idle_thread *idle = record->slot < r->slot_count ? &r->idle[record->slot] : NULL;
        sp_last_sample *last = last_sample_of(r, record);
        if (record->kind == SP_RECORD_IDLE_END) {
            if (idle != NULL && idle->active) {
                status |= repeat_idle(r, idle, last, record->tick - 1, tick_base_ns, interval_ns);
                idle->active = 0;
            }
        } else {
            if ((record->kind == SP_RECORD_SIGNAL_SAMPLE || record->kind == SP_RECORD_MARK) && idle != NULL &&
                idle->active) {
                /* Running again, which the slow pass has not seen yet: it
                 * woke at the latest when the CPU time this signal stands for
                 * began (and repeats never pass the last pass's tick). */
                uint32_t merged = record->merged < SP_MAX_MERGED ? record->merged : SP_MAX_MERGED;
                int64_t woke_ns = record->timestamp_ns - (int64_t)(merged + 1) * interval_ns;
                int64_t woke_tick = woke_ns < tick_base_ns ? -1 : (woke_ns - tick_base_ns) / interval_ns;
                status |= repeat_idle(r, idle, last, woke_tick < last_tick ? woke_tick : last_tick,
                                      tick_base_ns, interval_ns);
                idle->active = 0;
            }
            if (record->kind == SP_RECORD_MARK) {
                if (last != NULL && mark_boundary(r, record, last, fill_gaps) != 0) {
                    status = -1;
                }
                sp_ring_pop(ring);
                continue;
            }
            int64_t stack = intern_record(r, record);
            int emitted = stack < 0 ? -1
                          : record->kind == SP_RECORD_SIGNAL_SAMPLE
                              ? emit_signal_sample(r, record, last, stack, fill_gaps)
                          : record->kind == SP_RECORD_IDLE_START
                              ? emit_idle_start(r, record, last, stack, fill_gaps)
                              : emit(r, record->timestamp_ns, record->thread_ident, stack);
            if (emitted != 0) {
                status = -1;
                atomic_fetch_add(&ring->dropped, 1);
            } else if (record->kind == SP_RECORD_SIGNAL_SAMPLE) {
                uint64_t count = sp_map_get(&r->signal_counts, record->thread_ident);
                sp_map_put(&r->signal_counts, record->thread_ident, count + 1);
            } else if (record->kind == SP_RECORD_IDLE_START && idle != NULL) {
                idle->active = 1;
                idle->next_tick = record->tick + 1;
                idle->stack_id = (int32_t)stack;
                idle->thread_ident = record->thread_ident;
                idle->generation = record->generation;
            }
        }
        sp_ring_pop(ring);
    }
    /* Repeat blocked threads up to the last tick only once no record can
     * still be in flight: an IDLE_END for an earlier tick may be behind a
     * slot a producer has claimed but not yet committed. */
    if (atomic_load_explicit(&ring->head, memory_order_acquire) == ring->tail) {
        for (uint32_t slot = 0; slot < r->slot_count; slot++) {
            if (r->idle[slot].active) {
                status |= repeat_idle(r, &r->idle[slot], &r->last_sample[slot], last_tick, tick_base_ns,
                                      interval_ns);
            }
        }
    }
    return status;
}

void sp_resolver_forget_code(sp_resolver *r, void *code)
{
    if (sp_map_get(&r->code_serials, (uint64_t)(uintptr_t)code)) {
        sp_map_remove(&r->code_serials, (uint64_t)(uintptr_t)code);
        raw_stacks_forget(r);
    }
}

sp_sample_entry *sp_resolver_take_samples(sp_resolver *r, uint64_t *count)
{
    sp_sample_entry *samples = r->samples;
    *count = r->sample_count;
    r->samples = NULL;
    r->sample_count = 0;
    r->sample_capacity = 0;
    return samples;
}

/* ---- lifecycle ---- */

/* Everything is emptied before anything is allocated, so that on failure
 * tables_free() frees only what this call made. */
static int tables_init(sp_resolver *r)
{
    memset(&r->frame_ids, 0, sizeof(r->frame_ids));
    memset(&r->raw_ids, 0, sizeof(r->raw_ids));
    r->frames = NULL;
    r->frame_count = r->frame_capacity = 0;
    r->stacks = NULL;
    r->stack_count = r->stack_capacity = 0;
    r->stack_frames = NULL;
    r->stack_frames_count = r->stack_frames_capacity = 0;
    r->stack_index = NULL;
    r->raw_stacks = NULL;
    r->raw_count = r->raw_capacity = 0;
    r->raw_frames = NULL;
    r->raw_frames_count = r->raw_frames_capacity = 0;
    if (sp_map_init(&r->frame_ids, 1024) != 0 || sp_map_init(&r->raw_ids, 1024) != 0) {
        return -1;
    }
    return stack_index_rebuild(r, 1024);
}

static void tables_free(sp_resolver *r)
{
    for (uint64_t i = 0; i < r->frame_count; i++) {
        Py_XDECREF(r->frames[i].name);
        Py_XDECREF(r->frames[i].filename);
    }
    free(r->frames);
    free(r->stacks);
    free(r->stack_frames);
    free(r->stack_index);
    free(r->raw_stacks);
    free(r->raw_frames);
    sp_map_free(&r->frame_ids);
    sp_map_free(&r->raw_ids);
}

int sp_resolver_init(sp_resolver *r, uint32_t thread_slots, uint32_t max_depth)
{
    memset(r, 0, sizeof(*r));
    r->idle = calloc(thread_slots, sizeof(sp_idle_thread));
    r->last_sample = calloc(thread_slots, sizeof(sp_last_sample));
    r->slot_count = thread_slots;
    r->scratch_capacity = (int32_t)max_depth + 1;
    r->scratch = malloc((size_t)r->scratch_capacity * sizeof(int32_t));
    if (r->idle == NULL || r->last_sample == NULL || r->scratch == NULL || sp_map_init(&r->code_serials, 1024) != 0 ||
        sp_map_init(&r->signal_counts, 64) != 0 || tables_init(r) != 0) {
        sp_resolver_destroy(r);
        return -1;
    }
    for (uint32_t slot = 0; slot < thread_slots; slot++) {
        r->last_sample[slot].timestamp_ns = INT64_MIN;
        r->last_sample[slot].stack_id = -1;
    }
    return 0;
}

void sp_resolver_destroy(sp_resolver *r)
{
    tables_free(r);
    sp_map_free(&r->code_serials);
    sp_map_free(&r->signal_counts);
    free(r->samples);
    free(r->idle);
    free(r->last_sample);
    free(r->scratch);
    memset(r, 0, sizeof(*r));
}

/* A stack of the old tables interned into the new ones: its new id, or -1. */
static int64_t carry_stack(sp_resolver *r, const sp_resolver *old, int64_t old_id)
{
    const struct sp_stack_entry *stack = &old->stacks[old_id];
    for (uint32_t i = 0; i < stack->length; i++) {
        const sp_frame_entry *frame = &old->frames[old->stack_frames[stack->offset + i]];
        uint64_t found = sp_map_get(&r->frame_ids, frame->key);
        int64_t id = found ? (int64_t)found - 1 : add_frame(r, frame);
        if (id < 0) {
            return -1;
        }
        r->scratch[i] = (int32_t)id;
    }
    return intern_stack(r, r->scratch, stack->length);
}

int sp_resolver_reset_interning(sp_resolver *r)
{
    sp_resolver old = *r;
    if (tables_init(r) != 0) {
        tables_free(r);
        *r = old;
        return -1;
    }
    /* Out of memory here only ends a repeat early, or a gap's share. */
    for (uint32_t slot = 0; slot < r->slot_count; slot++) {
        sp_idle_thread *idle = &r->idle[slot];
        if (idle->active) {
            idle->stack_id = (int32_t)carry_stack(r, &old, idle->stack_id);
            idle->active = idle->stack_id >= 0;
        }
        /* A chunk is cut where a profiling span ends: the gap after it is
         * still shared with the stack before the cut. */
        sp_last_sample *last = &r->last_sample[slot];
        if (last->stack_id >= 0) {
            last->stack_id = carry_stack(r, &old, last->stack_id);
        }
    }
    tables_free(&old);
    return 0;
}

const sp_frame_entry *sp_resolver_frame(const sp_resolver *r, uint64_t frame_id)
{
    return frame_id < r->frame_count ? &r->frames[frame_id] : NULL;
}

uint32_t sp_resolver_stack_length(const sp_resolver *r, uint64_t stack_id)
{
    return stack_id < r->stack_count ? r->stacks[stack_id].length : 0;
}

int32_t sp_resolver_stack_frame(const sp_resolver *r, uint64_t stack_id, uint32_t index)
{
    return r->stack_frames[r->stacks[stack_id].offset + index];
}

int sp_resolver_signal_bucket(const sp_resolver *r, uint64_t bucket, uint64_t *ident,
                              uint64_t *count)
{
    if (bucket >= r->signal_counts.capacity) {
        return -1;
    }
    *ident = r->signal_counts.keys[bucket];
    *count = r->signal_counts.values[bucket];
    return *ident != 0;
}
