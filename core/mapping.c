/* Expand a family's rule tables over the checkpoint into HF tensors with recipes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "mcorefs/mapping.h"
#include "placement.h"
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

static const char *src_file(const mf_checkpoint *c, const mf_source *s)
{
    for (int k = 0; k < s->n_shards; k++)
        if (s->shards[k].file >= 0)
            return c->files[s->shards[k].file].path;
    return c->iter_dir;
}

static int split_transposes(mf_split s)
{
    return s == MF_SPLIT_DIM1_T || s == MF_SPLIT_GLU_INTERLEAVE_T;
}

/* What a norm weight needs added to go from Megatron's convention to HF's (pitfalls.md 15):
 * HF's x * (1 + w) norms take w - 1 from a plain Megatron norm, HF's plain gated norm takes
 * w + 1 from a zero-centred one. */
static float norm_offset(const mf_model *m, mf_split split)
{
    if (split == MF_SPLIT_NORM_1P)
        return m->zero_centered_norm ? 0.0f : -1.0f;
    if (split == MF_SPLIT_NORM_PLAIN)
        return m->zero_centered_norm ? 1.0f : 0.0f;
    return 0.0f;
}

/* Shape, dtype and size of a built HF tensor; the recipe's pieces move into it. stack > 0:
 * the tensor stacks that many experts in front ([stack, rows, cols]). */
static void finish_tensor(const builder *b, const mf_rule *r, const mf_source *s, const mf_tensor *t0,
                          const char *hf, mf_piece_vec *v, int64_t stack, int64_t rows, int64_t cols,
                          mf_hf_tensor *t)
{
    int d = 0;
    if (v->n < v->cap) {   /* kept for the mount's life: most tensors are one piece, the vector has 4 */
        mf_piece *exact = realloc(v->p, (v->n ? v->n : 1) * sizeof(*exact));
        if (exact)
            v->p = exact, v->cap = v->n;
    }
    t->pieces = v->p;
    t->n_pieces = v->n;
    if (stack > 0)
        t->shape[d++] = stack;
    if (r->split == MF_SPLIT_GDN_CONV) {   /* conv1d weight [channels, 1, kernel] */
        t->shape[d++] = rows;
        t->shape[d++] = 1;
        t->shape[d++] = cols;
    } else if (t0->ndim >= 2) {
        t->shape[d++] = rows;
        t->shape[d++] = cols;
    } else {   /* a 1-D source shown transposed is one row (rows == 1) of cols values */
        t->shape[d++] = split_transposes(r->split) ? cols : rows;
    }
    t->ndim = d;
    t->split = r->split;
    t->add = norm_offset(&b->c->model, r->split);
    t->source = s;
    t->src_dtype = t->dtype = t0->dtype;
    if (b->o->dtype != MF_DT_INVALID && mf_dtype_is_float(t0->dtype) && r->dtype == MF_DTYPE_SHOWN)
        t->dtype = b->o->dtype;
    uint64_t numel = 1;
    for (int k = 0; k < t->ndim; k++)
        numel *= (uint64_t)t->shape[k];
    t->nbytes = numel * mf_dtype_size(t->dtype);
}

/* torch_dist sectioned tensor (pitfalls.md 14): s is the first section's key `<name>.query`;
 * every section key `<name>.<section>` is looked up, checked and placed at its rows of the
 * global [s_0; s_1; ...], the tensor the legacy shards are placed in. */
static int place_section_keys(builder *b, const mf_rule *r, const mf_source *s, mf_placed *pl)
{
    const char *const *names = mf_section_names(r->split);
    int64_t sec[MF_MAX_SECTIONS];
    int ns = mf_sections(&b->c->model, r->split, sec);
    size_t len = strlen(s->name), sl = strlen(names[0]);
    if (len <= sl + 1 || s->name[len - sl - 1] != '.' || strcmp(s->name + len - sl, names[0]) != 0)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: '%s': a gated delta net tensor stored whole in a %s save is not supported "
                       "(its TP order is not recorded; torch_dist stores one key per section)", b->c->iter_dir, s->name,
                       mf_checkpoint_format_name(b->c));
    const mf_source *keys[MF_MAX_SECTIONS];
    for (int i = 0; i < ns; i++) {
        char name[320];
        snprintf(name, sizeof name, "%.*s%s", (int)(len - sl), s->name, names[i]);
        mf_source *k = mf_checkpoint_find(b->c, name);
        if (k == NULL || !k->positioned)
            return mf_fail(MF_ERR_MISSING, "%s/.metadata: '%s' (section %d of %d beside '%s') is missing", b->c->iter_dir,
                           name, i + 1, ns, s->name);
        int rc = mf_shape_check_section_key(b->c, r, k, sec[i]);
        if (rc)
            return rc;
        k->used = 1;
        keys[i] = k;
    }
    return mf_place_section_keys(b->c, r, keys, pl);
}

/* Place the source's shards in its global tensor, then cut the rule's split out of it (the
 * same cut for legacy shards and torch_dist chunks); the pieces are appended to v, their
 * destination rows moved down by dst_row0. */
static int cut_source(builder *b, const mf_rule *r, const mf_source *s, mf_piece_vec *v, int64_t dst_row0,
                      int64_t *rows, int64_t *cols, const mf_tensor **t0)
{
    mf_placed pl;
    int rc;
    if (s->positioned && mf_split_tp(r->split) == MF_TP_SECTIONS) {
        if ((rc = place_section_keys(b, r, s, &pl)) != MF_OK)
            return rc;
    } else {
        if ((rc = mf_shape_check_source(b->c, r, s)) != MF_OK)
            return rc;
        if ((rc = mf_place(b->c, r, s, &pl)) != MF_OK)
            return rc;
    }
    uint32_t n0 = v->n;
    rc = mf_cut(&b->c->model, r->split, &pl, s->name, v, rows, cols);
    for (uint32_t k = n0; k < v->n; k++)
        v->p[k].dst_row += (uint32_t)dst_row0;
    *t0 = pl.t0;
    mf_placed_free(&pl);
    return rc;
}

/* The source a rule reads for (layer, expert): the first spelling present. */
static int find_source(builder *b, const mf_rule *r, long long layer, long long expert, const char *hf, mf_source **out)
{
    char src[320];
    mf_source *s = NULL;
    for (int i = 0; i < 3 && r->src[i] && s == NULL; i++) {
        subst(src, sizeof(src), r->src[i], layer, expert);
        s = mf_checkpoint_find(b->c, src);
    }
    if (s == NULL) {
        subst(src, sizeof(src), r->src[0], layer, expert);
        return mf_fail(MF_ERR_MISSING, "%s: tensor '%s' (which %s needs for %s) is in no rank file%s",
                       b->c->iter_dir, src, b->c->model.family->architecture, hf, b->o->arch ? "; check -o arch=" : "");
    }
    s->used = 1;
    *out = s;
    return MF_OK;
}

/* A zeroed slot for the next HF tensor (committed by add_tensor). */
static int next_tensor(builder *b, mf_hf_tensor **out)
{
    if (b->mp->n == b->cap) {
        /* about one HF tensor per source (QKV and gate/up give a few more): sized once */
        size_t cap = b->cap ? b->cap * 2 : b->c->n_sources + b->c->n_sources / 4 + 256;
        mf_hf_tensor *nt = realloc(b->mp->tensors, cap * sizeof(*nt));
        if (!nt)
            return mf_fail(MF_ERR_NOMEM, "out of memory (HF tensors)");
        b->mp->tensors = nt;
        b->cap = cap;
    }
    *out = &b->mp->tensors[b->mp->n];
    memset(*out, 0, sizeof(**out));
    return MF_OK;
}

static int add_tensor(builder *b, mf_hf_tensor *t, const char *hf, long long layer, int mtp)
{
    t->name = strdup(hf);
    if (!t->name) {
        free(t->pieces);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    t->layer = (int32_t)layer;
    t->mtp = (uint8_t)mtp;
    b->mp->n++;
    b->mp->total_bytes += t->nbytes;
    b->mp->num_params += t->nbytes / mf_dtype_size(t->dtype);
    return MF_OK;
}

static int emit(builder *b, const mf_rule *r, long long layer, long long expert, int show, int mtp)
{
    char hf[320];
    mf_source *s = NULL;
    mf_hf_tensor *t;
    if (!when_holds(&b->c->model, r->when))
        return MF_OK;
    subst(hf, sizeof(hf), r->hf, layer, expert);
    int rc = find_source(b, r, layer, expert, hf, &s);
    if (rc || !show)
        return rc;
    if ((rc = next_tensor(b, &t)) != MF_OK)
        return rc;
    mf_piece_vec v = { 0 };
    int64_t rows = 0, cols = 0;
    const mf_tensor *t0 = NULL;
    if ((rc = cut_source(b, r, s, &v, 0, &rows, &cols, &t0)) != MF_OK) {
        free(v.p);
        return rc;
    }
    finish_tensor(b, r, s, t0, hf, &v, 0, rows, cols, t);
    return add_tensor(b, t, hf, layer, mtp);
}

/* An expert rule without {E} in its HF name: every expert of the layer, cut alike, stacked
 * on a new leading dimension [num_experts, rows(, cols)]. */
static int emit_stacked(builder *b, const mf_rule *r, long long layer, int mtp)
{
    const mf_model *m = &b->c->model;
    char hf[320];
    mf_hf_tensor *t;
    if (!when_holds(m, r->when))
        return MF_OK;
    subst(hf, sizeof(hf), r->hf, layer, 0);
    int rc = next_tensor(b, &t);
    mf_piece_vec v = { 0 };
    int64_t rows = 0, cols = 0;
    const mf_tensor *t0 = NULL;
    const mf_source *s0 = NULL;
    for (long long e = 0; rc == MF_OK && e < m->num_experts; e++) {
        mf_source *s;
        int64_t er, ec;
        const mf_tensor *et;
        if ((rc = find_source(b, r, layer, e, hf, &s)) != MF_OK ||
            (rc = cut_source(b, r, s, &v, e * rows, &er, &ec, &et)) != MF_OK)
            break;
        if (e == 0) {
            rows = er, cols = ec, t0 = et, s0 = s;
        } else if (er != rows || ec != cols || et->dtype != t0->dtype || et->ndim != t0->ndim) {
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s: '%s' and '%s' disagree in shape or dtype (stacked in %s)",
                         src_file(b->c, s), s0->name, s->name, hf);
        }
    }
    if (rc || s0 == NULL) {
        free(v.p);
        return rc;
    }
    finish_tensor(b, r, s0, t0, hf, &v, m->num_experts, rows, cols, t);
    return add_tensor(b, t, hf, layer, mtp);
}

static int is_stacked(const mf_rule *r)
{
    return strstr(r->hf, "{E}") == NULL;
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

/* A MoE layer's experts: per-expert tensors in expert order, then the stacked ones. */
static int emit_experts(builder *b, const mf_rule *rules, long long l, int show, int mtp)
{
    int rc = MF_OK;
    for (long long e = 0; rc == MF_OK && e < b->c->model.num_experts; e++)
        for (const mf_rule *r = rules; rc == MF_OK && r->hf; r++)
            if (!is_stacked(r))
                rc = emit(b, r, l, e, show, mtp);
    for (const mf_rule *r = rules; rc == MF_OK && r->hf; r++)
        if (is_stacked(r))
            rc = emit_stacked(b, r, l, mtp);
    return rc;
}

mf_layer_kind mf_layer_kind_of(const mf_model *m, int64_t l)
{
    mf_layer_kind k = { MF_MIXER_ATTENTION, 0, 0 };
    int64_t at = l < m->num_layers ? l : m->num_layers - 1;
    if (l >= m->num_layers)
        k.mtp = 1;
    else if (m->mixer_layer)
        k.mixer = (mf_mixer)m->mixer_layer[l];
    k.moe = at >= 0 && m->moe_layer ? m->moe_layer[at] : 0;
    return k;
}

static const char *mixer_name(mf_mixer k)
{
    return k == MF_MIXER_ATTENTION ? "attention" : k == MF_MIXER_LINEAR_ATTENTION ? "linear-attention" : "mamba";
}

/* The family's rules for a layer's token mixer (NULL: the family has none of that kind). */
static const mf_rule *mixer_rules(const mf_family *f, mf_mixer k)
{
    return k == MF_MIXER_ATTENTION ? f->attn : k == MF_MIXER_LINEAR_ATTENTION ? f->linear_attn : NULL;
}

/* One layer, part by part as its kind says: mixer, MLP (dense, or router + experts), MTP. */
static int emit_layer(builder *b, long long l, mf_layer_kind kind, int show)
{
    const mf_family *f = b->c->model.family;
    const mf_rule *mixer = mixer_rules(f, kind.mixer);
    int mtp = kind.mtp;
    if (mixer == NULL)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: layer %lld is a %s layer, which family %s cannot express",
                       b->c->iter_dir, l, mixer_name(kind.mixer), f->name);
    int rc = emit_rules(b, mixer, l, 0, show, mtp);
    if (rc == 0 && !kind.moe)
        rc = emit_rules(b, f->dense_mlp, l, 0, show, mtp);
    if (rc == 0 && kind.moe) {
        if (f->moe_mlp == NULL || f->expert == NULL)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: layer %lld is a MoE layer but family %s has no experts", b->c->iter_dir, l, f->name);
        rc = emit_rules(b, f->moe_mlp, l, 0, show, mtp);
        if (rc == 0)
            rc = emit_experts(b, f->expert, l, show, mtp);
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
    const mf_rule *top = m->family->top ? m->family->top : mf_rules_top;
    memset(mp, 0, sizeof(*mp));
    rc = emit(&b, &top[0], -1, 0, 1, 0);                          /* embed_tokens first */
    for (long long l = 0; rc == 0 && l < m->num_layers; l++)
        rc = emit_layer(&b, l, mf_layer_kind_of(m, l), 1);
    if (rc == 0 && m->mtp_layers > 0 && o->skip_mtp)
        mark_mtp_used(c);
    else if (rc == 0 && m->mtp_layers > 0 && m->family->mtp == NULL)
        rc = mf_fail(MF_ERR_UNSUPPORTED, "%s: checkpoint has %lld MTP layers but %s has none in HF; use -o skip_mtp",
                     c->iter_dir, (long long)m->mtp_layers, m->family->name);
    for (long long k = 0; rc == 0 && !o->skip_mtp && k < m->mtp_layers; k++)
        rc = emit_layer(&b, m->num_layers + k, mf_layer_kind_of(m, m->num_layers + k), 1);
    for (int i = 1; rc == 0 && top[i].hf; i++)
        rc = emit(&b, &top[i], -1, 0, 1, 0);
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
                                         "qkv-v", "glu-gate", "glu-up", "vocab-trim", "auto-dim0",
                                         "concat-dim1-transposed", "glu-interleave-transposed", "gdn-qkvz",
                                         "gdn-ba", "gdn-conv1d", "qkv-q-gated", "norm-1p", "norm-plain" };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}
