/* Open a torch_dist checkpoint: args from common.pt / common_state, then every chunk of every
 * global Megatron key becomes a positioned shard of a canonical per-layer, per-expert source
 * (stacked layer and expert axes are sliced away), so mapping and gathering stay the same.
 * .metadata alone gives every chunk's shape, dtype and byte window; the torch.save archive
 * embedded there (which says where the data starts and its strides) is read on first use. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint_dist.h"
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "open_beneath.h"
#include "source_index.h"

/* How a global key splits into canonical names. */
typedef struct {
    int skip;
    int layer_axis;        /* 1 if axis 0 is the stacked layer axis */
    int expert_axis;       /* 1 if the next prepended axis is the global expert axis */
    int replica_copy;
    char prefix[96];       /* "decoder.layers.%lld" (layer filled per slice) or a fixed prefix */
    char rest[256];        /* the part after the layer (and expert) */
    int mtp_extra;         /* mtp.layers.K.<rest> (enorm, hnorm, ...) */
} dist_key;

static int parse_key(const char *fqn, const mf_model *m, dist_key *k)
{
    const char *p;
    memset(k, 0, sizeof(*k));
    if (strstr(fqn, "_extra_state") || !(strncmp(fqn, "embedding.", 10) == 0 || strncmp(fqn, "decoder.", 8) == 0 ||
                                         strncmp(fqn, "output_layer.", 13) == 0 || strncmp(fqn, "mtp.", 4) == 0)) {
        k->skip = 1;
        return 0;
    }
    if (strncmp(fqn, "decoder.layers.", 15) == 0) {
        p = fqn + 15;
        if (*p >= '0' && *p <= '9') {                 /* non-homogeneous: per-layer keys */
            char *end;
            long long g = strtoll(p, &end, 10);
            if (*end != '.' || g < 0 || g >= m->num_layers)
                return -1;
            snprintf(k->prefix, sizeof(k->prefix), "decoder.layers.%lld", g);
            p = end + 1;
        } else {                                      /* homogeneous: stacked on axis 0 */
            k->layer_axis = 1;
            snprintf(k->prefix, sizeof(k->prefix), "decoder.layers.%%lld");
        }
    } else if (strncmp(fqn, "mtp.layers.", 11) == 0) {
        char *end;
        long long i = strtoll(fqn + 11, &end, 10);
        if (*end != '.' || i < 0 || i >= m->mtp_layers)
            return -1;
        p = end + 1;
        if (strncmp(p, "transformer_layer.", 18) == 0 || strncmp(p, "mtp_model_layer.", 16) == 0) {
            snprintf(k->prefix, sizeof(k->prefix), "decoder.layers.%lld", m->num_layers + i);
            p = strchr(p, '.') + 1;
        } else {
            snprintf(k->prefix, sizeof(k->prefix), "mtp.layers.%lld", m->num_layers + i);
            k->mtp_extra = 1;
        }
    } else {
        if (strcmp(fqn, "output_layer.weight") == 0 && m->tied)
            k->replica_copy = 1;
        snprintf(k->rest, sizeof(k->rest), "%s", fqn);
        return 0;
    }
    if (strncmp(p, "mlp.experts.experts.", 20) == 0) {
        k->expert_axis = 1;
        snprintf(k->rest, sizeof(k->rest), "%s", p + 20);
    } else {
        snprintf(k->rest, sizeof(k->rest), "%s", p);
    }
    return 0;
}

static void slice_name(const dist_key *k, long long layer, long long expert, char *out, size_t n)
{
    char prefix[128];
    if (k->prefix[0] == 0) {
        snprintf(out, n, "%s%s", k->replica_copy ? "stage_copy." : "", k->rest);
        return;
    }
    snprintf(prefix, sizeof(prefix), k->prefix, layer);
    if (k->expert_axis)
        snprintf(out, n, "%s.mlp.experts.%lld.%s", prefix, expert, k->rest);
    else
        snprintf(out, n, "%s.%s", prefix, k->rest);
}

enum { CHUNK_UNREAD, CHUNK_READ, CHUNK_FAILED };

/* One chunk of .metadata; after it is read, where its data is. */
struct mf_dist_chunk {
    struct mf_dist_chunks *all;
    const mf_dcp_tensor *t;
    const mf_dcp_chunk *ch;
    uint8_t state;             /* CHUNK_*, under all->lock */
    uint8_t np;                /* stacked (layer, expert) axes in front */
    char *err;                 /* CHUNK_FAILED: the message, repeated on every later read */
    int rc;                    /* CHUNK_FAILED: its code (MF_ERR_CHANGED: the file changed) */
    uint64_t offset, storage_begin, storage_bytes;
    int64_t stride[4];         /* np + at most 2 matrix dims */
};

struct mf_dist_chunks {
    pthread_mutex_t lock;
    const mf_dcp *dcp;
    const mf_rankfile *files;
    struct mf_dist_chunk *items;
    size_t n, cap;
};

static int read_chunk(struct mf_dist_chunk *k)
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
        k->state = CHUNK_FAILED;
        return rc;
    }
    k->offset = full.offset;
    k->storage_begin = full.storage_begin;
    k->storage_bytes = full.storage_bytes;
    for (int d = 0; d < full.ndim && d < 4; d++)
        k->stride[d] = full.stride[d];
    k->state = CHUNK_READ;
    return MF_OK;
}

int mf_shard_ready(const mf_shard *csh)
{
    if (!csh->chunk || __atomic_load_n(&csh->ready, __ATOMIC_ACQUIRE))
        return MF_OK;
    mf_shard *sh = (mf_shard *)csh; /* completing its cached location; readers wait on ready */
    struct mf_dist_chunk *k = sh->chunk;
    int rc = MF_OK;
    pthread_mutex_lock(&k->all->lock);
    if (!sh->ready) {
        if (k->state == CHUNK_UNREAD)
            read_chunk(k);
        if (k->state == CHUNK_FAILED) {
            rc = mf_fail(k->rc == MF_ERR_CHANGED ? MF_ERR_CHANGED : MF_ERR_FORMAT, "%s",
                         k->err ? k->err : "a torch_dist chunk could not be read");
        } else {
            size_t es = mf_dtype_size(sh->t.dtype);
            int ea = sh->layer >= 0 ? 1 : 0;  /* the expert axis follows the layer axis */
            int64_t skip = (sh->layer >= 0 ? sh->layer * k->stride[0] : 0) + (sh->expert >= 0 ? sh->expert * k->stride[ea] : 0);
            for (int d = 0; d < sh->t.ndim; d++)
                sh->t.stride[d] = k->stride[k->np + d];
            sh->t.offset = k->offset + (uint64_t)skip * es;
            sh->t.storage_begin = k->storage_begin;
            sh->t.storage_bytes = k->storage_bytes;
            __atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&k->all->lock);
    return rc;
}

void mf_checkpoint_dist_free(mf_checkpoint *c)
{
    struct mf_dist_chunks *all = c->chunks;
    if (!all)
        return;
    for (size_t i = 0; i < all->n; i++)
        free(all->items[i].err);
    free(all->items);
    pthread_mutex_destroy(&all->lock);
    free(all);
    c->chunks = NULL;
}

/* Add every (layer, expert) slice of one chunk as a positioned shard: shape and dtype from
 * .metadata, placeholder (contiguous) strides until mf_shard_ready reads the archive. */
static int add_chunk(mf_checkpoint *c, const mf_dcp_tensor *t, const mf_dcp_chunk *ch, const dist_key *k)
{
    int np = k->layer_axis + k->expert_axis;
    int rest = t->ndim - np;
    int rc;
    if (rest < 0 || rest > 2)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s' has %d dims after its layer/expert axes", c->iter_dir, t->fqn, rest);
    struct mf_dist_chunks *all = c->chunks;
    if (all->n == all->cap)
        return mf_fail(MF_ERR_INVALID, "%s: chunk table overflow", c->iter_dir); /* sized from .metadata */
    struct mf_dist_chunk *lazy = &all->items[all->n++];
    *lazy = (struct mf_dist_chunk){.all = all, .t = t, .ch = ch, .np = (uint8_t)np};
    int64_t grows = rest >= 1 ? t->size[np] : 1, gcols = rest == 2 ? t->size[np + 1] : 1;
    int64_t l0 = k->layer_axis ? ch->offsets[0] : 0, nl = k->layer_axis ? ch->sizes[0] : 1;
    int ea = k->layer_axis;  /* index of the expert axis */
    int64_t e0 = k->expert_axis ? ch->offsets[ea] : 0, ne = k->expert_axis ? ch->sizes[ea] : 1;
    for (int64_t li = 0; li < nl; li++)
        for (int64_t ei = 0; ei < ne; ei++) {
            mf_shard sh = { .file = ch->file, .chunk = lazy };
            sh.layer = k->layer_axis ? li : -1;
            sh.expert = k->expert_axis ? ei : -1;
            sh.t.dtype = t->dtype;
            sh.t.ndim = rest;
            for (int d = rest - 1; d >= 0; d--) {
                sh.t.shape[d] = ch->sizes[np + d];
                sh.t.stride[d] = d == rest - 1 ? 1 : sh.t.stride[d + 1] * sh.t.shape[d + 1];
            }
            sh.row0 = rest >= 1 ? ch->offsets[np] : 0;
            sh.col0 = rest == 2 ? ch->offsets[np + 1] : 0;
            char name[512];
            slice_name(k, l0 + li, e0 + ei, name, sizeof(name));
            if ((rc = mf_source_add_chunk(c, name, k->expert_axis, grows, gcols, &sh)) != 0)
                return rc;
        }
    return MF_OK;
}

static int make_chunk_table(mf_checkpoint *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->dcp.n_tensors; i++)
        n += c->dcp.tensors[i].n_chunks;
    struct mf_dist_chunks *all = calloc(1, sizeof *all);
    if (!all || !(all->items = calloc(n ? n : 1, sizeof *all->items))) {
        free(all);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&all->lock, NULL);
    all->dcp = &c->dcp;
    all->files = c->files;
    all->cap = n;
    c->chunks = all;
    return MF_OK;
}

int mf_checkpoint_open_dist(mf_checkpoint *c, const mf_options *o)
{
    int rc;
    c->format = MF_FORMAT_TORCH_DIST;
    if ((rc = mf_dcp_open(&c->dcp, c->iter_dir)) != 0)
        return rc;
    const mf_pv *args = NULL;
    if ((rc = mf_dcp_load_args(&c->dcp, &c->args_pk, &args)) != 0)
        return rc;
    c->args = args;
    char where[4200];
    snprintf(where, sizeof(where), "%s/.metadata", c->iter_dir);
    if ((rc = mf_model_from_args(&c->model, args, o->arch, where)) != 0)
        return rc;
    c->n_files = c->dcp.n_files;
    c->files = calloc(c->n_files ? c->n_files : 1, sizeof(mf_rankfile));
    if (!c->files)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_files; i++)
        c->files[i].fd = -1;
    for (size_t i = 0; i < c->n_files; i++) {
        mf_rankfile *f = &c->files[i];
        size_t n = strlen(c->iter_dir) + strlen(c->dcp.files[i]) + 2;
        f->fd = -1;
        f->tp = f->pp = f->ep = f->etp = -1;
        f->name = strdup(c->dcp.files[i]);
        f->path = malloc(n);
        if (!f->name || !f->path)
            return mf_fail(MF_ERR_NOMEM, "out of memory");
        snprintf(f->path, n, "%s/%s", c->iter_dir, c->dcp.files[i]);
        if ((rc = mf_open_beneath(c->iter_dir, c->dcp.files[i], &f->fd)) != 0 ||
            (rc = mf_file_id_get(f->fd, f->path, &f->id)) != 0)
            return rc;
        f->size = c->dcp.file_sizes[i];
        if (f->id.size != f->size)   /* the windows of .metadata were checked against that size */
            return mf_fail(MF_ERR_CHANGED, "%s: changed while mounting (size %llu, was %llu)", f->path,
                           (unsigned long long)f->id.size, (unsigned long long)f->size);
    }
    if ((rc = make_chunk_table(c)) != 0 || (rc = mf_source_reserve(c, c->chunks->cap)) != 0)
        return rc;
    for (size_t i = 0; i < c->dcp.n_tensors; i++) {
        const mf_dcp_tensor *t = &c->dcp.tensors[i];
        dist_key k;
        if (parse_key(t->fqn, &c->model, &k) != 0)
            return mf_fail(MF_ERR_INCONSISTENT, "%s/.metadata: key '%s' does not fit %lld layers and %lld MTP layers",
                           c->iter_dir, t->fqn, (long long)c->model.num_layers, (long long)c->model.mtp_layers);
        if (k.skip)
            continue;
        for (size_t j = 0; j < t->n_chunks; j++)
            if ((rc = add_chunk(c, t, &t->chunks[j], &k)) != 0)
                return rc;
    }
    return MF_OK;
}
