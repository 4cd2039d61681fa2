/* The one hash table of core: open addressing with linear probing over a power-of-two array of
 * slots that hold entry index + 1 (0 = empty). The caller keeps the entries (and their hashes,
 * if it wants to compare those first) and says which entry matches a key. */
#ifndef MCOREFS_HASH_SLOTS_H
#define MCOREFS_HASH_SLOTS_H
#include <stddef.h>
#include <stdint.h>

/* Zeroed slots for up to n entries: at least 16 and 2n + 2, a power of two (*n_slots). NULL when
 * out of memory or when n does not fit. */
uint32_t *mf_slots_new(size_t n, size_t *n_slots);
/* The slot for a key of hash h: the one holding an entry that same(ctx, entry) accepts, or the
 * empty slot where the key belongs (same NULL: always the empty one, for inserting distinct
 * entries). The table must have an empty slot. */
size_t mf_slots_find(const uint32_t *slots, size_t n_slots, uint64_t h, int (*same)(const void *ctx, size_t entry),
                     const void *ctx);
/* The entry in the slot, or -1 when it is empty. */
static inline int64_t mf_slots_entry(const uint32_t *slots, size_t slot) { return (int64_t)slots[slot] - 1; }
#endif
