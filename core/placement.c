/* Place every shard of a source in its global Megatron tensor (see placement.h). */
#include <stdlib.h>
#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "placement.h"
#include "shape_check.h"

static void add_part(mf_placed *pl, const mf_shard *sh, int64_t row0, int64_t col0, int64_t src_row,
                     int64_t rows, int64_t cols)
{
    pl->parts[pl->n++] = (mf_part){ sh, row0, col0, src_row, 0, rows, cols };
}

static int alloc_parts(mf_placed *pl, int n)
{
    pl->parts = calloc(n > 0 ? (size_t)n : 1, sizeof(*pl->parts));
    return pl->parts ? MF_OK : mf_fail(MF_ERR_NOMEM, "out of memory (placement)");
}

/* torch_dist: chunks already carry their place in the global tensor. */
static int place_chunks(const mf_checkpoint *c, const mf_source *s, mf_placed *pl)
{
    pl->where = c->iter_dir;
    if (s->n_shards == 0)
        return mf_fail(MF_ERR_MISSING, "%s: '%s' has no chunks", c->iter_dir, s->name);
    if (alloc_parts(pl, s->n_shards))
        return MF_ERR_NOMEM;
    for (int k = 0; k < s->n_shards; k++) {
        const mf_shard *sh = &s->shards[k];
        int64_t rows, cols, rs, cs;
        if (mf_tensor_2d(&sh->t, &rows, &cols, &rs, &cs) != 0)
            return mf_fail(MF_ERR_UNSUPPORTED, "'%s': a chunk cannot be viewed as a matrix", s->name);
        add_part(pl, sh, sh->row0, sh->col0, 0, rows, cols);
    }
    pl->rows = s->grows;
    pl->cols = s->gcols;
    pl->t0 = &s->shards[0].t;
    return MF_OK;
}

static void shard_matrix(const mf_shard *sh, int64_t *rows, int64_t *cols)
{
    int64_t rs, cs;
    mf_tensor_2d(&sh->t, rows, cols, &rs, &cs);
}

int mf_sections(const mf_model *m, mf_split split, int64_t *rows)
{
    int64_t qk = m->gdn.key_heads * m->gdn.key_head_dim, v = m->gdn.value_heads * m->gdn.value_head_dim;
    int64_t nv = m->gdn.value_heads;
    if (split == MF_SPLIT_GDN_CONV) {           /* conv1d channels: [q; k; v] */
        rows[0] = qk, rows[1] = qk, rows[2] = v;
        return 3;
    }
    rows[0] = qk, rows[1] = qk, rows[2] = v, rows[3] = v, rows[4] = nv, rows[5] = nv;   /* [q; k; v; z; beta; alpha] */
    return 6;
}

const char *const *mf_section_names(mf_split split)
{
    /* Megatron's GatedDeltaNet.sharded_state_dict (_split_tensor_factory) suffixes */
    static const char *const names[MF_MAX_SECTIONS] = { "query", "key", "value", "z", "beta", "alpha" };
    (void)split;   /* conv1d's [q; k; v] are the first three */
    return names;
}

int mf_place_section_keys(const mf_checkpoint *c, const mf_rule *r, const mf_source *const *keys, mf_placed *out)
{
    int64_t sec[MF_MAX_SECTIONS], off = 0;
    int ns = mf_sections(&c->model, r->split, sec), total = 0;
    *out = (mf_placed){ 0 };
    out->where = c->iter_dir;
    for (int i = 0; i < ns; i++)
        total += keys[i]->n_shards;
    if (alloc_parts(out, total))
        return MF_ERR_NOMEM;
    for (int i = 0; i < ns; i++) {
        mf_placed one = { 0 };
        int rc = place_chunks(c, keys[i], &one);
        if (rc == MF_OK && (one.cols != keys[0]->gcols || one.rows != sec[i]))
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s/.metadata: '%s' is %lld x %lld, its section is %lld x %lld",
                         c->iter_dir, keys[i]->name, (long long)one.rows, (long long)one.cols, (long long)sec[i],
                         (long long)keys[0]->gcols);
        for (int k = 0; rc == MF_OK && k < one.n; k++) {
            if (one.parts[k].sh->t.dtype != keys[0]->shards[0].t.dtype) {
                rc = mf_fail(MF_ERR_INCONSISTENT, "%s/.metadata: '%s' and '%s' (sections of one tensor) differ in dtype",
                             c->iter_dir, keys[0]->name, keys[i]->name);
                break;
            }
            mf_part p = one.parts[k];
            p.row0 += off;   /* section i starts below the sections before it */
            out->parts[out->n++] = p;
        }
        mf_placed_free(&one);
        if (rc) {
            mf_placed_free(out);
            return rc;
        }
        off += sec[i];
    }
    out->rows = off;
    out->cols = keys[0]->gcols;
    out->t0 = &keys[0]->shards[0].t;
    return MF_OK;
}

/* Legacy sectioned shards (pitfalls.md 14): rank k holds [s_0 / n; s_1 / n; ...]; section i of
 * rank k goes to global rows off_i + k x s_i / n, so the global tensor is [s_0; s_1; ...]. */
static int place_sections(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, mf_placed *pl)
{
    int64_t sec[MF_MAX_SECTIONS], want = 0, cols0 = 0;
    int ns = mf_sections(&c->model, r->split, sec), n = s->n_shards;
    for (int i = 0; i < ns; i++) {
        if (sec[i] % n)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s': a section of %lld rows does not split over %d ranks",
                           pl->where, s->name, (long long)sec[i], n);
        want += sec[i];
    }
    if (alloc_parts(pl, ns * n))
        return MF_ERR_NOMEM;
    for (int k = 0; k < n; k++) {
        const mf_shard *sh = &s->shards[k];
        int64_t rows, cols, src_row = 0, off = 0;
        if (sh->file < 0)
            return mf_fail(MF_ERR_MISSING, "%s: shard %d of %d of '%s' is missing", c->iter_dir, k, n, s->name);
        shard_matrix(sh, &rows, &cols);
        if (k == 0)
            cols0 = cols;
        if (rows * n != want || cols != cols0 || sh->t.dtype != s->shards[0].t.dtype)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld rows (x %d ranks), its sections sum to %lld",
                           c->files[sh->file].path, s->name, (long long)rows, n, (long long)want);
        for (int i = 0; i < ns; i++) {
            add_part(pl, sh, off + k * (sec[i] / n), 0, src_row, sec[i] / n, cols);
            src_row += sec[i] / n;
            off += sec[i];
        }
    }
    pl->rows = want;
    pl->cols = cols0;
    return MF_OK;
}

/* Legacy torch: shard k is TP (or expert-TP) rank k; the split says how the ranks divide the
 * global tensor. */
static int place_shards(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, mf_placed *pl)
{
    int first = -1, n = s->n_shards;
    for (int k = 0; k < n; k++) {
        const mf_shard *sh = &s->shards[k];
        int64_t rows, cols, rs, cs;
        if (sh->file < 0)
            continue;
        if (first < 0) {
            first = k;
            pl->where = c->files[sh->file].path;
        }
        if (mf_tensor_2d(&sh->t, &rows, &cols, &rs, &cs) != 0)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s' has %d dims and cannot be viewed as a matrix",
                           pl->where, s->name, sh->t.ndim);
    }
    if (first < 0)
        return mf_fail(MF_ERR_MISSING, "%s: no shard of '%s'", c->iter_dir, s->name);
    const mf_shard *s0 = &s->shards[first];
    int64_t rows0, cols0;
    shard_matrix(s0, &rows0, &cols0);
    pl->t0 = &s0->t;
    mf_tp_kind tp = mf_split_tp(r->split);
    if (tp == MF_TP_AUTO0)   /* MLA down-projections: full rows in every rank, or split */
        tp = rows0 == mf_dim_size(&c->model, r->rows) ? MF_TP_REPL : MF_TP_DIM0;
    if (tp == MF_TP_SECTIONS)
        return place_sections(c, r, s, pl);
    if (alloc_parts(pl, 2 * n))
        return MF_ERR_NOMEM;
    if (tp == MF_TP_REPL) {
        add_part(pl, s0, 0, 0, 0, rows0, cols0);
        pl->rows = rows0;
        pl->cols = cols0;
        return MF_OK;
    }
    int64_t sum_rows = 0;
    for (int k = 0; k < n; k++) {
        const mf_shard *sh = &s->shards[k];
        int64_t rows, cols;
        if (sh->file < 0)
            return mf_fail(MF_ERR_MISSING, "%s: shard %d of %d of '%s' is missing", c->iter_dir, k, n, s->name);
        shard_matrix(sh, &rows, &cols);
        int same_other = tp == MF_TP_DIM1 ? rows == rows0 : cols == cols0;
        if (sh->t.dtype != s0->t.dtype || sh->t.ndim != s0->t.ndim || !same_other)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: shards of '%s' disagree in dtype or shape",
                           c->files[sh->file].path, s->name);
        if (tp == MF_TP_GLU && rows % 2)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has an odd row count %lld for a gated [gate; up] weight",
                           c->files[sh->file].path, s->name, (long long)rows);
        sum_rows += rows;
    }
    int64_t at = 0;
    for (int k = 0; k < n; k++) {
        int64_t rows, cols;
        shard_matrix(&s->shards[k], &rows, &cols);
        if (tp == MF_TP_DIM1) {   /* row-parallel: ranks side by side */
            add_part(pl, &s->shards[k], 0, at, 0, rows, cols);
            at += cols;
        } else if (tp == MF_TP_GLU) {
            /* each rank holds [gate_k; up_k]: gate_k goes to the global gate half, up_k to the up half */
            add_part(pl, &s->shards[k], at, 0, 0, rows / 2, cols);
            add_part(pl, &s->shards[k], sum_rows / 2 + at, 0, rows / 2, rows / 2, cols);
            at += rows / 2;
        } else {                  /* column-parallel: ranks stacked on dim 0 */
            add_part(pl, &s->shards[k], at, 0, 0, rows, cols);
            at += rows;
        }
    }
    pl->rows = tp == MF_TP_DIM1 ? rows0 : sum_rows;
    pl->cols = tp == MF_TP_DIM1 ? at : cols0;
    return MF_OK;
}

mf_tp_kind mf_split_tp(mf_split split)
{
    switch (split) {
    case MF_SPLIT_REPL: return MF_TP_REPL;
    case MF_SPLIT_DIM1:
    case MF_SPLIT_DIM1_T: return MF_TP_DIM1;
    case MF_SPLIT_GLU_GATE:
    case MF_SPLIT_GLU_UP:
    case MF_SPLIT_GLU_INTERLEAVE_T: return MF_TP_GLU;
    case MF_SPLIT_AUTO0: return MF_TP_AUTO0;
    case MF_SPLIT_GDN_QKVZ:
    case MF_SPLIT_GDN_BA:
    case MF_SPLIT_GDN_CONV: return MF_TP_SECTIONS;
    case MF_SPLIT_NORM_1P:
    case MF_SPLIT_NORM_PLAIN: return MF_TP_REPL;
    case MF_SPLIT_QKV_QG:
    case MF_SPLIT_DIM0:
    case MF_SPLIT_VOCAB:
    case MF_SPLIT_QKV_Q:
    case MF_SPLIT_QKV_K:
    case MF_SPLIT_QKV_V: break;
    }
    return MF_TP_DIM0;
}

int mf_place(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, mf_placed *out)
{
    *out = (mf_placed){ 0 };
    int rc = s->positioned ? place_chunks(c, s, out) : place_shards(c, r, s, out);
    if (rc)
        mf_placed_free(out);
    return rc;
}

void mf_placed_free(mf_placed *pl)
{
    free(pl->parts);
    pl->parts = NULL;
    pl->n = 0;
}
