/* Open a torch_dist checkpoint: args from common.pt / common_state, then every chunk of every
 * global Megatron key becomes a positioned shard of a canonical per-layer, per-expert source
 * (stacked layer and expert axes are sliced away), so mapping and gathering stay the same.
 * .metadata alone gives every chunk's shape, dtype and byte window; the torch.save archive
 * embedded there (which says where the data starts and its strides) is read on first use. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint_dist.h"
#include "dcp_model.h"
#include "dist_chunks.h"
#include "file_io.h"
#include "hf_describe.h"
#include "nemo_context.h"
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

/* What a torch_dist checkpoint keeps beyond the common fields. */
struct mf_dist_reader {
    mf_dcp dcp;
    mf_dist_chunks *chunks;
    mf_dcp_layout layout;    /* torch_dist, or a DCP save of the plain state dict */
    int nemo;                /* a NeMo 2.0 weights/ folder described by ../context/model.yaml */
};

const char *mf_checkpoint_format_name(const mf_checkpoint *c)
{
    if (c->format == MF_FORMAT_TORCH)
        return "torch";
    if (c->dist && c->dist->nemo)
        return "nemo2";
    return mf_dcp_layout_name(c->dist ? c->dist->layout : MF_DCP_TORCH_DIST);
}

void mf_checkpoint_dist_free(mf_checkpoint *c)
{
    if (!c->dist)
        return;
    mf_dist_chunks_free(c->dist->chunks);
    mf_dcp_close(&c->dist->dcp);
    free(c->dist);
    c->dist = NULL;
}

void mf_checkpoint_dist_counts(const mf_checkpoint *c, size_t *keys, size_t *chunks)
{
    *keys = *chunks = 0;
    if (!c->dist)
        return;
    *keys = c->dist->dcp.n_tensors;
    for (size_t i = 0; i < c->dist->dcp.n_tensors; i++)
        *chunks += c->dist->dcp.tensors[i].n_chunks;
}

/* Add every (layer, expert) slice of one chunk as a positioned shard: shape and dtype from
 * .metadata, placeholder (contiguous) strides until mf_shard_locate reads the archive. */
static int add_chunk(mf_checkpoint *c, const mf_dcp_tensor *t, const mf_dcp_chunk *ch, const dist_key *k)
{
    int np = k->layer_axis + k->expert_axis;
    int rest = t->ndim - np;
    int rc;
    if (rest < 0 || rest > 3)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s' has %d dims after its layer/expert axes", c->iter_dir, t->fqn, rest);
    /* a 3-D tensor (conv1d [channels, 1, kernel]) is the matrix [channels x 1, kernel]: its
     * chunks may split only the first dim */
    if (rest == 3 && (ch->offsets[np + 1] != 0 || ch->sizes[np + 1] != t->size[np + 1] ||
                      ch->offsets[np + 2] != 0 || ch->sizes[np + 2] != t->size[np + 2]))
        return mf_fail(MF_ERR_UNSUPPORTED, "%s/.metadata: '%s': a chunk splits a 3-D tensor along a dim other than the first",
                       c->iter_dir, t->fqn);
    struct mf_dist_chunk *lazy = mf_dist_chunks_add(c->dist->chunks, t, ch, np);
    if (!lazy)
        return mf_fail(MF_ERR_INVALID, "%s: chunk table overflow", c->iter_dir); /* sized from .metadata */
    int64_t inner = rest == 3 ? t->size[np + 1] : 1;
    int64_t grows = rest >= 1 ? t->size[np] * inner : 1, gcols = rest >= 2 ? t->size[np + rest - 1] : 1;
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
            sh.row0 = rest >= 1 ? ch->offsets[np] * inner : 0;
            sh.col0 = rest == 2 ? ch->offsets[np + 1] : 0;
            char name[512];
            slice_name(k, l0 + li, e0 + ei, name, sizeof(name));
            if ((rc = mf_source_add_chunk(c, name, k->expert_axis, grows, gcols, &sh)) != 0)
                return rc;
        }
    return MF_OK;
}

/* torch_dcp / fsdp_dtensor: one chunk of a per-layer, per-expert key; a gated fc1 half lands in
 * its half of the global [gate; up] (the up half below the gate's rows). */
static int add_model_chunk(mf_checkpoint *c, const mf_dcp_tensor *t, const mf_dcp_chunk *ch, const char *name,
                           const mf_dcp_model_key *k)
{
    if (t->ndim < 1 || t->ndim > 2)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s/.metadata: '%s' has %d dims", c->iter_dir, t->fqn, t->ndim);
    struct mf_dist_chunk *lazy = mf_dist_chunks_add(c->dist->chunks, t, ch, 0);
    if (!lazy)
        return mf_fail(MF_ERR_INVALID, "%s: chunk table overflow", c->iter_dir); /* sized from .metadata */
    mf_shard sh = { .file = ch->file, .chunk = lazy, .layer = -1, .expert = -1 };
    sh.t.dtype = t->dtype;
    sh.t.ndim = t->ndim;
    for (int d = t->ndim - 1; d >= 0; d--) {
        sh.t.shape[d] = ch->sizes[d];
        sh.t.stride[d] = d == t->ndim - 1 ? 1 : sh.t.stride[d + 1] * sh.t.shape[d + 1];
    }
    int64_t grows = t->size[0], gcols = t->ndim == 2 ? t->size[1] : 1;
    sh.row0 = ch->offsets[0] + (k->half == 2 ? grows : 0);
    sh.col0 = t->ndim == 2 ? ch->offsets[1] : 0;
    return mf_source_add_chunk(c, name, k->expert, k->half ? 2 * grows : grows, gcols, &sh);
}

/* A gated fc1 half needs its other half, of the same shape and dtype. */
static int check_partner(const mf_checkpoint *c, const mf_dcp_tensor *t)
{
    char other[600];
    mf_dcp_model_partner(t->fqn, other, sizeof other);
    const mf_dcp_tensor *u = mf_dcp_find(&c->dist->dcp, other);
    int same = u && u->ndim == t->ndim && u->dtype == t->dtype;
    for (int d = 0; same && d < t->ndim; d++)
        same = u->size[d] == t->size[d];
    if (!u)
        return mf_fail(MF_ERR_MISSING, "%s/.metadata: '%s' (one half of a gated fc1) has no '%s'", c->iter_dir, t->fqn, other);
    if (!same)
        return mf_fail(MF_ERR_INCONSISTENT, "%s/.metadata: '%s' and '%s' (the halves of a gated fc1) differ in shape or dtype",
                       c->iter_dir, t->fqn, other);
    return MF_OK;
}

static int index_model_keys(mf_checkpoint *c)
{
    const mf_dcp *dcp = &c->dist->dcp;
    const char *fmt = mf_dcp_layout_name(c->dist->layout);
    const mf_model *m = &c->model;
    if (m->pp > 1 || m->vpp > 1)   /* each stage numbers its layers from 0 under the same keys */
        return mf_fail(MF_ERR_UNSUPPORTED, "%s/.metadata: a %s save with pipeline parallelism (pp=%lld, vpp=%lld) is not "
                       "supported: its layer keys are numbered per stage", c->iter_dir, fmt, (long long)m->pp, (long long)m->vpp);
    /* how many keys feed each source: one, or the two halves of a gated fc1 (two spellings of
     * one expert, or a fused fc1 beside its halves, would overlap: refused) */
    uint8_t *feeds = calloc(c->cap_sources + 1, 1);
    if (!feeds)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    int rc = MF_OK;
    for (size_t i = 0; i < dcp->n_tensors && rc == MF_OK; i++) {
        const mf_dcp_tensor *t = &dcp->tensors[i];
        mf_dcp_model_key k;
        char name[600];
        if (mf_dcp_model_canon(t->fqn, m, name, sizeof name, &k) != 0) {
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s/.metadata: %s key '%s' does not fit %lld layers, %lld experts and %lld MTP layers",
                         c->iter_dir, fmt, t->fqn, (long long)m->num_layers, (long long)m->num_experts, (long long)m->mtp_layers);
            break;
        }
        if (k.skip || t->n_chunks == 0)
            continue;
        if (k.half && (rc = check_partner(c, t)) != 0)
            break;
        for (size_t j = 0; j < t->n_chunks && rc == MF_OK; j++)
            rc = add_model_chunk(c, t, &t->chunks[j], name, &k);
        if (rc != MF_OK && !strstr(mf_error(), c->iter_dir))
            rc = mf_fail_ctx(rc, "%s/.metadata: %s key '%s'", c->iter_dir, fmt, t->fqn);
        const mf_source *src = rc == MF_OK ? mf_checkpoint_find(c, name) : NULL;
        size_t at = src ? (size_t)(src - c->sources) : 0;
        if (src && at < c->cap_sources && ++feeds[at] > (k.half ? 2 : 1))
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s/.metadata: %s key '%s' holds weights another key holds too ('%s')",
                         c->iter_dir, fmt, t->fqn, name);
    }
    free(feeds);
    return rc;
}

static int index_dist_keys(mf_checkpoint *c)
{
    const mf_dcp *dcp = &c->dist->dcp;
    int rc;
    for (size_t i = 0; i < dcp->n_tensors; i++) {
        const mf_dcp_tensor *t = &dcp->tensors[i];
        dist_key k;
        const char *fqn = t->fqn;
        while (strncmp(fqn, "module.", 7) == 0)   /* NeMo's MegatronParallel wrapper prefix */
            fqn += 7;
        if (parse_key(fqn, &c->model, &k) != 0)
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

/* The stored (padded) vocab: rows of the input embedding, 0 when there is none. */
static int64_t embedding_rows(const mf_dcp *d)
{
    static const char emb[] = "embedding.word_embeddings.weight";
    size_t ne = sizeof emb - 1;
    for (size_t i = 0; i < d->n_tensors; i++) {
        size_t n = strlen(d->tensors[i].fqn);
        if (n >= ne && strcmp(d->tensors[i].fqn + n - ne, emb) == 0 && (n == ne || d->tensors[i].fqn[n - ne - 1] == '.') &&
            d->tensors[i].ndim == 2)
            return d->tensors[i].size[0];
    }
    return 0;
}

/* The model description: the save's args, or (a megatron.core-only save without them) the HF
 * config the user gave with -o hf_config. */
static int describe_model(mf_checkpoint *c, const mf_options *o)
{
    mf_dcp *dcp = &c->dist->dcp;
    const mf_pv *args = NULL;
    char where[4200];
    snprintf(where, sizeof(where), "%s/.metadata", c->iter_dir);
    int rc = mf_dcp_load_args(dcp, &c->args_pk, &args);
    char yaml[4200];
    if (rc == MF_ERR_MISSING && mf_nemo_model_yaml(c->iter_dir, yaml, sizeof yaml)) {
        c->dist->nemo = 1;
        return mf_model_from_nemo_yaml(&c->model, &c->args_pk, &c->args, yaml, o->arch, embedding_rows(dcp), where);
    }
    if (rc == MF_ERR_MISSING && o->hf_config)
        return mf_model_from_hf_config(&c->model, &c->args_pk, &c->args, o->hf_config, o->arch, embedding_rows(dcp), where);
    if (rc == MF_ERR_MISSING && !strstr(mf_error(), "hf_config")) {
        char why[1024];
        snprintf(why, sizeof why, "%s", mf_error());
        return mf_fail(MF_ERR_MISSING, "%s; to mount a save without Megatron's args, describe the model with "
                       "-o hf_config=FILE (an HF config.json with architectures or model_type and the sizes)", why);
    }
    if (rc)
        return rc;
    c->args = args;
    return mf_model_from_args(&c->model, args, o->arch, where);
}

static int make_chunk_table(mf_checkpoint *c, size_t *cap)
{
    size_t n = 0;
    for (size_t i = 0; i < c->dist->dcp.n_tensors; i++)
        n += c->dist->dcp.tensors[i].n_chunks;
    if (!(c->dist->chunks = mf_dist_chunks_new(&c->dist->dcp, c->files, n)))
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    *cap = n;
    return MF_OK;
}

int mf_checkpoint_open_dist(mf_checkpoint *c, const mf_options *o)
{
    int rc;
    c->format = MF_FORMAT_TORCH_DIST;
    if (!(c->dist = calloc(1, sizeof *c->dist)))
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    mf_dcp *dcp = &c->dist->dcp;
    if ((rc = mf_dcp_open(dcp, c->iter_dir)) != 0)
        return rc;
    c->dist->layout = mf_dcp_layout_of(dcp);
    if ((rc = describe_model(c, o)) != 0)
        return rc;
    c->n_files = dcp->n_files;
    c->files = calloc(c->n_files ? c->n_files : 1, sizeof(mf_rankfile));
    if (!c->files)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_files; i++)
        c->files[i].fd = -1;
    for (size_t i = 0; i < c->n_files; i++) {
        mf_rankfile *f = &c->files[i];
        f->fd = -1;
        f->tp = f->pp = f->ep = f->etp = -1;
        f->name = strdup(dcp->files[i]);
        f->path = mf_path_join(c->iter_dir, dcp->files[i]);
        if (!f->name || !f->path)
            return mf_fail(MF_ERR_NOMEM, "out of memory");
        if ((rc = mf_open_beneath(c->iter_dir, dcp->files[i], &f->fd)) != 0 ||
            (rc = mf_file_id_get(f->fd, f->path, &f->id)) != 0)
            return rc;
        f->size = dcp->file_sizes[i];
        if (f->id.size != f->size)   /* the windows of .metadata were checked against that size */
            return mf_fail(MF_ERR_CHANGED, "%s: changed while mounting (size %llu, was %llu)", f->path,
                           (unsigned long long)f->id.size, (unsigned long long)f->size);
    }
    size_t n_chunks = 0;
    if ((rc = make_chunk_table(c, &n_chunks)) != 0 || (rc = mf_source_reserve(c, n_chunks)) != 0)
        return rc;
    return c->dist->layout == MF_DCP_TORCH_DIST ? index_dist_keys(c) : index_model_keys(c);
}
