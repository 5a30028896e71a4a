/* A bounded lock-free queue of fixed-size sample records: many producers
 * (signal handlers, the ticker thread), one consumer (whoever holds the
 * GIL and drains). Producers never block: a full queue drops the record and
 * counts it. Based on Dmitry Vyukov's bounded MPMC queue (per-slot sequence
 * numbers), which needs no allocation and no lock on the producer side. */
#ifndef SIGPROF_RING_BUFFER_H
#define SIGPROF_RING_BUFFER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* What the signal handler copies per frame: enough to name it later. The
 * code pointer is never dereferenced until resolution, under the GIL, after
 * code_lifetime.h guarantees it is still the same object. */
typedef struct {
    void *code;
    int32_t instr_offset; /* byte offset of the current instruction, or -1 */
    int32_t first_lineno; /* co_firstlineno at capture, checked at resolution */
} sp_frame_ref;

typedef enum {
    SP_RECORD_SIGNAL_SAMPLE = 1, /* taken by the thread itself, in the handler */
    SP_RECORD_IDLE_START = 2,    /* a blocked thread's stack, taken by the ticker */
    SP_RECORD_IDLE_END = 3,      /* that thread ran again at `tick`: stop repeating */
    SP_RECORD_MARK = 4,          /* the thread crossed a boundary (a profiling span's
                                  * start or end): no gap is filled across it */
} sp_record_kind;

enum {
    SP_RECORD_TRUNCATED = 1,
    SP_RECORD_FAULTED = 2, /* the walk hit freed memory: the stack is unknown */
};

typedef struct {
    int64_t timestamp_ns; /* CLOCK_MONOTONIC */
    int64_t tick;         /* wall-clock tick number (idle records only) */
    uint64_t thread_ident;
    uint32_t slot;        /* thread registry slot */
    uint16_t kind;
    uint16_t flags;
    uint32_t depth;
    uint32_t merged;      /* timer expirations merged into this signal (si_overrun) */
    uint32_t generation;  /* the slot's: tells a thread from the next one in the slot */
    sp_frame_ref frames[]; /* leaf first, `depth` of them */
} sp_record;

typedef struct {
    unsigned char *memory;
    size_t slot_size;
    uint64_t capacity; /* a power of two */
    uint32_t max_depth;
    _Atomic uint64_t head; /* next position producers claim */
    uint64_t tail;         /* next position the consumer reads */
    _Atomic uint64_t dropped;
} sp_ring;

/* Allocates capacity slots of room for max_depth frames each. 0 or -1 (ENOMEM). */
int sp_ring_init(sp_ring *ring, uint64_t capacity, uint32_t max_depth);
void sp_ring_destroy(sp_ring *ring);
/* Empties the ring; only when no producer can run (stopped, or after fork). */
void sp_ring_reset(sp_ring *ring);

/* Producer side, async-signal-safe. Returns NULL (and counts a drop) when full. */
sp_record *sp_ring_reserve(sp_ring *ring, uint64_t *position);
void sp_ring_commit(sp_ring *ring, uint64_t position);

/* Consumer side (one consumer at a time). */
const sp_record *sp_ring_peek(sp_ring *ring);
void sp_ring_pop(sp_ring *ring);
int sp_ring_has_pending(sp_ring *ring);

#endif
