/* Replica verification and hashing, through the same gather engine as reads. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"
#include "mcorefs/gather.h"
#include "mcorefs/verify.h"
#include "placement.h"

#define CHUNK (4u << 20)

static int hash_io(const mf_session *s, const mf_io *io, const mf_hf_tensor *t, uint64_t *out, uint64_t *bytes);

static int hash_pieces(const mf_session *s, const mf_hf_tensor *t, uint64_t *out, uint64_t *bytes)
{
    mf_io io = { s->fds, NULL, s->ckpt.files };
    return hash_io(s, &io, t, out, bytes);
}

/* The bytes the view shows (FP8 tensors quantized as a read would). */
static int hash_io(const mf_session *s, const mf_io *io, const mf_hf_tensor *t, uint64_t *out, uint64_t *bytes)
{
    uint8_t *buf = malloc(CHUNK);
    XXH64_state_t *st = XXH64_createState();
    int rc = 0;
    if (!buf || !st) {
        free(buf);
        XXH64_freeState(st);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    XXH64_reset(st, 0);
    mf_error_clear();
    for (uint64_t off = 0; off < t->nbytes && rc == 0; off += CHUNK) {
        size_t n = t->nbytes - off < CHUNK ? (size_t)(t->nbytes - off) : CHUNK;
        rc = mf_tensor_read(s, t, io, off, n, buf);
        if (rc == 0)
            XXH64_update(st, buf, n);
    }
    *out = XXH64_digest(st);
    if (bytes)
        *bytes += t->nbytes;
    XXH64_freeState(st);
    free(buf);
    if (rc && mf_error()[0])   /* e.g. which rank file changed since it was opened */
        return mf_fail_ctx(rc == MF_ERR_CHANGED ? MF_ERR_CHANGED : MF_ERR_IO, "read error while hashing %s", t->name);
    return rc ? mf_fail(MF_ERR_IO, "read error while hashing %s", t->name) : MF_OK;
}

int mf_hash_tensor(const mf_session *s, const mf_hf_tensor *t, uint64_t *out)
{
    return hash_pieces(s, t, out, NULL);
}

/* A one-piece tensor that shows a whole source shard as it is stored. */
static int hash_shard(const mf_session *s, const mf_shard *sh, uint64_t *out, uint64_t *bytes)
{
    int64_t rows, cols, rs, cs;
    if (mf_tensor_2d(&sh->t, &rows, &cols, &rs, &cs) != 0)
        return mf_fail(MF_ERR_UNSUPPORTED, "cannot view a shard as a matrix");
    mf_piece p = { .src = sh, .rows = (uint32_t)rows, .cols = (uint32_t)cols };
    mf_hf_tensor t = { .name = "shard", .dtype = sh->t.dtype, .src_dtype = sh->t.dtype, .ndim = 2,
                       .shape = { rows, cols }, .pieces = &p, .n_pieces = 1 };
    t.nbytes = (uint64_t)rows * (uint64_t)cols * mf_dtype_size(sh->t.dtype);
    return hash_pieces(s, &t, out, bytes);
}

typedef struct {
    mf_session *s;
    mf_verify_report *r;
    int file;
} verify_ctx;

static void mismatch(verify_ctx *v, const char *name, int a, int b)
{
    v->r->mismatches++;
    if (v->r->first_mismatch[0] == 0)
        snprintf(v->r->first_mismatch, sizeof(v->r->first_mismatch), "'%s' differs between %s and %s", name,
                 v->s->ckpt.files[a].path, v->s->ckpt.files[b].path);
}

static int visit(mf_checkpoint *c, void *ctx, const char *name, int expert, int n_shards, int shard, const mf_shard *sh)
{
    verify_ctx *v = ctx;
    const char *main_name = name;
    if (strcmp(name, "stage_copy.output_layer.weight") == 0)
        main_name = "embedding.word_embeddings.weight";   /* tied head copy */
    else if (strncmp(name, "stage_copy.", 11) == 0)
        main_name = name + 11;
    mf_source *src = mf_checkpoint_find(c, main_name);
    if (src == NULL || shard >= src->n_shards || src->shards[shard].file < 0)
        return MF_OK;
    const mf_shard *kept = &src->shards[shard];
    if (kept->file == sh->file && kept->t.offset == sh->t.offset)
        return MF_OK;   /* this is the copy the view serves */
    uint64_t h1, h2;
    int rc = hash_shard(v->s, kept, &h1, &v->r->bytes_hashed);
    if (rc == 0)
        rc = hash_shard(v->s, sh, &h2, &v->r->bytes_hashed);
    if (rc)
        return rc;
    v->r->copies_compared++;
    if (h1 != h2 || memcmp(kept->t.shape, sh->t.shape, sizeof(sh->t.shape)) != 0)
        mismatch(v, name, kept->file, sh->file);
    return MF_OK;
}

int mf_verify_sources(mf_session *s)
{
    for (size_t i = 0; i < s->ckpt.n_sources; i++) {
        const mf_source *src = &s->ckpt.sources[i];
        for (int k = 0; k < src->n_shards; k++) {
            mf_tensor located;
            int rc = src->shards[k].file >= 0 ? mf_shard_locate(&src->shards[k], &located) : MF_OK;
            if (rc)
                return rc;
        }
    }
    return MF_OK;
}

int mf_verify_replicas(mf_session *s, mf_verify_report *r)
{
    memset(r, 0, sizeof(*r));
    verify_ctx v = { s, r, 0 };
    /* 1. copies in other files of the same (name, shard); torch_dist stores each tensor once */
    for (size_t i = 0; s->ckpt.format == MF_FORMAT_TORCH && i < s->ckpt.n_files; i++) {
        /* the descriptor opened at mount, not the path: a file renamed over since reads the same */
        const mf_rankfile *rf = &s->ckpt.files[i];
        mf_torchfile tf;
        int rc = mf_torchfile_open_window(&tf, rf->fd, rf->path, 0, 0, 0);
        if (rc)
            return rc;
        v.file = (int)i;
        rc = mf_checkpoint_walk_file(&s->ckpt, (int)i, visit, &v, &tf);
        mf_torchfile_close(&tf);
        if (rc == 0)
            rc = mf_file_id_check(rf->fd, &rf->id, rf->path);
        if (rc)
            return rc;
    }
    /* 2. replicated tensors (norms, routers, biases of row-parallel layers) agree over TP */
    for (size_t i = 0; i < s->map.n; i++) {
        const mf_hf_tensor *t = &s->map.tensors[i];
        const mf_source *src = t->source;
        if (mf_split_tp(t->split) != MF_TP_REPL || src->positioned)
            continue;
        uint64_t h0 = 0, h;
        int first = -1;
        for (int k = 0; k < src->n_shards; k++) {
            if (src->shards[k].file < 0)
                continue;
            int rc = hash_shard(s, &src->shards[k], &h, &r->bytes_hashed);
            if (rc)
                return rc;
            if (first < 0) {
                first = k;
                h0 = h;
                continue;
            }
            r->copies_compared++;
            if (h != h0) {
                verify_ctx mv = { s, r, 0 };
                mismatch(&mv, src->name, src->shards[first].file, src->shards[k].file);
            }
        }
    }
    return MF_OK;
}
