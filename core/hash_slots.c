/* Open-addressing slots shared by the source index and the .metadata indexes. */
#include <stdlib.h>
#include "hash_slots.h"

uint32_t *mf_slots_new(size_t n, size_t *n_slots)
{
    size_t p = 16;
    if (n > (SIZE_MAX / sizeof(uint32_t) - 2) / 4 || n >= UINT32_MAX)
        return NULL;
    while (p < 2 * n + 2)
        p <<= 1;
    *n_slots = p;
    return calloc(p, sizeof(uint32_t));
}

size_t mf_slots_find(const uint32_t *slots, size_t n_slots, uint64_t h, int (*same)(const void *ctx, size_t entry),
                     const void *ctx)
{
    size_t mask = n_slots - 1;
    for (size_t s = (size_t)h & mask;; s = (s + 1) & mask)
        if (slots[s] == 0 || (same && same(ctx, slots[s] - 1)))
            return s;
}
