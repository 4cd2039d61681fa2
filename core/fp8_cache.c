/* The FP8 view's caches: bytes of one (tensor, 128-row block row) -- its amaxes, or its FP8
 * bytes -- keyed by both, least recently used entries dropped while the entries' bytes exceed
 * the bound. One mutex: entries are copied in and out under it; computing a missing block row
 * (reading 128 source rows) happens outside it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"

typedef struct entry {
    struct entry *next_in_bucket;
    struct entry *newer, *older;   /* LRU list */
    uint32_t tensor, block_row;
    size_t n;
    unsigned char bytes[];
} entry;

struct mf_fp8_cache {
    pthread_mutex_t lock;
    entry **buckets;
    size_t n_buckets;              /* a power of two */
    entry *newest, *oldest;
    size_t bytes, max_bytes;
    uint64_t hits, misses, evictions, entries;
};

static size_t entry_bytes(size_t n)
{
    return sizeof(entry) + n;
}

static size_t bucket_of(const mf_fp8_cache *c, uint32_t tensor, uint32_t block_row)
{
    uint64_t h = ((uint64_t)tensor << 32 | block_row) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (c->n_buckets - 1);
}

mf_fp8_cache *mf_fp8_cache_new(size_t max_bytes)
{
    mf_fp8_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->max_bytes = max_bytes;
    c->n_buckets = 64;
    while (c->n_buckets < max_bytes / 1024 && c->n_buckets < (1u << 20))   /* ~ entries / 2 */
        c->n_buckets <<= 1;
    c->buckets = calloc(c->n_buckets, sizeof(entry *));
    if (!c->buckets || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->buckets);
        free(c);
        return NULL;
    }
    return c;
}

void mf_fp8_cache_free(mf_fp8_cache *c)
{
    if (!c)
        return;
    for (entry *e = c->newest; e;) {
        entry *next = e->older;
        free(e);
        e = next;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static entry *find(mf_fp8_cache *c, uint32_t tensor, uint32_t block_row)
{
    for (entry *e = c->buckets[bucket_of(c, tensor, block_row)]; e; e = e->next_in_bucket)
        if (e->tensor == tensor && e->block_row == block_row)
            return e;
    return NULL;
}

static void unlink_lru(mf_fp8_cache *c, entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void push_newest(mf_fp8_cache *c, entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    c->newest = e;
    if (!c->oldest)
        c->oldest = e;
}

static void drop(mf_fp8_cache *c, entry *e)
{
    entry **p = &c->buckets[bucket_of(c, e->tensor, e->block_row)];
    while (*p != e)
        p = &(*p)->next_in_bucket;
    *p = e->next_in_bucket;
    unlink_lru(c, e);
    c->bytes -= entry_bytes(e->n);
    c->entries--;
    free(e);
}

int mf_fp8_cache_get(mf_fp8_cache *c, uint32_t tensor, uint32_t block_row, size_t off, void *out, size_t n)
{
    pthread_mutex_lock(&c->lock);
    entry *e = find(c, tensor, block_row);
    int hit = e && off <= e->n && n <= e->n - off;
    if (hit) {
        memcpy(out, e->bytes + off, n);
        unlink_lru(c, e);
        push_newest(c, e);
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

int mf_fp8_cache_put(mf_fp8_cache *c, uint32_t tensor, uint32_t block_row, const void *data, size_t n)
{
    size_t need = entry_bytes(n);
    if (need > c->max_bytes)
        return MF_OK;
    entry *e = malloc(need);
    if (!e)
        return mf_fail(MF_ERR_NOMEM, "out of memory (FP8 scale cache)");
    e->tensor = tensor;
    e->block_row = block_row;
    e->n = n;
    memcpy(e->bytes, data, n);
    pthread_mutex_lock(&c->lock);
    entry *old = find(c, tensor, block_row);
    if (old)                       /* another thread computed it meanwhile: same values */
        drop(c, old);
    while (c->oldest && c->bytes + need > c->max_bytes) {
        drop(c, c->oldest);
        c->evictions++;
    }
    size_t b = bucket_of(c, tensor, block_row);
    e->next_in_bucket = c->buckets[b];
    c->buckets[b] = e;
    push_newest(c, e);
    c->bytes += need;
    c->entries++;
    pthread_mutex_unlock(&c->lock);
    return MF_OK;
}

void mf_fp8_cache_get_stats(mf_fp8_cache *c, mf_fp8_cache_stats *st)
{
    pthread_mutex_lock(&c->lock);
    *st = (mf_fp8_cache_stats){ c->hits, c->misses, c->evictions, c->entries, c->bytes, c->max_bytes };
    pthread_mutex_unlock(&c->lock);
}
