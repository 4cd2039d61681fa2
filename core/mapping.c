/* Expand a family's rule tables over the checkpoint into HF tensors with recipes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "mcorefs/mapping.h"
#include "shape_check.h"

typedef struct {
    mf_mapping *mp;
    mf_checkpoint *c;
    const mf_options *o;
    size_t cap;
} builder;

static void subst(char *out, size_t n, const char *tmpl, long long layer, long long expert)
{
    size_t k = 0;
    for (const char *p = tmpl; *p && k + 1 < n; p++) {
        if (p[0] == '{' && (p[1] == 'L' || p[1] == 'E') && p[2] == '}') {
            k += (size_t)snprintf(out + k, n - k, "%lld", p[1] == 'L' ? layer : expert);
            p += 2;
        } else {
            out[k++] = *p;
        }
    }
    out[k < n ? k : n - 1] = 0;
}

static int when_holds(const mf_model *m, mf_when w)
{
    switch (w) {
    case MF_WHEN_ALWAYS: return 1;
    case MF_WHEN_QKV_BIAS: return m->qkv_bias;
    case MF_WHEN_QK_NORM: return m->qk_norm;
    case MF_WHEN_Q_LORA: return m->mla_dims.q_lora_rank > 0;
    case MF_WHEN_NO_Q_LORA: return m->mla_dims.q_lora_rank <= 0;
    case MF_WHEN_SHARED: return m->shared_ffn > 0;
    case MF_WHEN_SHARED_GATE: return m->shared_ffn > 0 && m->moe_shared_gate;
    case MF_WHEN_EXPERT_BIAS: return m->moe_expert_bias;
    case MF_WHEN_ROUTER_BIAS: return m->moe_router_bias;
    case MF_WHEN_UNTIED: return !m->tied;
    case MF_WHEN_LINEAR_BIAS: return m->add_bias_linear;
    case MF_WHEN_GLU: return m->swiglu;
    case MF_WHEN_NOT_GLU: return !m->swiglu;
    case MF_WHEN_MTP_COPIES: return m->mtp_head_copies;
    case MF_WHEN_MTP_COPIES_UNTIED: return m->mtp_head_copies && !m->tied;
    case MF_WHEN_MTP_COPIES_TIED: return m->mtp_head_copies && m->tied;
    }
    return 0;
}

typedef struct {
    mf_piece *p;
    uint32_t n, cap;
} piece_vec;

static int push(piece_vec *v, const mf_shard *src, int64_t dr, int64_t dc, int64_t sr, int64_t sc, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return MF_OK;
    if (v->n == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 4;
        mf_piece *np = realloc(v->p, cap * sizeof(*np));
        if (!np)
            return mf_fail(MF_ERR_NOMEM, "out of memory (recipes)");
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = (mf_piece){ src, (uint32_t)dr, (uint32_t)dc, (uint32_t)sr, (uint32_t)sc, (uint32_t)rows, (uint32_t)cols };
    return MF_OK;
}

/* Rows [g0, g0+cnt) of the dim-0 concatenation of all shards -> dst rows from dst_row. */
static int add_global_rows(piece_vec *v, const mf_source *s, const int64_t *srows, int64_t g0, int64_t cnt,
                           int64_t dst_row, int64_t cols)
{
    int64_t base = 0;
    for (int k = 0; k < s->n_shards; k++) {
        int64_t a = g0 > base ? g0 : base;
        int64_t b = g0 + cnt < base + srows[k] ? g0 + cnt : base + srows[k];
        if (b > a) {
            int rc = push(v, &s->shards[k], dst_row + (a - g0), 0, a - base, 0, b - a, cols);
            if (rc)
                return rc;
        }
        base += srows[k];
    }
    return MF_OK;
}

static const char *c_path(const builder *b, const mf_source *s, int k)
{
    return s->shards[k].file >= 0 ? b->c->files[s->shards[k].file].path : b->c->iter_dir;
}

static const char *src_file(const mf_checkpoint *c, const mf_source *s)
{
    for (int k = 0; k < s->n_shards; k++)
        if (s->shards[k].file >= 0)
            return c->files[s->shards[k].file].path;
    return c->iter_dir;
}

/* Shape, dtype and size of a built HF tensor; the recipe's pieces move into it. */
static void finish_tensor(const builder *b, const mf_rule *r, const mf_source *s, const mf_tensor *t0,
                          const char *hf, piece_vec *v, int64_t rows, int64_t cols, mf_hf_tensor *t)
{
    t->pieces = v->p;
    t->n_pieces = v->n;
    t->ndim = t0->ndim <= 1 ? 1 : 2;
    t->shape[0] = rows;
    t->shape[1] = t->ndim == 2 ? cols : 1;
    t->split = r->split;
    t->source = s;
    t->src_dtype = t->dtype = t0->dtype;
    if (b->o->dtype != MF_DT_INVALID && mf_dtype_is_float(t0->dtype) &&
        strstr(hf, "e_score_correction_bias") == NULL)   /* kept F32, as transformers does */
        t->dtype = b->o->dtype;
    t->nbytes = (uint64_t)rows * (uint64_t)t->shape[1] * mf_dtype_size(t->dtype);
}

/* Rectangle [gr0, gr0+nr) x [gc0, gc0+nc) of a positioned (torch_dist) source's global tensor,
 * intersected with each chunk, placed at (dr0, dc0) of the HF tensor. */
static int add_global_rect(piece_vec *v, const mf_source *s, int64_t gr0, int64_t gc0, int64_t nr, int64_t nc,
                           int64_t dr0, int64_t dc0)
{
    for (int k = 0; k < s->n_shards; k++) {
        const mf_shard *sh = &s->shards[k];
        int64_t rows, cols, rs, cs;
        if (mf_tensor_2d(&sh->t, &rows, &cols, &rs, &cs) != 0)
            return mf_fail(MF_ERR_UNSUPPORTED, "'%s': a chunk cannot be viewed as a matrix", s->name);
        int64_t r0 = gr0 > sh->row0 ? gr0 : sh->row0, r1 = gr0 + nr < sh->row0 + rows ? gr0 + nr : sh->row0 + rows;
        int64_t c0 = gc0 > sh->col0 ? gc0 : sh->col0, c1 = gc0 + nc < sh->col0 + cols ? gc0 + nc : sh->col0 + cols;
        if (r1 <= r0 || c1 <= c0)
            continue;
        int rc = push(v, sh, dr0 + (r0 - gr0), dc0 + (c0 - gc0), r0 - sh->row0, c0 - sh->col0, r1 - r0, c1 - c0);
        if (rc)
            return rc;
    }
    return MF_OK;
}

/* torch_dist: the global tensor is already unsharded (fc1 is [gate; up], QKV keeps its group
 * interleave), so every split is the TP=1 case over one global matrix. */
static int build_positioned(builder *b, const mf_rule *r, const mf_source *s, const char *hf, mf_hf_tensor *t)
{
    const mf_model *m = &b->c->model;
    int64_t R = s->grows, C = s->gcols, rows = R, d = m->head_dim, ng = m->groups, rq = m->heads / m->groups;
    piece_vec v = { 0 };
    int rc = MF_OK;
    if (s->n_shards == 0)
        return mf_fail(MF_ERR_MISSING, "%s: '%s' has no chunks", b->c->iter_dir, s->name);
    switch (r->split) {
    case MF_SPLIT_VOCAB:
        if (R != m->padded_vocab)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld vocab rows, args say padded_vocab_size=%lld",
                           b->c->iter_dir, s->name, (long long)R, (long long)m->padded_vocab);
        rows = m->vocab;
        rc = add_global_rect(&v, s, 0, 0, rows, C, 0, 0);
        break;
    case MF_SPLIT_QKV_Q:
    case MF_SPLIT_QKV_K:
    case MF_SPLIT_QKV_V:
        if (R != (m->heads + 2 * ng) * d)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld rows, args say (heads + 2 x groups) x head_dim = %lld",
                           b->c->iter_dir, s->name, (long long)R, (long long)((m->heads + 2 * ng) * d));
        for (int64_t g = 0; g < ng && rc == 0; g++) {
            int64_t blk = g * (rq + 2) * d;
            if (r->split == MF_SPLIT_QKV_Q)
                rc = add_global_rect(&v, s, blk, 0, rq * d, C, g * rq * d, 0);
            else if (r->split == MF_SPLIT_QKV_K)
                rc = add_global_rect(&v, s, blk + rq * d, 0, d, C, g * d, 0);
            else
                rc = add_global_rect(&v, s, blk + (rq + 1) * d, 0, d, C, g * d, 0);
        }
        rows = (r->split == MF_SPLIT_QKV_Q ? m->heads : ng) * d;
        break;
    case MF_SPLIT_GLU_GATE:
    case MF_SPLIT_GLU_UP:
        if (R % 2)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has an odd row count %lld for [gate; up]", b->c->iter_dir, s->name, (long long)R);
        rows = R / 2;
        rc = add_global_rect(&v, s, r->split == MF_SPLIT_GLU_GATE ? 0 : rows, 0, rows, C, 0, 0);
        break;
    default:   /* replicated or concatenated: the global tensor as it is */
        rc = add_global_rect(&v, s, 0, 0, R, C, 0, 0);
        break;
    }
    if (rc) {
        free(v.p);
        return rc;
    }
    finish_tensor(b, r, s, &s->shards[0].t, hf, &v, rows, C, t);
    return MF_OK;
}

/* Build the pieces of one HF tensor from source s according to the rule's split. */
static int build_recipe(builder *b, const mf_rule *r, const mf_source *s, const char *hf, mf_hf_tensor *t)
{
    int shape_rc = mf_shape_check_source(b->c, r, s);
    if (shape_rc)
        return shape_rc;
    if (s->positioned)
        return build_positioned(b, r, s, hf, t);
    const mf_model *m = &b->c->model;
    const char *file = src_file(b->c, s);
    int64_t srows[256], scols[256], rs, cs;
    int first = -1, n = s->n_shards;
    mf_split split = r->split;
    piece_vec v = { 0 };
    int rc = MF_OK;

    if (n > 256)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s' has %d shards (max 256)", file, s->name, n);
    for (int k = 0; k < n; k++) {
        if (s->shards[k].file < 0) {
            srows[k] = scols[k] = 0;
            continue;
        }
        if (mf_tensor_2d(&s->shards[k].t, &srows[k], &scols[k], &rs, &cs) != 0)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s' has %d dims and cannot be viewed as a matrix", file, s->name, s->shards[k].t.ndim);
        if (first < 0)
            first = k;
    }
    if (first < 0)
        return mf_fail(MF_ERR_MISSING, "%s: no shard of '%s'", file, s->name);
    const mf_tensor *t0 = &s->shards[first].t;

    if (split == MF_SPLIT_AUTO0) {
        int64_t full = mf_dim_size(m, r->rows);
        split = srows[first] == full ? MF_SPLIT_REPL : MF_SPLIT_DIM0;
    }
    if (split != MF_SPLIT_REPL) {
        for (int k = 0; k < n; k++) {
            if (s->shards[k].file < 0)
                return mf_fail(MF_ERR_MISSING, "%s: shard %d of %d of '%s' is missing (needed for %s)", b->c->iter_dir, k, n, s->name, hf);
            const mf_tensor *tk = &s->shards[k].t;
            int same_other = split == MF_SPLIT_DIM1 ? srows[k] == srows[first] : scols[k] == scols[first];
            if (tk->dtype != t0->dtype || tk->ndim != t0->ndim || !same_other)
                return mf_fail(MF_ERR_INCONSISTENT, "%s: shards of '%s' disagree in dtype or shape", c_path(b, s, k), s->name);
        }
    }
    int64_t sum_rows = 0;
    for (int k = 0; k < n; k++)
        sum_rows += srows[k];
    int64_t rows = 0, cols = scols[first];
    int64_t d = m->head_dim, ng = m->groups, rq = m->heads / m->groups;
    switch (split) {
    case MF_SPLIT_REPL:
        rows = srows[first];
        rc = push(&v, &s->shards[first], 0, 0, 0, 0, rows, cols);
        break;
    case MF_SPLIT_DIM0:
    case MF_SPLIT_VOCAB:
        rows = sum_rows;
        if (split == MF_SPLIT_VOCAB) {
            if (sum_rows != m->padded_vocab)
                return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld vocab rows, args say padded_vocab_size=%lld",
                               file, s->name, (long long)sum_rows, (long long)m->padded_vocab);
            rows = m->vocab;
        }
        rc = add_global_rows(&v, s, srows, 0, rows, 0, cols);
        break;
    case MF_SPLIT_DIM1:
        rows = srows[first];
        cols = 0;
        for (int k = 0; k < n && rc == 0; k++) {
            rc = push(&v, &s->shards[k], 0, cols, 0, 0, rows, scols[k]);
            cols += scols[k];
        }
        break;
    case MF_SPLIT_QKV_Q:
    case MF_SPLIT_QKV_K:
    case MF_SPLIT_QKV_V:
        if (sum_rows != (m->heads + 2 * ng) * d)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has %lld rows, args say (heads %lld + 2 x groups %lld) x head_dim %lld = %lld",
                           file, s->name, (long long)sum_rows, (long long)m->heads, (long long)ng, (long long)d,
                           (long long)((m->heads + 2 * ng) * d));
        for (int64_t g = 0; g < ng && rc == 0; g++) {
            int64_t blk = g * (rq + 2) * d;   /* group g: [q x rq heads, k, v] */
            if (split == MF_SPLIT_QKV_Q)
                rc = add_global_rows(&v, s, srows, blk, rq * d, g * rq * d, cols);
            else if (split == MF_SPLIT_QKV_K)
                rc = add_global_rows(&v, s, srows, blk + rq * d, d, g * d, cols);
            else
                rc = add_global_rows(&v, s, srows, blk + (rq + 1) * d, d, g * d, cols);
        }
        rows = (split == MF_SPLIT_QKV_Q ? m->heads : ng) * d;
        break;
    case MF_SPLIT_GLU_GATE:
    case MF_SPLIT_GLU_UP:
        for (int k = 0; k < n && rc == 0; k++) {
            if (srows[k] % 2)
                return mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' has an odd row count %lld for a gated [gate; up] weight",
                               c_path(b, s, k), s->name, (long long)srows[k]);
            int64_t half = srows[k] / 2;
            rc = push(&v, &s->shards[k], rows, 0, split == MF_SPLIT_GLU_GATE ? 0 : half, 0, half, cols);
            rows += half;
        }
        break;
    case MF_SPLIT_AUTO0:
        break;
    }
    if (rc) {
        free(v.p);
        return rc;
    }
    finish_tensor(b, r, s, t0, hf, &v, rows, cols, t);
    return MF_OK;
}

static int emit(builder *b, const mf_rule *r, long long layer, long long expert, int show, int mtp)
{
    const mf_model *m = &b->c->model;
    char hf[320], src[320];
    mf_source *s = NULL;
    if (!when_holds(m, r->when))
        return MF_OK;
    subst(hf, sizeof(hf), r->hf, layer, expert);
    for (int i = 0; i < 3 && r->src[i] && s == NULL; i++) {
        subst(src, sizeof(src), r->src[i], layer, expert);
        s = mf_checkpoint_find(b->c, src);
    }
    if (s == NULL) {
        subst(src, sizeof(src), r->src[0], layer, expert);
        return mf_fail(MF_ERR_MISSING, "%s: tensor '%s' (which %s needs for %s) is in no rank file%s",
                       b->c->iter_dir, src, m->family->architecture, hf, b->o->arch ? "; check -o arch=" : "");
    }
    s->used = 1;
    if (!show)
        return MF_OK;
    if (b->mp->n == b->cap) {
        /* about one HF tensor per source (QKV and gate/up give a few more): sized once */
        size_t cap = b->cap ? b->cap * 2 : b->c->n_sources + b->c->n_sources / 4 + 256;
        mf_hf_tensor *nt = realloc(b->mp->tensors, cap * sizeof(*nt));
        if (!nt)
            return mf_fail(MF_ERR_NOMEM, "out of memory (HF tensors)");
        b->mp->tensors = nt;
        b->cap = cap;
    }
    mf_hf_tensor *t = &b->mp->tensors[b->mp->n];
    memset(t, 0, sizeof(*t));
    int rc = build_recipe(b, r, s, hf, t);
    if (rc)
        return rc;
    t->name = strdup(hf);
    if (!t->name) {
        free(t->pieces);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    t->layer = (int32_t)layer;
    t->mtp = (uint8_t)mtp;
    b->mp->n++;
    b->mp->total_bytes += t->nbytes;
    b->mp->num_params += (uint64_t)t->shape[0] * (uint64_t)t->shape[1];
    return MF_OK;
}

static int emit_rules(builder *b, const mf_rule *rules, long long layer, long long expert, int show, int mtp)
{
    for (const mf_rule *r = rules; r && r->hf; r++) {
        int rc = emit(b, r, layer, expert, show, mtp);
        if (rc)
            return rc;
    }
    return MF_OK;
}

static int emit_layer(builder *b, long long l, int moe, int show, int mtp)
{
    const mf_model *m = &b->c->model;
    const mf_family *f = m->family;
    int rc = emit_rules(b, f->attn, l, 0, show, mtp);
    if (rc == 0 && !moe)
        rc = emit_rules(b, f->dense_mlp, l, 0, show, mtp);
    if (rc == 0 && moe) {
        if (f->moe_mlp == NULL || f->expert == NULL)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: layer %lld is a MoE layer but family %s has no experts", b->c->iter_dir, l, f->name);
        rc = emit_rules(b, f->moe_mlp, l, 0, show, mtp);
        for (long long e = 0; rc == 0 && e < m->num_experts; e++)
            rc = emit_rules(b, f->expert, l, e, show, mtp);
    }
    if (rc == 0 && mtp)
        rc = emit_rules(b, f->mtp, l, 0, show, mtp);
    return rc;
}

/* With skip_mtp the MTP sources are accounted for without being shown. */
static void mark_mtp_used(mf_checkpoint *c)
{
    for (size_t i = 0; i < c->n_sources; i++) {
        const char *n = c->sources[i].name;
        if (strncmp(n, "mtp.", 4) == 0 ||
            (strncmp(n, "decoder.layers.", 15) == 0 && atoll(n + 15) >= c->model.num_layers))
            c->sources[i].used = 1;
    }
}

/* Every source tensor must be explained: a leftover means a feature the mapping ignores. */
static int check_all_used(const builder *b)
{
    const mf_checkpoint *c = b->c;
    for (size_t i = 0; i < c->n_sources; i++) {
        const mf_source *s = &c->sources[i];
        if (s->used || strncmp(s->name, "stage_copy.", 11) == 0)
            continue;
        int mtp_hint = strncmp(s->name, "mtp.", 4) == 0;
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: tensor '%s' has no place in a %s model (unsupported feature%s)",
                       src_file(c, s), s->name, c->model.family->name,
                       mtp_hint ? "; -o skip_mtp hides MTP layers" : " or wrong -o arch");
    }
    return MF_OK;
}

int mf_mapping_build(mf_mapping *mp, mf_checkpoint *c, const mf_options *o)
{
    builder b = { mp, c, o, 0 };
    const mf_model *m = &c->model;
    int rc;
    memset(mp, 0, sizeof(*mp));
    rc = emit(&b, &mf_rules_top[0], -1, 0, 1, 0);                 /* embed_tokens first */
    for (long long l = 0; rc == 0 && l < m->num_layers; l++)
        rc = emit_layer(&b, l, m->moe_layer[l], 1, 0);
    if (rc == 0 && m->mtp_layers > 0 && o->skip_mtp)
        mark_mtp_used(c);
    else if (rc == 0 && m->mtp_layers > 0 && m->family->mtp == NULL)
        rc = mf_fail(MF_ERR_UNSUPPORTED, "%s: checkpoint has %lld MTP layers but %s has none in HF; use -o skip_mtp",
                     c->iter_dir, (long long)m->mtp_layers, m->family->name);
    /* MTP layers follow the decoder layers and are built like the last one (MoE or dense). */
    for (long long k = 0; rc == 0 && !o->skip_mtp && k < m->mtp_layers; k++)
        rc = emit_layer(&b, m->num_layers + k, m->moe_layer[m->num_layers - 1], 1, 1);
    for (int i = 1; rc == 0 && mf_rules_top[i].hf; i++)
        rc = emit(&b, &mf_rules_top[i], -1, 0, 1, 0);
    if (rc == 0)
        rc = check_all_used(&b);
    if (rc)
        mf_mapping_free(mp);
    return rc;
}

void mf_mapping_free(mf_mapping *mp)
{
    for (size_t i = 0; i < mp->n; i++) {
        free(mp->tensors[i].name);
        free(mp->tensors[i].pieces);
    }
    free(mp->tensors);
    memset(mp, 0, sizeof(*mp));
}

const char *mf_split_name(mf_split s)
{
    static const char *const names[] = { "replicated", "concat-dim0", "concat-dim1", "qkv-q", "qkv-k",
                                         "qkv-v", "glu-gate", "glu-up", "vocab-trim", "auto-dim0" };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}
