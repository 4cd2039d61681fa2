/* Hash index of canonical source tensors (name -> shards). Memory ~ number of tensors. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "mcorefs/checkpoint.h"
#include "mcorefs/error.h"
#include "hash_slots.h"
#include "source_index.h"

static uint64_t name_hash(const char *name) { return XXH3_64bits(name, strlen(name)); }

typedef struct {
    const mf_checkpoint *c;
    const char *name;
} name_key;

static int name_matches(const void *k, size_t i)
{
    const name_key *q = k;
    return strcmp(q->c->sources[i].name, q->name) == 0;
}

mf_source *mf_checkpoint_find(const mf_checkpoint *c, const char *name)
{
    if (c->n_slots == 0)
        return NULL;
    name_key q = { c, name };
    int64_t i = mf_slots_entry(c->slots, mf_slots_find(c->slots, c->n_slots, name_hash(name), name_matches, &q));
    return i < 0 ? NULL : &c->sources[i];
}

static int rehash(mf_checkpoint *c, size_t n_slots)
{
    uint32_t *slots = calloc(n_slots, sizeof(uint32_t));
    if (!slots)
        return mf_fail(MF_ERR_NOMEM, "out of memory (source index)");
    free(c->slots);
    c->slots = slots;
    c->n_slots = n_slots;
    for (size_t k = 0; k < c->n_sources; k++)   /* names are distinct: each goes to its first empty slot */
        c->slots[mf_slots_find(slots, n_slots, name_hash(c->sources[k].name), NULL, NULL)] = (uint32_t)(k + 1);
    return MF_OK;
}

static mf_source *create(mf_checkpoint *c, const char *name, int expert, int n_shards);

int mf_source_reserve(mf_checkpoint *c, size_t n)
{
    if (n <= c->cap_sources)
        return MF_OK;
    mf_source *ns = realloc(c->sources, n * sizeof(*ns));
    if (!ns)
        return mf_fail(MF_ERR_NOMEM, "out of memory (source index)");
    c->sources = ns;
    c->cap_sources = n;
    size_t slots = c->n_slots ? c->n_slots : 1024;
    while (slots < 2 * n + 2)
        slots *= 2;
    return slots > c->n_slots ? rehash(c, slots) : MF_OK;
}

int mf_source_add(mf_checkpoint *c, const char *name, int expert, int n_shards, int shard, const mf_shard *sh)
{
    mf_source *s = mf_checkpoint_find(c, name);
    if (s == NULL && (s = create(c, name, expert, n_shards)) == NULL)
        return MF_ERR_NOMEM;
    s->copies++;
    if (shard < 0 || shard >= s->n_shards)
        return mf_fail(MF_ERR_INCONSISTENT, "shard %d of '%s' out of range (%d shards)", shard, name, s->n_shards);
    if (s->shards[shard].file < 0)
        s->shards[shard] = *sh;
    return MF_OK;
}

int mf_source_add_chunk(mf_checkpoint *c, const char *name, int expert, int64_t grows, int64_t gcols, const mf_shard *sh)
{
    mf_source *s = mf_checkpoint_find(c, name);
    if (s == NULL) {
        if ((s = create(c, name, expert, 0)) == NULL)
            return MF_ERR_NOMEM;
        s->positioned = 1;
        s->grows = grows;
        s->gcols = gcols;
    }
    if (!s->positioned || s->grows != grows || s->gcols != gcols)
        return mf_fail(MF_ERR_INCONSISTENT, "'%s' appears with different global shapes", name);
    if (s->n_shards == UINT16_MAX)
        return mf_fail(MF_ERR_LIMIT, "'%s' has more than %d chunks", name, UINT16_MAX);
    if (s->n_shards > 0) { /* create() left room for the first one */
        mf_shard *ns = realloc(s->shards, (size_t)(s->n_shards + 1) * sizeof(*ns));
        if (!ns)
            return mf_fail(MF_ERR_NOMEM, "out of memory (source index)");
        s->shards = ns;
    }
    s->shards[s->n_shards++] = *sh;
    s->copies++;
    return MF_OK;
}

static mf_source *create(mf_checkpoint *c, const char *name, int expert, int n_shards)
{
    mf_source *s;
    if ((c->n_sources + 1) * 2 > c->n_slots && rehash(c, c->n_slots ? c->n_slots * 2 : 1024) != 0)
        return NULL;
    if (c->n_sources == c->cap_sources) {
        size_t cap = c->cap_sources ? c->cap_sources * 2 : 1024;
        mf_source *ns = realloc(c->sources, cap * sizeof(*ns));
        if (!ns) {
            mf_fail(MF_ERR_NOMEM, "out of memory (source index)");
            return NULL;
        }
        c->sources = ns;
        c->cap_sources = cap;
    }
    s = &c->sources[c->n_sources];
    memset(s, 0, sizeof(*s));
    s->name = strdup(name);
    s->shards = calloc((size_t)(n_shards ? n_shards : 1), sizeof(mf_shard));
    if (!s->name || !s->shards) {
        free(s->name);
        free(s->shards);
        mf_fail(MF_ERR_NOMEM, "out of memory (source index)");
        return NULL;
    }
    s->n_shards = (uint16_t)n_shards;
    s->expert = (uint8_t)expert;
    for (int k = 0; k < n_shards; k++)
        s->shards[k].file = -1;
    c->slots[mf_slots_find(c->slots, c->n_slots, name_hash(name), NULL, NULL)] = (uint32_t)(++c->n_sources);   /* a new name */
    return s;
}

void mf_source_index_free(mf_checkpoint *c)
{
    for (size_t k = 0; k < c->n_sources; k++) {
        free(c->sources[k].name);
        free(c->sources[k].shards);
    }
    free(c->sources);
    free(c->slots);
    c->sources = NULL;
    c->slots = NULL;
    c->n_sources = c->cap_sources = c->n_slots = 0;
}
