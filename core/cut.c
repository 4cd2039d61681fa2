/* The cuts: each split is one function that takes HF tensors out of a source's global
 * (placed) tensor, for legacy shards and torch_dist chunks alike. */
#include <stdlib.h>
#include "mcorefs/error.h"
#include "placement.h"

int mf_piece_push(mf_piece_vec *v, const mf_piece *p)
{
    if (p->rows == 0 || p->cols == 0)
        return MF_OK;
    if (v->n == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 4;
        mf_piece *np = realloc(v->p, cap * sizeof(*np));
        if (!np)
            return mf_fail(MF_ERR_NOMEM, "out of memory (recipes)");
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = *p;
    return MF_OK;
}

/* The part of the global rectangle each placed part holds, as a piece: copied at (dr0, dc0), or
 * transposed with its rows becoming every dst_step-th column. */
static int cut_rect(mf_piece_vec *v, const mf_placed *pl, int64_t gr0, int64_t gc0, int64_t nr, int64_t nc,
                    int64_t dr0, int64_t dc0, int transposed, int dst_step)
{
    for (int k = 0; k < pl->n; k++) {
        const mf_part *a = &pl->parts[k];
        int64_t r0 = gr0 > a->row0 ? gr0 : a->row0, r1 = gr0 + nr < a->row0 + a->rows ? gr0 + nr : a->row0 + a->rows;
        int64_t c0 = gc0 > a->col0 ? gc0 : a->col0, c1 = gc0 + nc < a->col0 + a->cols ? gc0 + nc : a->col0 + a->cols;
        if (r1 <= r0 || c1 <= c0)
            continue;
        mf_piece p = { .src = a->sh,
                       .src_row = (uint32_t)(a->src_row + (r0 - a->row0)),
                       .src_col = (uint32_t)(a->src_col + (c0 - a->col0)) };
        if (transposed) {   /* destination rows are the part's columns, destination columns its rows */
            p.dst_row = (uint32_t)(dr0 + (c0 - gc0));
            p.dst_col = (uint32_t)(dc0 + (r0 - gr0) * dst_step);
            p.rows = (uint32_t)(c1 - c0);
            p.cols = (uint32_t)(r1 - r0);
            p.transposed = 1;
            p.dst_step = (uint8_t)dst_step;
        } else {
            p.dst_row = (uint32_t)(dr0 + (r0 - gr0));
            p.dst_col = (uint32_t)(dc0 + (c0 - gc0));
            p.rows = (uint32_t)(r1 - r0);
            p.cols = (uint32_t)(c1 - c0);
        }
        int rc = mf_piece_push(v, &p);
        if (rc)
            return rc;
    }
    return MF_OK;
}

int mf_cut_rect(mf_piece_vec *v, const mf_placed *pl, int64_t gr0, int64_t gc0, int64_t nr, int64_t nc,
                int64_t dr0, int64_t dc0)
{
    return cut_rect(v, pl, gr0, gc0, nr, nc, dr0, dc0, 0, 1);
}

int mf_cut_rect_t(mf_piece_vec *v, const mf_placed *pl, int64_t gr0, int64_t gc0, int64_t nr, int64_t nc,
                  int64_t dr0, int64_t dc0, int dst_step)
{
    return cut_rect(v, pl, gr0, gc0, nr, nc, dr0, dc0, 1, dst_step);
}

/* Replicated, TP dim 0 or dim 1, MLA down-projections: the global tensor as it is. */
static int cut_whole(const mf_placed *pl, mf_piece_vec *v, int64_t *rows)
{
    *rows = pl->rows;
    return mf_cut_rect(v, pl, 0, 0, pl->rows, pl->cols, 0, 0);
}

/* Embedding / output layer: the padded vocab rows, trimmed to the vocab shown. */
static int cut_vocab(const mf_model *m, const mf_placed *pl, const char *name, mf_piece_vec *v, int64_t *rows)
{
    if (pl->rows != m->padded_vocab)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld vocab rows, args say padded_vocab_size=%lld",
                       pl->where, name, (long long)pl->rows, (long long)m->padded_vocab);
    *rows = m->vocab;
    return mf_cut_rect(v, pl, 0, 0, m->vocab, pl->cols, 0, 0);
}

/* Fused QKV: per query group g the global rows are [q (heads/groups heads), k, v]; with the
 * output gate [q heads, gate heads, k, v], and HF's q_proj holds [q_j; gate_j] per head j. */
static int cut_qkv(const mf_model *m, mf_split split, const mf_placed *pl, const char *name, mf_piece_vec *v,
                   int64_t *rows)
{
    int64_t d = m->head_dim, ng = m->groups, rq = m->heads / m->groups, nq = m->attn_output_gate ? 2 : 1;
    int64_t want = (nq * m->heads + 2 * ng) * d;
    if (pl->rows != want)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld rows, args say (%sheads %lld + 2 x groups %lld) x head_dim %lld = %lld",
                       pl->where, name, (long long)pl->rows, nq == 2 ? "2 x " : "", (long long)m->heads, (long long)ng,
                       (long long)d, (long long)want);
    if (split == MF_SPLIT_QKV_QG && nq != 2)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s': q_proj with the output gate needs attention_output_gate", pl->where, name);
    if (split == MF_SPLIT_QKV_Q && nq == 2)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s' holds an attention output gate this family has no place for",
                       pl->where, name);
    int rc = MF_OK;
    for (int64_t g = 0; g < ng && rc == MF_OK; g++) {
        int64_t blk = g * (nq * rq + 2) * d;
        if (split == MF_SPLIT_QKV_Q)
            rc = mf_cut_rect(v, pl, blk, 0, rq * d, pl->cols, g * rq * d, 0);
        else if (split == MF_SPLIT_QKV_QG)
            for (int64_t j = 0; j < rq && rc == MF_OK; j++) {   /* head h = g x rq + j: [q_h; gate_h] */
                int64_t h = g * rq + j;
                rc = mf_cut_rect(v, pl, blk + j * d, 0, d, pl->cols, h * 2 * d, 0);
                if (rc == MF_OK)
                    rc = mf_cut_rect(v, pl, blk + (rq + j) * d, 0, d, pl->cols, h * 2 * d + d, 0);
            }
        else if (split == MF_SPLIT_QKV_K)
            rc = mf_cut_rect(v, pl, blk + nq * rq * d, 0, d, pl->cols, g * d, 0);
        else
            rc = mf_cut_rect(v, pl, blk + (nq * rq + 1) * d, 0, d, pl->cols, g * d, 0);
    }
    *rows = (split == MF_SPLIT_QKV_Q ? m->heads : split == MF_SPLIT_QKV_QG ? 2 * m->heads : ng) * d;
    return rc;
}

/* Gated delta net in_proj, globally [q; k; v; z; beta; alpha] (placed section by section): HF
 * regroups it per key head g (fix_query_key_value_ordering), in_proj_qkvz [q_g; k_g; v_g; z_g]
 * and in_proj_ba [beta_g; alpha_g], with value_heads / key_heads value heads per group. */
static int cut_gdn_in(const mf_model *m, mf_split split, const mf_placed *pl, const char *name, mf_piece_vec *v,
                      int64_t *rows)
{
    int64_t sec[MF_MAX_SECTIONS], want = 0, off[MF_MAX_SECTIONS + 1] = { 0 };
    int ns = mf_sections(m, split, sec);
    for (int i = 0; i < ns; i++) {
        want += sec[i];
        off[i + 1] = off[i] + sec[i];
    }
    if (pl->rows != want)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld rows, the linear_* args give %lld", pl->where, name,
                       (long long)pl->rows, (long long)want);
    int64_t nk = m->gdn.key_heads, dk = m->gdn.key_head_dim, vpg = m->gdn.value_heads / nk, dvg = vpg * m->gdn.value_head_dim;
    int rc = MF_OK;
    for (int64_t g = 0; g < nk && rc == MF_OK; g++) {
        if (split == MF_SPLIT_GDN_QKVZ) {
            int64_t at = g * (2 * dk + 2 * dvg);
            rc = mf_cut_rect(v, pl, off[0] + g * dk, 0, dk, pl->cols, at, 0);
            if (rc == MF_OK)
                rc = mf_cut_rect(v, pl, off[1] + g * dk, 0, dk, pl->cols, at + dk, 0);
            if (rc == MF_OK)
                rc = mf_cut_rect(v, pl, off[2] + g * dvg, 0, dvg, pl->cols, at + 2 * dk, 0);
            if (rc == MF_OK)
                rc = mf_cut_rect(v, pl, off[3] + g * dvg, 0, dvg, pl->cols, at + 2 * dk + dvg, 0);
        } else {
            rc = mf_cut_rect(v, pl, off[4] + g * vpg, 0, vpg, pl->cols, g * 2 * vpg, 0);
            if (rc == MF_OK)
                rc = mf_cut_rect(v, pl, off[5] + g * vpg, 0, vpg, pl->cols, g * 2 * vpg + vpg, 0);
        }
    }
    *rows = split == MF_SPLIT_GDN_QKVZ ? off[4] : sec[4] + sec[5];
    return rc;
}

/* conv1d channels [q; k; v] (placed section by section): HF keeps that order. */
static int cut_gdn_conv(const mf_model *m, const mf_placed *pl, const char *name, mf_piece_vec *v, int64_t *rows)
{
    int64_t sec[MF_MAX_SECTIONS];
    mf_sections(m, MF_SPLIT_GDN_CONV, sec);
    if (pl->rows != sec[0] + sec[1] + sec[2] || pl->cols != m->gdn.conv_kernel)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' is %lld x %lld, the linear_* args give %lld channels x kernel %lld",
                       pl->where, name, (long long)pl->rows, (long long)pl->cols, (long long)(sec[0] + sec[1] + sec[2]),
                       (long long)m->gdn.conv_kernel);
    return cut_whole(pl, v, rows);
}

/* Gated fc1: the global tensor is [gate; up]. */
static int cut_glu(mf_split split, const mf_placed *pl, const char *name, mf_piece_vec *v, int64_t *rows)
{
    if (pl->rows % 2)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has an odd row count %lld for [gate; up]",
                       pl->where, name, (long long)pl->rows);
    *rows = pl->rows / 2;
    return mf_cut_rect(v, pl, split == MF_SPLIT_GLU_GATE ? 0 : *rows, 0, *rows, pl->cols, 0, 0);
}

/* The global tensor transposed (HF [cols, rows]), e.g. an expert's down projection in a
 * stacked [E, F, H] tensor; a 1-D tensor (N x 1) becomes one row of N (its bias in [E, H]). */
static int cut_transposed(const mf_placed *pl, mf_piece_vec *v, int64_t *rows, int64_t *cols)
{
    *rows = pl->cols;
    *cols = pl->rows;
    return mf_cut_rect_t(v, pl, 0, 0, pl->rows, pl->cols, 0, 0, 1);
}

/* Gated fc1 [gate; up] (2F x H) shown as H x 2F with gate in the even and up in the odd
 * columns (gpt-oss gate_up_proj); a 1-D [gate; up] bias becomes one row of 2F, interleaved alike
 * (gate_up_proj_bias). */
static int cut_glu_interleave_t(const mf_placed *pl, const char *name, mf_piece_vec *v, int64_t *rows,
                                int64_t *cols)
{
    if (pl->rows % 2)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' (%lld rows) is not a [gate; up] weight or bias",
                       pl->where, name, (long long)pl->rows);
    int64_t f = pl->rows / 2;
    *rows = pl->cols;
    *cols = pl->rows;
    int rc = mf_cut_rect_t(v, pl, 0, 0, f, pl->cols, 0, 0, 2);
    return rc ? rc : mf_cut_rect_t(v, pl, f, 0, f, pl->cols, 0, 1, 2);
}

int mf_cut(const mf_model *m, mf_split split, const mf_placed *pl, const char *name, mf_piece_vec *v,
           int64_t *rows, int64_t *cols)
{
    *cols = pl->cols;
    switch (split) {
    case MF_SPLIT_VOCAB:
        return cut_vocab(m, pl, name, v, rows);
    case MF_SPLIT_QKV_Q:
    case MF_SPLIT_QKV_QG:
    case MF_SPLIT_QKV_K:
    case MF_SPLIT_QKV_V:
        return cut_qkv(m, split, pl, name, v, rows);
    case MF_SPLIT_GDN_QKVZ:
    case MF_SPLIT_GDN_BA:
        return cut_gdn_in(m, split, pl, name, v, rows);
    case MF_SPLIT_GDN_CONV:
        return cut_gdn_conv(m, pl, name, v, rows);
    case MF_SPLIT_GLU_GATE:
    case MF_SPLIT_GLU_UP:
        return cut_glu(split, pl, name, v, rows);
    case MF_SPLIT_DIM1_T:
        return cut_transposed(pl, v, rows, cols);
    case MF_SPLIT_GLU_INTERLEAVE_T:
        return cut_glu_interleave_t(pl, name, v, rows, cols);
    case MF_SPLIT_NORM_1P:
    case MF_SPLIT_NORM_PLAIN:
    case MF_SPLIT_REPL:
    case MF_SPLIT_DIM0:
    case MF_SPLIT_DIM1:
    case MF_SPLIT_AUTO0:
        break;
    }
    return cut_whole(pl, v, rows);
}
