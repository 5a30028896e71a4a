/* Random puts, gets and removes against a plain array as the reference:
 * backward-shift deletion must keep every other key reachable. */
#include <stdio.h>
#include <stdlib.h>

#include "hash_map.h"

#define KEYS 4096
#define OPERATIONS 2000000

int main(void)
{
    sp_u64_map map;
    if (sp_map_init(&map, 16) != 0) {
        return 2;
    }
    static uint64_t reference[KEYS]; /* value, 0 = absent */
    uint64_t state = 88172645463325252ULL;
    for (int op = 0; op < OPERATIONS; op++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        /* few distinct keys: dense clusters, many collisions */
        uint64_t index = state % KEYS;
        uint64_t key = (index + 1) * 0x10000; /* never 0 */
        switch ((state >> 32) % 3) {
        case 0:
            if (sp_map_put(&map, key, op + 1) != 0) {
                return 2;
            }
            reference[index] = (uint64_t)op + 1;
            break;
        case 1:
            sp_map_remove(&map, key);
            reference[index] = 0;
            break;
        default:
            if (sp_map_get(&map, key) != reference[index]) {
                fprintf(stderr, "op %d: key %llu is %llu, expected %llu\n", op,
                        (unsigned long long)key, (unsigned long long)sp_map_get(&map, key),
                        (unsigned long long)reference[index]);
                return 1;
            }
        }
    }
    uint64_t present = 0;
    for (int i = 0; i < KEYS; i++) {
        present += reference[i] != 0;
        if (sp_map_get(&map, (uint64_t)(i + 1) * 0x10000) != reference[i]) {
            fprintf(stderr, "final check failed for %d\n", i);
            return 1;
        }
    }
    if (present != map.count) {
        fprintf(stderr, "count %llu, expected %llu\n", (unsigned long long)map.count,
                (unsigned long long)present);
        return 1;
    }
    printf("%llu keys present, capacity %llu\n", (unsigned long long)present,
           (unsigned long long)map.capacity);
    sp_map_free(&map);
    return 0;
}
