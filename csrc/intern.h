/* Turning ring records into interned samples: each distinct frame and each
 * distinct stack gets a small integer id once, so the Python side receives
 * (timestamp, thread, stack id) per sample plus only the frames and stacks it
 * has not seen. Runs under the GIL (it reads code objects), never in a
 * signal handler. */
#ifndef SIGPROF_INTERN_H
#define SIGPROF_INTERN_H

#include <stdint.h>

#include "hash_map.h"
#include "ring_buffer.h"

typedef struct _object PyObject;

typedef enum {
    SP_FRAME_CODE = 0,
    SP_FRAME_UNKNOWN = 1,   /* could not be resolved safely */
    SP_FRAME_TRUNCATED = 2, /* stands for the frames cut off the root side */
} sp_frame_kind;

typedef struct {
    PyObject *name;     /* co_qualname (3.11+) or co_name; NULL unless SP_FRAME_CODE */
    PyObject *filename; /* co_filename */
    int32_t lineno;
    int32_t first_lineno;
    uint32_t kind;
    uint64_t key;
} sp_frame_entry;

typedef struct {
    int64_t timestamp_ns;
    uint64_t thread_ident;
    int32_t stack_id;
    int32_t reserved;
} sp_sample_entry;

/* A record's frames remembered with the stack they resolved to. */
struct sp_raw_stack {
    uint64_t offset;  /* into raw_frames */
    uint32_t length;  /* frames */
    uint32_t flags;   /* the record's SP_RECORD_TRUNCATED */
    int32_t stack_id;
};

typedef struct {
    int active;
    int64_t next_tick;
    int32_t stack_id;
    uint64_t thread_ident;
    uint32_t generation;
} sp_idle_thread;

/* The last sample of the thread in a registry slot (INT64_MIN: none yet):
 * the samples a signal stands for are dated after it, and in the wall clock
 * the gap since it is filled. Its stack (-1: unknown) takes the filled ticks
 * nearer to it. The slot's generation tells a thread from a later one with
 * the same ident (glibc hands a new thread the stack of one that ended, and
 * the ident is that stack's address). */
typedef struct {
    uint64_t thread_ident;
    uint32_t generation;
    int64_t timestamp_ns;
    int64_t stack_id;
    int on_tick; /* that sample was a blocked thread's, dated at a tick */
} sp_last_sample;

/* A signal never stands for more expirations than this (one second at the
 * highest frequency): a thread that blocked SIGPROF for longer gets no more. */
#define SP_MAX_MERGED 1000

typedef struct {
    sp_u64_map code_serials; /* code address -> serial, forgotten on destroy */
    uint64_t next_code_serial;
    sp_u64_map frame_ids;    /* (serial, offset) -> frame id + 1 */
    sp_frame_entry *frames;
    uint64_t frame_count, frame_capacity;
    int32_t *stack_frames;   /* all stacks' frame ids, concatenated */
    uint64_t stack_frames_count, stack_frames_capacity;
    struct sp_stack_entry *stacks;
    uint64_t stack_count, stack_capacity;
    int32_t *stack_index;    /* open addressing over stacks, -1 empty */
    uint64_t stack_index_capacity;
    /* Records' frames as the handler took them, interned whole: a stack met
     * again costs one hash of the record and one compare, not a look-up per
     * frame. Forgotten with the tables, and whenever a code object seen in
     * them is destroyed (its address may come back as another). */
    sp_u64_map raw_ids;      /* record hash -> raw stack index + 1 */
    struct sp_raw_stack *raw_stacks;
    uint64_t raw_count, raw_capacity;
    sp_frame_ref *raw_frames;
    uint64_t raw_frames_count, raw_frames_capacity;
    sp_sample_entry *samples;
    uint64_t sample_count, sample_capacity;
    sp_idle_thread *idle; /* per registry slot */
    sp_last_sample *last_sample; /* per registry slot */
    uint32_t slot_count;            /* registry slots, the length of both */
    int64_t tick_base_ns, interval_ns; /* the wall clock's ticks, as of the last collect */
    sp_u64_map signal_counts; /* thread ident -> signals received */
    uint64_t emitted_samples, unresolved_frames, truncated_samples;
    int32_t scratch_capacity;
    int32_t *scratch;
} sp_resolver;

int sp_resolver_init(sp_resolver *resolver, uint32_t thread_slots, uint32_t max_depth);
void sp_resolver_destroy(sp_resolver *resolver);

/* Drains the ring. Threads blocked since their IDLE_START are repeated at
 * every tick up to last_tick (tick k is at tick_base_ns + k * interval_ns).
 * With fill_gaps (the wall clock) a thread gets one sample per interval of
 * wall time between its samples, not only those its signals stand for.
 * Returns 0, or -1 when out of memory (records are then dropped and counted). */
int sp_resolver_collect(sp_resolver *resolver, sp_ring *ring, int64_t tick_base_ns,
                        int64_t interval_ns, int64_t last_tick, int fill_gaps);

/* The code object at this address is being destroyed: never match it again. */
void sp_resolver_forget_code(sp_resolver *resolver, void *code);

/* Hands over the samples collected so far (caller frees with free()). */
sp_sample_entry *sp_resolver_take_samples(sp_resolver *resolver, uint64_t *count);

/* Starts ids again from 0 (a new chunk); threads being repeated keep going
 * with their stacks interned afresh, and each thread's last stack is carried
 * too (the gap after it is still shared with it). Only with no untaken
 * samples. */
int sp_resolver_reset_interning(sp_resolver *resolver);

const sp_frame_entry *sp_resolver_frame(const sp_resolver *resolver, uint64_t frame_id);
uint32_t sp_resolver_stack_length(const sp_resolver *resolver, uint64_t stack_id);
int32_t sp_resolver_stack_frame(const sp_resolver *resolver, uint64_t stack_id, uint32_t index);

/* Per-thread signal counts, bucket by bucket: 1 if the bucket holds one,
 * 0 if it is empty, -1 past the last bucket. */
int sp_resolver_signal_bucket(const sp_resolver *resolver, uint64_t bucket, uint64_t *ident,
                              uint64_t *count);

#endif
