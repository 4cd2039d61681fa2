/* torch_dist chunks read on first use. A mount reads no chunk archive (tens of thousands for a
 * large MoE); each is parsed once, by the first read that needs it. The fast path is one
 * acquire load of the chunk's state; only a first read takes a lock, one of a few striped
 * mutexes, so readers of other chunks never wait on it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "dist_chunks.h"
#include "mcorefs/error.h"

enum { CHUNK_UNREAD, CHUNK_READ, CHUNK_FAILED };
enum { LOCK_STRIPES = 64 };

struct mf_dist_chunk {
    mf_dist_chunks *all;
    const mf_dcp_tensor *t;
    const mf_dcp_chunk *ch;
    uint8_t state;             /* CHUNK_*: written once under its stripe lock, with release */
    uint8_t np;                /* stacked (layer, expert) axes in front */
    char *err;                 /* CHUNK_FAILED: the message, repeated on every later read */
    int rc;                    /* CHUNK_FAILED: its code (MF_ERR_CHANGED: the file changed) */
    uint64_t offset, storage_begin, storage_bytes;
    int64_t stride[5];         /* np + at most 3 dims (conv1d [channels, 1, kernel]) */
};

struct mf_dist_chunks {
    pthread_mutex_t locks[LOCK_STRIPES];
    const mf_dcp *dcp;
    const mf_rankfile *files;
    struct mf_dist_chunk *items;
    size_t n, cap;
};

mf_dist_chunks *mf_dist_chunks_new(const mf_dcp *dcp, const mf_rankfile *files, size_t cap)
{
    mf_dist_chunks *all = calloc(1, sizeof *all);
    if (!all || !(all->items = calloc(cap ? cap : 1, sizeof *all->items))) {
        free(all);
        return NULL;
    }
    for (int i = 0; i < LOCK_STRIPES; i++)
        pthread_mutex_init(&all->locks[i], NULL);
    all->dcp = dcp;
    all->files = files;
    all->cap = cap;
    return all;
}

void mf_dist_chunks_free(mf_dist_chunks *all)
{
    if (!all)
        return;
    for (size_t i = 0; i < all->n; i++)
        free(all->items[i].err);
    free(all->items);
    for (int i = 0; i < LOCK_STRIPES; i++)
        pthread_mutex_destroy(&all->locks[i]);
    free(all);
}

struct mf_dist_chunk *mf_dist_chunks_add(mf_dist_chunks *all, const mf_dcp_tensor *t, const mf_dcp_chunk *ch, int np)
{
    if (all->n == all->cap || np < 0 || np > 2)
        return NULL;
    struct mf_dist_chunk *k = &all->items[all->n++];
    *k = (struct mf_dist_chunk){.all = all, .t = t, .ch = ch, .np = (uint8_t)np};
    return k;
}

size_t mf_dist_chunks_count(const mf_dist_chunks *all) { return all ? all->n : 0; }

/* Parse the chunk's archive; the result (or the failure) is published by the caller. */
static void read_chunk(struct mf_dist_chunk *k)
{
    mf_tensor full;
    const mf_rankfile *f = &k->all->files[k->ch->file];
    int rc = mf_dcp_chunk_tensor(k->all->dcp, f->fd, k->ch, &full);
    int changed = mf_file_id_check(f->fd, &f->id, f->path);   /* a layout read from new bytes is wrong */
    if (changed)
        rc = changed;
    if (rc) {
        k->err = strdup(mf_error());
        k->rc = rc;
        __atomic_store_n(&k->state, CHUNK_FAILED, __ATOMIC_RELEASE);
        return;
    }
    k->offset = full.offset;
    k->storage_begin = full.storage_begin;
    k->storage_bytes = full.storage_bytes;
    for (int d = 0; d < full.ndim && d < 5; d++)
        k->stride[d] = full.stride[d];
    __atomic_store_n(&k->state, CHUNK_READ, __ATOMIC_RELEASE);
}

static int chunk_state(struct mf_dist_chunk *k)
{
    int state = __atomic_load_n(&k->state, __ATOMIC_ACQUIRE);
    if (state != CHUNK_UNREAD)
        return state;
    pthread_mutex_t *lock = &k->all->locks[(size_t)(k - k->all->items) % LOCK_STRIPES];
    pthread_mutex_lock(lock);
    if (__atomic_load_n(&k->state, __ATOMIC_ACQUIRE) == CHUNK_UNREAD)
        read_chunk(k);
    pthread_mutex_unlock(lock);
    return __atomic_load_n(&k->state, __ATOMIC_ACQUIRE);
}

int mf_shard_locate(const mf_shard *sh, mf_tensor *out)
{
    *out = sh->t;
    struct mf_dist_chunk *k = sh->chunk;
    if (!k)
        return MF_OK;
    if (chunk_state(k) == CHUNK_FAILED)
        return mf_fail(k->rc == MF_ERR_CHANGED ? MF_ERR_CHANGED : MF_ERR_FORMAT, "%s",
                       k->err ? k->err : "a torch_dist chunk could not be read");
    size_t es = mf_dtype_size(sh->t.dtype);
    int ea = sh->layer >= 0 ? 1 : 0;  /* the expert axis follows the layer axis */
    int64_t skip = (sh->layer >= 0 ? sh->layer * k->stride[0] : 0) + (sh->expert >= 0 ? sh->expert * k->stride[ea] : 0);
    for (int d = 0; d < sh->t.ndim; d++)
        out->stride[d] = k->stride[k->np + d];
    out->offset = k->offset + (uint64_t)skip * es;
    out->storage_begin = k->storage_begin;
    out->storage_bytes = k->storage_bytes;
    return MF_OK;
}
