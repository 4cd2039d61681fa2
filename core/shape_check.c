/* Expected shapes of source tensors from the args, per rule dims and split kind. Megatron
 * splits every parallel dimension evenly, so a shard of another size (or a reshaped tensor)
 * means the bytes would be cut at the wrong places: refuse instead. */
#include <stdio.h>
#include "mcorefs/error.h"
#include "mcorefs/mapping.h"
#include "placement.h"
#include "shape_check.h"

int64_t mf_dim_size(const mf_model *m, mf_dim dim)
{
    int64_t glu = m->swiglu ? 2 : 1;
    switch (dim) {
    case MF_D_NONE: return 0;
    case MF_D_ONE: return 1;
    case MF_D_HIDDEN: return m->hidden;
    case MF_D_HIDDEN_X2: return 2 * m->hidden;
    case MF_D_FC1: return glu * m->ffn;
    case MF_D_FFN: return m->ffn;
    case MF_D_MOE_FC1: return glu * m->moe_ffn;
    case MF_D_MOE_FFN: return m->moe_ffn;
    case MF_D_SHARED_FC1: return glu * m->shared_ffn;
    case MF_D_SHARED_FFN: return m->shared_ffn;
    case MF_D_QKV: return ((m->attn_output_gate ? 2 : 1) * m->heads + 2 * m->groups) * m->head_dim;
    case MF_D_ATTN_OUT: return m->heads * (m->mla ? m->mla_dims.v_head_dim : m->head_dim);
    case MF_D_HEAD_DIM: return m->head_dim;
    case MF_D_VOCAB: return m->padded_vocab;
    case MF_D_EXPERTS: return m->num_experts;
    case MF_D_Q_LORA: return m->mla_dims.q_lora_rank;
    case MF_D_KV_A: return m->mla_dims.kv_lora_rank + m->mla_dims.qk_pos_dim;
    case MF_D_KV_LORA: return m->mla_dims.kv_lora_rank;
    case MF_D_MLA_Q: return m->heads * (m->mla_dims.qk_head_dim + m->mla_dims.qk_pos_dim);
    case MF_D_MLA_KV: return m->heads * (m->mla_dims.qk_head_dim + m->mla_dims.v_head_dim);
    case MF_D_HEADS: return m->heads;
    case MF_D_GDN_IN:
        return 2 * m->gdn.key_heads * m->gdn.key_head_dim + 2 * mf_dim_size(m, MF_D_GDN_V) + 2 * m->gdn.value_heads;
    case MF_D_GDN_CONV: return 2 * m->gdn.key_heads * m->gdn.key_head_dim + mf_dim_size(m, MF_D_GDN_V);
    case MF_D_GDN_V: return m->gdn.value_heads * m->gdn.value_head_dim;
    case MF_D_GDN_VHEADS: return m->gdn.value_heads;
    case MF_D_GDN_VHEAD: return m->gdn.value_head_dim;
    case MF_D_GDN_KERNEL: return m->gdn.conv_kernel;
    }
    return 0;
}

/* The args that give a dimension, for messages. */
static const char *dim_words(mf_dim dim)
{
    switch (dim) {
    case MF_D_NONE: return "-";
    case MF_D_ONE: return "1";
    case MF_D_HIDDEN: return "hidden_size";
    case MF_D_HIDDEN_X2: return "2 x hidden_size";
    case MF_D_FC1: return "2 x ffn_hidden_size";
    case MF_D_FFN: return "ffn_hidden_size";
    case MF_D_MOE_FC1: return "2 x moe_ffn_hidden_size";
    case MF_D_MOE_FFN: return "moe_ffn_hidden_size";
    case MF_D_SHARED_FC1: return "2 x moe_shared_expert_intermediate_size";
    case MF_D_SHARED_FFN: return "moe_shared_expert_intermediate_size";
    case MF_D_QKV: return "(num_attention_heads + 2 x num_query_groups) x kv_channels";
    case MF_D_ATTN_OUT: return "num_attention_heads x kv_channels (MLA: v_head_dim)";
    case MF_D_HEAD_DIM: return "kv_channels";
    case MF_D_VOCAB: return "padded_vocab_size";
    case MF_D_EXPERTS: return "num_experts";
    case MF_D_Q_LORA: return "q_lora_rank";
    case MF_D_KV_A: return "kv_lora_rank + qk_pos_emb_head_dim";
    case MF_D_KV_LORA: return "kv_lora_rank";
    case MF_D_MLA_Q: return "num_attention_heads x (qk_head_dim + qk_pos_emb_head_dim)";
    case MF_D_MLA_KV: return "num_attention_heads x (qk_head_dim + v_head_dim)";
    case MF_D_HEADS: return "num_attention_heads";
    case MF_D_GDN_IN: return "2 x linear key dim + 2 x linear value dim + 2 x linear_num_value_heads";
    case MF_D_GDN_CONV: return "2 x linear key dim + linear value dim";
    case MF_D_GDN_V: return "linear_num_value_heads x linear_value_head_dim";
    case MF_D_GDN_VHEADS: return "linear_num_value_heads";
    case MF_D_GDN_VHEAD: return "linear_value_head_dim";
    case MF_D_GDN_KERNEL: return "linear_conv_kernel_dim";
    }
    return "?";
}

mf_shape mf_shape_global(const mf_model *m, const mf_rule *r)
{
    mf_shape g = { r->cols == MF_D_NONE ? 1 : 2, { mf_dim_size(m, r->rows), 1 } };
    if (g.ndim == 2)
        g.d[1] = mf_dim_size(m, r->cols);
    if (r->split == MF_SPLIT_GDN_CONV) {   /* conv1d [channels, 1, kernel] */
        g.ndim = 3;
        g.d[2] = g.d[1];
        g.d[1] = 1;
    }
    return g;
}

/* Rows per shard for a split of dim 0 into n equal parts, with the unit the split must keep
 * whole. Fused QKV is read as the concatenation of its shards and then de-interleaved by
 * query group, which is right exactly when every shard holds rows/n rows (with fewer query
 * groups than ranks Megatron replicates K/V heads, so such shards are larger and refused). A
 * gated fc1 shard is [gate_t; up_t] and is halved: each half must have ffn/n rows. */
static int split_rows(mf_split split, const mf_model *m, int64_t rows, int n, const char *name, int64_t *out)
{
    int64_t unit = 1;
    const char *what = "rows";
    if (mf_split_tp(split) == MF_TP_GLU && m->swiglu) {
        unit = 2;                                           /* each shard is [gate_t; up_t] */
        what = "gate/up row pairs";
    }
    if (mf_split_tp(split) == MF_TP_SECTIONS) {             /* every section splits evenly */
        int64_t sec[MF_MAX_SECTIONS];
        int ns = mf_sections(m, split, sec);
        for (int i = 0; i < ns; i++)
            if (sec[i] % n != 0)
                return mf_fail(MF_ERR_INCONSISTENT, "'%s': a section of %lld rows does not split into %d equal parts",
                               name, (long long)sec[i], n);
    }
    if (unit <= 0 || rows % unit != 0 || (rows / unit) % n != 0)
        return mf_fail(MF_ERR_INCONSISTENT, "'%s': the args give %lld rows, which do not split into %d equal parts of whole %s",
                       name, (long long)rows, n, what);
    *out = rows / n;
    return MF_OK;
}

int mf_shape_shard(const mf_model *m, mf_split split, const mf_shape *g, int n, const char *name, mf_shape *out)
{
    *out = *g;
    if (n <= 1 || mf_split_tp(split) == MF_TP_REPL)
        return MF_OK;
    if (mf_split_tp(split) == MF_TP_DIM1) {
        if (g->ndim < 2)
            return MF_OK;   /* a row-parallel layer's bias is replicated */
        if (g->d[1] % n != 0)
            return mf_fail(MF_ERR_INCONSISTENT, "'%s': the args give %lld columns, which do not split into %d equal parts",
                           name, (long long)g->d[1], n);
        out->d[1] = g->d[1] / n;
        return MF_OK;
    }
    return split_rows(split, m, g->d[0], n, name, &out->d[0]);
}

static int same_shape(const mf_shape *e, int ndim, const int64_t *shape)
{
    if (ndim != e->ndim)
        return 0;
    for (int d = 0; d < ndim; d++)
        if (shape[d] != e->d[d])
            return 0;
    return 1;
}

static void fmt_shape(char *out, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(out + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n)
        snprintf(out + k, n - k, "]");
}

/* "rows: 2 x ffn_hidden_size / 2 ranks; cols: hidden_size" for the dimensions of the rule. */
static void explain(char *out, size_t n, const mf_rule *r, mf_split split, int ranks)
{
    int div_rows = ranks > 1 && mf_split_tp(split) != MF_TP_REPL && mf_split_tp(split) != MF_TP_DIM1;
    int div_cols = ranks > 1 && mf_split_tp(split) == MF_TP_DIM1;
    char per[32];
    snprintf(per, sizeof(per), " / %d ranks", ranks);
    if (r->cols == MF_D_NONE)
        snprintf(out, n, "%s%s", dim_words(r->rows), div_rows ? per : "");
    else
        snprintf(out, n, "rows: %s%s; cols: %s%s", dim_words(r->rows), div_rows ? per : "",
                 dim_words(r->cols), div_cols ? per : "");
}

static int mismatch(const char *file, const char *name, const char *which, int ndim, const int64_t *seen,
                    const mf_shape *want, const mf_rule *r, mf_split split, int ranks, const char *who)
{
    char a[96], b[96], why[256];
    fmt_shape(a, sizeof(a), ndim, seen);
    fmt_shape(b, sizeof(b), want->ndim, want->d);
    explain(why, sizeof(why), r, split, ranks);
    return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s'%s has shape %s, %s %s (%s)",
                   file, name, which, a, who, b, why);
}

/* torch_dist: .metadata gives the global shape g, chunks are placed inside it (a 3-D tensor
 * is kept as the matrix [d0 x d1, d2], its chunks whole on d1). */
static int check_positioned(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, const mf_shape *gp)
{
    mf_shape g = *gp;
    int ndim = s->n_shards ? s->shards[0].t.ndim : g.ndim;
    int64_t seen[3] = { s->grows, s->gcols, 1 };
    if (ndim == 3) {
        int64_t inner = s->shards[0].t.shape[1] > 0 ? s->shards[0].t.shape[1] : 1;
        seen[0] = s->grows / inner, seen[1] = inner, seen[2] = s->gcols;
    }
    if (!same_shape(&g, ndim, seen)) {
        char where[4200];
        snprintf(where, sizeof(where), "%s/.metadata", c->iter_dir);
        char who[300];   /* a save without args: the file that described the model */
        if (c->model.args_from[0])
            snprintf(who, sizeof who, "%s implies", c->model.args_from);
        else
            snprintf(who, sizeof who, "the args imply");
        return mismatch(where, s->name, " (global shape)", ndim, seen, &g, r, MF_SPLIT_REPL, 1, who);
    }
    return MF_OK;
}

int mf_shape_check_source(const mf_checkpoint *c, const mf_rule *r, const mf_source *s)
{
    const mf_model *m = &c->model;
    mf_shape g = mf_shape_global(m, r), want;
    if (s->positioned)
        return check_positioned(c, r, s, &g);
    int n = s->n_shards, first = -1;
    int rc = mf_shape_shard(m, r->split, &g, n, s->name, &want);
    if (rc)
        return rc;
    mf_split split = r->split;
    for (int k = 0; k < n; k++) {
        const mf_shard *sh = &s->shards[k];
        if (sh->file < 0)
            continue;
        if (first < 0) {
            first = k;
            /* MLA down-projections: replicated (full rows in every rank) or split on dim 0;
             * the first shard decides, its siblings must follow */
            if (split == MF_SPLIT_AUTO0 && same_shape(&g, sh->t.ndim, sh->t.shape)) {
                want = g;
                split = MF_SPLIT_REPL;
            }
        }
        if (!same_shape(&want, sh->t.ndim, sh->t.shape)) {
            char which[48];
            snprintf(which, sizeof(which), " (%s rank %d of %d)", s->expert ? "expert-tp" : "tp", k, n);
            return mismatch(c->files[sh->file].path, s->name, which, sh->t.ndim, sh->t.shape, &want, r, split, n,
                            "the args imply");
        }
    }
    return MF_OK;
}

int mf_shape_check_section_key(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, int64_t rows)
{
    mf_shape g = mf_shape_global(&c->model, r);
    g.d[0] = rows;
    return check_positioned(c, r, s, &g);
}
