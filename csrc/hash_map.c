#include "hash_map.h"

#include <stdlib.h>
#include <string.h>


uint64_t sp_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

int sp_map_init(sp_u64_map *map, uint64_t capacity)
{
    map->keys = calloc(capacity, sizeof(uint64_t));
    map->values = calloc(capacity, sizeof(uint64_t));
    map->capacity = capacity;
    map->count = 0;
    return map->keys && map->values ? 0 : -1;
}

void sp_map_free(sp_u64_map *map)
{
    free(map->keys);
    free(map->values);
    memset(map, 0, sizeof(*map));
}

uint64_t sp_map_get(const sp_u64_map *map, uint64_t key)
{
    uint64_t mask = map->capacity - 1;
    for (uint64_t i = sp_mix64(key) & mask;; i = (i + 1) & mask) {
        if (map->keys[i] == key) {
            return map->values[i];
        }
        if (map->keys[i] == 0) {
            return 0;
        }
    }
}

static int map_grow(sp_u64_map *map)
{
    sp_u64_map bigger;
    if (sp_map_init(&bigger, map->capacity * 2) != 0) {
        sp_map_free(&bigger);
        return -1;
    }
    for (uint64_t i = 0; i < map->capacity; i++) {
        if (map->keys[i] != 0) {
            sp_map_put(&bigger, map->keys[i], map->values[i]);
        }
    }
    sp_map_free(map);
    *map = bigger;
    return 0;
}

int sp_map_put(sp_u64_map *map, uint64_t key, uint64_t value)
{
    if ((map->count + 1) * 4 > map->capacity * 3 && map_grow(map) != 0) {
        return -1;
    }
    uint64_t mask = map->capacity - 1;
    for (uint64_t i = sp_mix64(key) & mask;; i = (i + 1) & mask) {
        if (map->keys[i] == key) {
            map->values[i] = value;
            return 0;
        }
        if (map->keys[i] == 0) {
            map->keys[i] = key;
            map->values[i] = value;
            map->count++;
            return 0;
        }
    }
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
void sp_map_remove(sp_u64_map *map, uint64_t key)
{
    uint64_t mask = map->capacity - 1;
    uint64_t i = sp_mix64(key) & mask;
    while (map->keys[i] != key) {
        if (map->keys[i] == 0) {
            return;
        }
        i = (i + 1) & mask;
    }
    uint64_t hole = i;
    for (uint64_t j = (hole + 1) & mask; map->keys[j] != 0; j = (j + 1) & mask) {
        uint64_t home = sp_mix64(map->keys[j]) & mask;
        /* move j into the hole if its home is not cyclically in (hole, j] */
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            map->keys[hole] = map->keys[j];
            map->values[hole] = map->values[j];
            hole = j;
        }
    }
    map->keys[hole] = 0;
    map->values[hole] = 0;
    map->count--;
}

void sp_map_clear(sp_u64_map *map)
{
    memset(map->keys, 0, map->capacity * sizeof(uint64_t));
    memset(map->values, 0, map->capacity * sizeof(uint64_t));
    map->count = 0;
}
