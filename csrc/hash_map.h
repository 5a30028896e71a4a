/* A uint64 -> uint64 map: open addressing with linear probing, key 0 means
 * empty, backward-shift deletion (no tombstones, so lookups stay short under
 * churn). Not for signal handlers: it allocates as it grows. */
#ifndef SIGPROF_HASH_MAP_H
#define SIGPROF_HASH_MAP_H

#include <stdint.h>

typedef struct {
    uint64_t *keys;
    uint64_t *values;
    uint64_t capacity; /* a power of two */
    uint64_t count;
} sp_u64_map;

uint64_t sp_mix64(uint64_t x);
/* 0, or -1 when out of memory. */
int sp_map_init(sp_u64_map *map, uint64_t capacity);
void sp_map_free(sp_u64_map *map);
/* The value for key (nonzero), or 0 if absent. */
uint64_t sp_map_get(const sp_u64_map *map, uint64_t key);
int sp_map_put(sp_u64_map *map, uint64_t key, uint64_t value);
void sp_map_remove(sp_u64_map *map, uint64_t key);
/* Empties the map, keeping its capacity. */
void sp_map_clear(sp_u64_map *map);

#endif
