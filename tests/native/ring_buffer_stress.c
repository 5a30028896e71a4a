/* Many producer threads, one consumer: every committed record comes out once,
 * in each producer's order; a full ring drops and counts, never blocks. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring_buffer.h"

#define PRODUCERS 6
#define PER_PRODUCER 200000

static sp_ring ring;
static _Atomic int producers_done;
static _Atomic uint64_t given_up;

static void *produce(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        uint64_t position;
        sp_record *record = NULL;
        /* Paced like signal handlers: a full ring is retried a few times
         * (each failure counts a drop), then the record is given up. */
        for (int attempt = 0; attempt < 50 && record == NULL; attempt++) {
            record = sp_ring_reserve(&ring, &position);
            if (record == NULL) {
                sched_yield();
            }
        }
        if (record == NULL) {
            given_up++;
            continue;
        }
        record->slot = id;
        record->tick = i;
        record->depth = 1 + i % 4;
        for (uint32_t d = 0; d < record->depth; d++) {
            record->frames[d].code = (void *)(uintptr_t)(id * 1000003u + i);
            record->frames[d].instr_offset = (int32_t)d;
        }
        sp_ring_commit(&ring, position);
    }
    atomic_fetch_add(&producers_done, 1);
    return NULL;
}

int main(void)
{
    if (sp_ring_init(&ring, 1024, 4) != 0) {
        return 2;
    }
    pthread_t threads[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++) {
        pthread_create(&threads[i], NULL, produce, (void *)i);
    }
    int64_t last[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        last[i] = -1;
    }
    uint64_t consumed = 0;
    for (;;) {
        int done = atomic_load(&producers_done) == PRODUCERS;
        const sp_record *record;
        while ((record = sp_ring_peek(&ring)) != NULL) {
            if (record->slot >= PRODUCERS || record->tick <= last[record->slot]) {
                fprintf(stderr, "out of order: producer %u record %lld after %lld\n", record->slot,
                        (long long)record->tick, (long long)last[record->slot]);
                return 1;
            }
            for (uint32_t d = 0; d < record->depth; d++) {
                if (record->frames[d].code != (void *)(uintptr_t)(record->slot * 1000003u + record->tick) ||
                    record->frames[d].instr_offset != (int32_t)d) {
                    fprintf(stderr, "torn record\n");
                    return 1;
                }
            }
            last[record->slot] = record->tick;
            consumed++;
            sp_ring_pop(&ring);
        }
        if (done && sp_ring_peek(&ring) == NULL) {
            break;
        }
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(threads[i], NULL);
    }
    uint64_t dropped = atomic_load(&given_up);
    if (consumed + dropped != (uint64_t)PRODUCERS * PER_PRODUCER) {
        fprintf(stderr, "lost: consumed %llu + dropped %llu != %d\n", (unsigned long long)consumed,
                (unsigned long long)dropped, PRODUCERS * PER_PRODUCER);
        return 1;
    }
    /* slots are reused: far more records than slots get through */
    if (consumed < 10 * ring.capacity) {
        fprintf(stderr, "only %llu consumed: slots are not being reused\n", (unsigned long long)consumed);
        return 1;
    }
    printf("consumed %llu dropped %llu\n", (unsigned long long)consumed, (unsigned long long)dropped);
    sp_ring_destroy(&ring);
    return 0;
}
