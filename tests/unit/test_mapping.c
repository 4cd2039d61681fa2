/* Unit tests for the mapping (core/mapping.c) on synthetic model descriptions: each existing
 * family's Megatron tensor names (written here by hand, as Megatron names them) with shapes from
 * a small model, expanded into HF tensors with no checkpoint file; the per-layer kind choice;
 * and a test family with stacked experts (transposed, gate/up interleaved), gathered from a
 * temp file and compared with a reference built here. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "mcorefs/mapping.h"
#include "source_index.h"
#include "unit_support.h"

/* hidden 16, heads 4, groups 2, head_dim 4 (QKV 32 rows), ffn 24, vocab 37 padded to 40,
 * 3 experts of ffn 8, shared experts of ffn 12; MLA: q_lora 6, kv_lora 7, qk 5, pos 3, v 4 */
enum { H = 16, QKV = 32, FFN = 24, VOCAB = 37, PVOCAB = 40, E = 3, MOE_FFN = 8, SH_FFN = 12 };

typedef struct {
    mf_checkpoint c;
    mf_rankfile file;
    mf_options o;
    mf_mapping mp;
    uint64_t at;    /* next element offset in the (virtual) rank file */
} synth;

static void synth_init(synth *s, const char *family, int64_t layers)
{
    memset(s, 0, sizeof(*s));
    mf_options_init(&s->o);
    s->c.iter_dir = "iter_0000001";
    s->file.path = "mp_rank_00/model_optim_rng.pt";
    s->c.files = &s->file;
    s->c.n_files = 1;
    mf_model *m = &s->c.model;
    m->family = mf_family_find(family);
    assert_non_null(m->family);
    m->num_layers = layers;
    m->hidden = H;
    m->heads = 4;
    m->groups = 2;
    m->head_dim = 4;
    m->ffn = FFN;
    m->padded_vocab = PVOCAB;
    m->vocab = VOCAB;
    m->swiglu = 1;
    m->tp = m->pp = m->vpp = m->ep = m->etp = 1;
    m->moe_layer = calloc((size_t)layers, 1);
    assert_non_null(m->moe_layer);
}

static void synth_free(synth *s)
{
    mf_mapping_free(&s->mp);
    mf_source_index_free(&s->c);
    mf_model_free(&s->c.model);
    mf_options_free(&s->o);
}

/* One TP=1 source tensor: rows x cols (cols 0: 1-D), F32, laid out one after another. */
static void src(synth *s, const char *name, int64_t rows, int64_t cols)
{
    mf_shard sh = { .file = 0 };
    sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = cols ? 2 : 1, .shape = { rows, cols }, .stride = { cols ? cols : 1, 1 },
                        .offset = s->at * 4 };
    s->at += (uint64_t)rows * (uint64_t)(cols ? cols : 1);
    assert_int_equal(mf_source_add(&s->c, name, strstr(name, ".experts.") != NULL, 1, 0, &sh), MF_OK);
}

static void srcf(synth *s, int64_t rows, int64_t cols, const char *fmt, long long a, long long b)
{
    char name[256];
    snprintf(name, sizeof(name), fmt, a, b);
    src(s, name, rows, cols);
}

static void top(synth *s)
{
    src(s, "embedding.word_embeddings.weight", PVOCAB, H);
    src(s, "decoder.final_layernorm.weight", H, 0);
    src(s, "output_layer.weight", PVOCAB, H);
}

static void gqa_layer(synth *s, long long l)
{
    const mf_model *m = &s->c.model;
    srcf(s, H, 0, "decoder.layers.%lld.self_attention.linear_qkv.layer_norm_weight", l, 0);
    srcf(s, QKV, H, "decoder.layers.%lld.self_attention.linear_qkv.weight", l, 0);
    if (m->qkv_bias)
        srcf(s, QKV, 0, "decoder.layers.%lld.self_attention.linear_qkv.bias", l, 0);
    if (m->qk_norm) {
        srcf(s, 4, 0, "decoder.layers.%lld.self_attention.q_layernorm.weight", l, 0);
        srcf(s, 4, 0, "decoder.layers.%lld.self_attention.k_layernorm.weight", l, 0);
    }
    srcf(s, H, H, "decoder.layers.%lld.self_attention.linear_proj.weight", l, 0);
}

static void mla_layer(synth *s, long long l)
{
    srcf(s, H, 0, "decoder.layers.%lld.input_layernorm.weight", l, 0);
    srcf(s, 6, H, "decoder.layers.%lld.self_attention.linear_q_down_proj.weight", l, 0);
    srcf(s, 6, 0, "decoder.layers.%lld.self_attention.linear_q_up_proj.layer_norm_weight", l, 0);
    srcf(s, 4 * (5 + 3), 6, "decoder.layers.%lld.self_attention.linear_q_up_proj.weight", l, 0);
    srcf(s, 7 + 3, H, "decoder.layers.%lld.self_attention.linear_kv_down_proj.weight", l, 0);
    srcf(s, 7, 0, "decoder.layers.%lld.self_attention.linear_kv_up_proj.layer_norm_weight", l, 0);
    srcf(s, 4 * (5 + 4), 7, "decoder.layers.%lld.self_attention.linear_kv_up_proj.weight", l, 0);
    srcf(s, H, 4 * 4, "decoder.layers.%lld.self_attention.linear_proj.weight", l, 0);
}

static void dense_layer(synth *s, long long l)
{
    srcf(s, H, 0, "decoder.layers.%lld.mlp.linear_fc1.layer_norm_weight", l, 0);
    srcf(s, 2 * FFN, H, "decoder.layers.%lld.mlp.linear_fc1.weight", l, 0);
    srcf(s, H, FFN, "decoder.layers.%lld.mlp.linear_fc2.weight", l, 0);
}

static void moe_layer(synth *s, long long l)
{
    const mf_model *m = &s->c.model;
    srcf(s, H, 0, "decoder.layers.%lld.pre_mlp_layernorm.weight", l, 0);
    srcf(s, E, H, "decoder.layers.%lld.mlp.router.weight", l, 0);
    if (m->moe_expert_bias)
        srcf(s, E, 0, "decoder.layers.%lld.mlp.router.expert_bias", l, 0);
    if (m->shared_ffn) {
        srcf(s, 2 * SH_FFN, H, "decoder.layers.%lld.mlp.shared_experts.linear_fc1.weight", l, 0);
        srcf(s, H, SH_FFN, "decoder.layers.%lld.mlp.shared_experts.linear_fc2.weight", l, 0);
    }
    if (m->moe_shared_gate)
        srcf(s, 1, H, "decoder.layers.%lld.mlp.shared_experts.gate_weight", l, 0);
    for (long long e = 0; e < E; e++) {
        srcf(s, 2 * MOE_FFN, H, "decoder.layers.%lld.mlp.experts.%lld.linear_fc1.weight", l, e);
        srcf(s, H, MOE_FFN, "decoder.layers.%lld.mlp.experts.%lld.linear_fc2.weight", l, e);
    }
}

static void set_moe(synth *s)
{
    mf_model *m = &s->c.model;
    m->num_experts = E;
    m->moe_ffn = MOE_FFN;
    for (int64_t l = 0; l < m->num_layers; l++)
        m->moe_layer[l] = 1;
}

static const mf_hf_tensor *find(const synth *s, const char *name)
{
    for (size_t i = 0; i < s->mp.n; i++)
        if (strcmp(s->mp.tensors[i].name, name) == 0)
            return &s->mp.tensors[i];
    return NULL;
}

static void expect(const synth *s, const char *name, int64_t d0, int64_t d1)
{
    const mf_hf_tensor *t = find(s, name);
    if (t == NULL)
        fail_msg("no HF tensor %s", name);
    assert_int_equal(t->ndim, d1 ? 2 : 1);
    assert_int_equal(t->shape[0], d0);
    if (d1)
        assert_int_equal(t->shape[1], d1);
}

static void build_ok(synth *s, size_t n_expected)
{
    int rc = mf_mapping_build(&s->mp, &s->c, &s->o);
    if (rc != MF_OK)
        fail_msg("mapping failed: %s", mf_error());
    assert_int_equal(s->mp.n, n_expected);
    uint64_t bytes = 0;
    for (size_t i = 0; i < s->mp.n; i++)
        bytes += s->mp.tensors[i].nbytes;
    assert_int_equal(bytes, s->mp.total_bytes);
}

static void expect_gqa(const synth *s, int qkv_bias, int qk_norm)
{
    expect(s, "model.embed_tokens.weight", VOCAB, H);
    expect(s, "lm_head.weight", VOCAB, H);
    expect(s, "model.norm.weight", H, 0);
    for (int l = 0; l < 2; l++) {
        char n[128];
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.q_proj.weight", l);
        expect(s, n, 16, H);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.k_proj.weight", l);
        expect(s, n, 8, H);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.v_proj.weight", l);
        expect(s, n, 8, H);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.o_proj.weight", l);
        expect(s, n, H, H);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.k_proj.bias", l);
        assert_true((find(s, n) != NULL) == qkv_bias);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.q_norm.weight", l);
        assert_true((find(s, n) != NULL) == qk_norm);
    }
}

static void test_dense_families(void **state)
{
    (void)state;
    static const struct { const char *family; int bias, qk_norm; size_t n; } cases[] = {
        { "llama", 0, 0, 3 + 2 * 9 }, { "mistral", 0, 0, 3 + 2 * 9 },
        { "qwen2", 1, 0, 3 + 2 * 12 }, { "qwen3", 0, 1, 3 + 2 * 11 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        synth s;
        synth_init(&s, cases[i].family, 2);
        s.c.model.qkv_bias = cases[i].bias;
        s.c.model.qk_norm = cases[i].qk_norm;
        top(&s);
        for (int l = 0; l < 2; l++) {
            gqa_layer(&s, l);
            dense_layer(&s, l);
        }
        build_ok(&s, cases[i].n);
        expect_gqa(&s, cases[i].bias, cases[i].qk_norm);
        expect(&s, "model.layers.1.mlp.gate_proj.weight", FFN, H);
        expect(&s, "model.layers.1.mlp.up_proj.weight", FFN, H);
        expect(&s, "model.layers.1.mlp.down_proj.weight", H, FFN);
        /* HF order: embed first, then layer by layer, then norm and head */
        assert_string_equal(s.mp.tensors[0].name, "model.embed_tokens.weight");
        assert_string_equal(s.mp.tensors[s.mp.n - 1].name, "lm_head.weight");
        synth_free(&s);
    }
}

static void test_moe_families(void **state)
{
    (void)state;
    /* per layer: attention 5 (+3 biases for qwen2_moe), pre-MLP norm + router, shared expert
     * 3 + gate 1 for qwen2_moe, 3 tensors per expert */
    static const struct { const char *family; int bias, qk_norm, shared; size_t n; const char *expert_w; } cases[] = {
        { "mixtral", 0, 0, 0, 3 + 2 * (5 + 2 + 3 * E), "model.layers.%d.block_sparse_moe.experts.%d.w2.weight" },
        { "qwen2_moe", 1, 0, 1, 3 + 2 * (8 + 2 + 4 + 3 * E), "model.layers.%d.mlp.experts.%d.down_proj.weight" },
        { "qwen3_moe", 0, 1, 0, 3 + 2 * (7 + 2 + 3 * E), "model.layers.%d.mlp.experts.%d.down_proj.weight" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        synth s;
        synth_init(&s, cases[i].family, 2);
        set_moe(&s);
        mf_model *m = &s.c.model;
        m->qkv_bias = cases[i].bias;
        m->qk_norm = cases[i].qk_norm;
        if (cases[i].shared) {
            m->shared_ffn = SH_FFN;
            m->moe_shared_gate = 1;
        }
        top(&s);
        for (int l = 0; l < 2; l++) {
            gqa_layer(&s, l);
            moe_layer(&s, l);
        }
        build_ok(&s, cases[i].n);
        expect_gqa(&s, cases[i].bias, cases[i].qk_norm);
        for (int l = 0; l < 2; l++)
            for (int e = 0; e < E; e++) {
                char n[128];
                snprintf(n, sizeof(n), cases[i].expert_w, l, e);
                expect(&s, n, H, MOE_FFN);
            }
        if (cases[i].shared) {
            expect(&s, "model.layers.0.mlp.shared_expert.gate_proj.weight", SH_FFN, H);
            expect(&s, "model.layers.0.mlp.shared_expert_gate.weight", 1, H);
        }
        synth_free(&s);
    }
}

/* DeepSeek-V3 with MLA, a dense first layer and MoE layers after it. */
static void deepseek_init(synth *s, int64_t layers)
{
    synth_init(s, "deepseek_v3", layers);
    set_moe(s);
    mf_model *m = &s->c.model;
    m->moe_layer[0] = 0;
    m->mla = 1;
    m->mla_dims.q_lora_rank = 6;
    m->mla_dims.kv_lora_rank = 7;
    m->mla_dims.qk_head_dim = 5;
    m->mla_dims.qk_pos_dim = 3;
    m->mla_dims.v_head_dim = 4;
}

/* DeepSeek-V3: MLA, a dense first layer, a MoE layer with shared experts and the expert bias
 * (kept F32 under -o dtype), and one MTP layer built like the last decoder layer. */
static void test_deepseek_v3(void **state)
{
    (void)state;
    synth s;
    deepseek_init(&s, 2);
    mf_model *m = &s.c.model;
    m->shared_ffn = SH_FFN;
    m->moe_expert_bias = 1;
    m->mtp_layers = 1;
    s.o.dtype = MF_DT_BF16;
    top(&s);
    mla_layer(&s, 0);
    dense_layer(&s, 0);
    for (int l = 1; l <= 2; l++) {
        mla_layer(&s, l);
        moe_layer(&s, l);
    }
    src(&s, "mtp.layers.2.enorm.weight", H, 0);
    src(&s, "mtp.layers.2.hnorm.weight", H, 0);
    src(&s, "mtp.layers.2.eh_proj.weight", H, 2 * H);
    src(&s, "mtp.layers.2.final_layernorm.weight", H, 0);
    build_ok(&s, 3 + (8 + 4) + (8 + 6 + 3 * E) + (8 + 6 + 3 * E + 4));
    expect(&s, "model.layers.0.self_attn.q_a_proj.weight", 6, H);
    expect(&s, "model.layers.0.self_attn.kv_b_proj.weight", 4 * (5 + 4), 7);
    expect(&s, "model.layers.0.mlp.down_proj.weight", H, FFN);
    expect(&s, "model.layers.2.eh_proj.weight", H, 2 * H);
    expect(&s, "model.layers.2.mlp.experts.2.up_proj.weight", MOE_FFN, H);
    assert_int_equal(find(&s, "model.layers.1.mlp.gate.e_score_correction_bias")->dtype, MF_DT_F32);
    assert_int_equal(find(&s, "model.layers.1.mlp.gate.weight")->dtype, MF_DT_BF16);
    const mf_hf_tensor *mtp = find(&s, "model.layers.2.enorm.weight");
    assert_int_equal(mtp->mtp, 1);
    assert_int_equal(mtp->layer, 2);
    synth_free(&s);

    /* with skip_mtp the MTP sources are accounted for, not shown */
    deepseek_init(&s, 1);
    s.c.model.mtp_layers = 1;
    s.o.skip_mtp = 1;
    top(&s);
    mla_layer(&s, 0);
    dense_layer(&s, 0);
    mla_layer(&s, 1);
    src(&s, "mtp.layers.1.enorm.weight", H, 0);
    build_ok(&s, 3 + 12);
    synth_free(&s);
}

/* GLM-4.5: GQA with q/k/v biases and q/k norms, a dense first layer, MoE layers with shared
 * experts and an F32 expert bias (DeepSeek's MoE names), and one MTP layer after the decoder. */
static void test_glm4_moe(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, "glm4_moe", 2);
    set_moe(&s);
    mf_model *m = &s.c.model;
    m->moe_layer[0] = 0;
    m->qkv_bias = m->qk_norm = 1;
    m->shared_ffn = SH_FFN;
    m->moe_expert_bias = 1;
    m->mtp_layers = 1;
    s.o.dtype = MF_DT_BF16;
    top(&s);
    gqa_layer(&s, 0);
    dense_layer(&s, 0);
    for (int l = 1; l <= 2; l++) {
        gqa_layer(&s, l);
        moe_layer(&s, l);
    }
    src(&s, "mtp.layers.2.enorm.weight", H, 0);
    src(&s, "mtp.layers.2.hnorm.weight", H, 0);
    src(&s, "mtp.layers.2.eh_proj.weight", H, 2 * H);
    src(&s, "mtp.layers.2.final_layernorm.weight", H, 0);
    /* attention 10 per layer; dense MLP 4; MoE: norm, router, bias, 3 shared, 3 per expert */
    build_ok(&s, 3 + (10 + 4) + (10 + 6 + 3 * E) + (10 + 6 + 3 * E + 4));
    for (int l = 0; l <= 2; l++) {
        char n[128];
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.q_proj.bias", l);
        expect(&s, n, 16, 0);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.v_proj.bias", l);
        expect(&s, n, 8, 0);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.k_norm.weight", l);
        expect(&s, n, 4, 0);
        snprintf(n, sizeof(n), "model.layers.%d.self_attn.o_proj.weight", l);
        expect(&s, n, H, H);
    }
    expect(&s, "model.layers.0.mlp.gate_proj.weight", FFN, H);
    assert_null(find(&s, "model.layers.0.mlp.gate.weight"));
    expect(&s, "model.layers.1.mlp.gate.weight", E, H);
    expect(&s, "model.layers.1.mlp.shared_experts.up_proj.weight", SH_FFN, H);
    expect(&s, "model.layers.1.mlp.shared_experts.down_proj.weight", H, SH_FFN);
    expect(&s, "model.layers.2.mlp.experts.2.gate_proj.weight", MOE_FFN, H);
    expect(&s, "model.layers.2.shared_head.norm.weight", H, 0);
    assert_int_equal(find(&s, "model.layers.2.mlp.gate.e_score_correction_bias")->dtype, MF_DT_F32);
    assert_int_equal(find(&s, "model.layers.2.mlp.gate.weight")->dtype, MF_DT_BF16);
    assert_int_equal(find(&s, "model.layers.2.eh_proj.weight")->mtp, 1);
    assert_null(find(&s, "model.layers.1.eh_proj.weight"));
    synth_free(&s);
}

/* The layer kind comes from the args per layer; a kind the family has no rules for is refused
 * with the layer named. A leftover or missing source is refused too. */
static void test_layer_kinds_and_refusals(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, "llama", 2);
    top(&s);
    for (int l = 0; l < 2; l++) {
        gqa_layer(&s, l);
        dense_layer(&s, l);
    }
    mf_model *m = &s.c.model;
    m->mixer_layer = calloc(2, 1);
    assert_non_null(m->mixer_layer);
    mf_layer_kind k = mf_layer_kind_of(m, 1);
    assert_int_equal(k.mixer, MF_MIXER_ATTENTION);
    assert_int_equal(k.moe, 0);
    m->mixer_layer[1] = MF_MIXER_LINEAR_ATTENTION;
    assert_int_equal(mf_layer_kind_of(m, 1).mixer, MF_MIXER_LINEAR_ATTENTION);
    assert_int_equal(mf_layer_kind_of(m, 2).mtp, 1);   /* past the decoder: an MTP layer */
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "layer 1 is a linear-attention layer"));
    m->mixer_layer[1] = MF_MIXER_ATTENTION;
    build_ok(&s, 3 + 2 * 9);
    mf_mapping_free(&s.mp);
    /* a tensor no rule explains */
    src(&s, "decoder.layers.0.self_attention.extra.weight", H, 0);
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "extra.weight"));
    synth_free(&s);

    synth_init(&s, "llama", 1);
    top(&s);
    gqa_layer(&s, 0);   /* no MLP */
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_MISSING);
    assert_non_null(strstr(mf_error(), "decoder.layers.0.mlp.linear_fc1.layer_norm_weight"));
    synth_free(&s);
}

/* A family with gpt-oss-shaped experts: every expert stacked into one tensor per layer,
 * gate_up_proj [E, H, 2F] (fc1 [gate; up] transposed, gate and up interleaved by column)
 * and down_proj [E, F, H] (fc2 transposed), from expert-TP 2 legacy shards. */
static const mf_rule stacked_expert[] = {
    { "model.layers.{L}.mlp.experts.gate_up_proj", { "decoder.layers.{L}.mlp.experts.{E}.linear_fc1.weight" },
      MF_SPLIT_GLU_INTERLEAVE_T, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { "model.layers.{L}.mlp.experts.down_proj", { "decoder.layers.{L}.mlp.experts.{E}.linear_fc2.weight" },
      MF_SPLIT_DIM1_T, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_MOE_FFN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};
static const mf_rule stacked_router[] = {
    { "model.layers.{L}.mlp.router.weight", { "decoder.layers.{L}.mlp.router.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};
static const mf_rule no_rules[] = { { NULL, { NULL }, 0, 0, 0, 0, 0 } };

static float val(int64_t e, int64_t which, int64_t r, int64_t c)   /* which: 0 fc1, 1 fc2 */
{
    return (float)(e * 100000 + which * 10000 + r * 100 + c);
}

static void test_stacked_experts(void **state)
{
    (void)state;
    mf_family fam = { .name = "stacked_test", .architecture = "StackedForCausalLM", .model_type = "stacked",
                      .attn = no_rules, .dense_mlp = no_rules, .moe_mlp = stacked_router, .expert = stacked_expert };
    synth s;
    synth_init(&s, "llama", 1);
    mf_model *m = &s.c.model;
    m->family = &fam;
    set_moe(&s);
    m->etp = 2;
    /* the rank file: for each expert, ETP rank k holds [gate_k; up_k] of fc1 and a column
     * half of fc2 */
    const int F = MOE_FFN, h = MOE_FFN / 2;
    size_t n_el = 1 + (size_t)E * H + (size_t)E * (2 * F * H + H * F);
    float *data = calloc(n_el, sizeof(float));
    size_t at = 1;   /* element 0 unused: sources do not start at offset 0 */
    for (int k = 0; k < 2; k++)
        for (long long e = 0; e < E; e++) {
            char name[128];
            mf_shard sh = { .file = 0 };
            sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { 2 * h, H }, .stride = { H, 1 }, .offset = at * 4 };
            for (int r = 0; r < 2 * h; r++)   /* gate rows k*h.., then up rows F + k*h.. */
                for (int c = 0; c < H; c++)
                    data[at++] = val(e, 0, r < h ? k * h + r : F + k * h + r - h, c);
            snprintf(name, sizeof(name), "decoder.layers.0.mlp.experts.%lld.linear_fc1.weight", e);
            assert_int_equal(mf_source_add(&s.c, name, 1, 2, k, &sh), MF_OK);
            sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { H, h }, .stride = { h, 1 }, .offset = at * 4 };
            for (int r = 0; r < H; r++)
                for (int c = 0; c < h; c++)
                    data[at++] = val(e, 1, r, k * h + c);
            snprintf(name, sizeof(name), "decoder.layers.0.mlp.experts.%lld.linear_fc2.weight", e);
            assert_int_equal(mf_source_add(&s.c, name, 1, 2, k, &sh), MF_OK);
        }
    mf_shard rsh = { .file = 0 };
    rsh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { E, H }, .stride = { H, 1 }, .offset = at * 4 };
    at += (size_t)E * H;
    assert_int_equal(mf_source_add(&s.c, "decoder.layers.0.mlp.router.weight", 0, 1, 0, &rsh), MF_OK);
    top(&s);
    const char *path = us_tmp("stacked.bin");
    assert_int_equal(us_write_file(path, data, at * 4), 0);
    free(data);

    build_ok(&s, 3 + 3);
    const mf_hf_tensor *gu = find(&s, "model.layers.0.mlp.experts.gate_up_proj");
    const mf_hf_tensor *dn = find(&s, "model.layers.0.mlp.experts.down_proj");
    assert_non_null(gu);
    assert_non_null(dn);
    assert_int_equal(gu->ndim, 3);
    assert_int_equal(gu->shape[0], E);
    assert_int_equal(gu->shape[1], H);
    assert_int_equal(gu->shape[2], 2 * F);
    assert_int_equal(dn->ndim, 3);
    assert_int_equal(dn->shape[1], F);
    assert_int_equal(dn->shape[2], H);
    assert_int_equal(s.mp.num_params, (uint64_t)(2 * VOCAB * H + H + E * H + 3 * E * F * H));

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    mf_io io = { .fds = &fd };
    float *got = malloc(gu->nbytes), *want = malloc(gu->nbytes);
    for (int e = 0; e < E; e++)
        for (int r = 0; r < H; r++)
            for (int f = 0; f < F; f++) {
                want[(e * H + r) * 2 * F + 2 * f] = val(e, 0, f, r);
                want[(e * H + r) * 2 * F + 2 * f + 1] = val(e, 0, F + f, r);
            }
    assert_int_equal(mf_gather(gu, &io, 0, (size_t)gu->nbytes, (uint8_t *)got), 0);
    assert_memory_equal(got, want, gu->nbytes);
    /* odd offsets and lengths across expert boundaries */
    for (uint64_t off = 1; off + 301 <= gu->nbytes; off += 277) {
        assert_int_equal(mf_gather(gu, &io, off, 301, (uint8_t *)got), 0);
        assert_memory_equal(got, (uint8_t *)want + off, 301);
    }
    for (int e = 0; e < E; e++)
        for (int f = 0; f < F; f++)
            for (int c = 0; c < H; c++)
                want[(e * F + f) * H + c] = val(e, 1, c, f);
    assert_int_equal(mf_gather(dn, &io, 0, (size_t)dn->nbytes, (uint8_t *)got), 0);
    assert_memory_equal(got, want, dn->nbytes);
    free(got);
    free(want);
    close(fd);
    synth_free(&s);
}

/* gpt-oss's stacked expert biases: a 1-D source per expert becomes one row of [E, N] — fc1's
 * [gate; up] bias interleaved (gate_up_proj_bias), fc2's bias as it is (down_proj_bias). */
static const mf_rule stacked_bias[] = {
    { "model.layers.{L}.mlp.experts.gate_up_proj_bias", { "decoder.layers.{L}.mlp.experts.{E}.linear_fc1.bias" },
      MF_SPLIT_GLU_INTERLEAVE_T, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_NONE, MF_DTYPE_SHOWN },
    { "model.layers.{L}.mlp.experts.down_proj_bias", { "decoder.layers.{L}.mlp.experts.{E}.linear_fc2.bias" },
      MF_SPLIT_DIM1_T, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

static void test_stacked_expert_biases(void **state)
{
    (void)state;
    mf_family fam = { .name = "stacked_test", .architecture = "StackedForCausalLM", .model_type = "stacked",
                      .attn = no_rules, .dense_mlp = no_rules, .moe_mlp = stacked_router, .expert = stacked_bias };
    synth s;
    synth_init(&s, "llama", 1);
    mf_model *m = &s.c.model;
    m->family = &fam;
    set_moe(&s);
    m->etp = 1;
    const int F = MOE_FFN;
    size_t n_el = 1 + (size_t)E * H + (size_t)E * (2 * F + H);
    float *data = calloc(n_el, sizeof(float));
    size_t at = 1;
    for (long long e = 0; e < E; e++) {
        char name[128];
        mf_shard sh = { .file = 0 };
        sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 1, .shape = { 2 * F }, .stride = { 1 }, .offset = at * 4 };
        for (int r = 0; r < 2 * F; r++)
            data[at++] = val(e, 0, r, 0);
        snprintf(name, sizeof(name), "decoder.layers.0.mlp.experts.%lld.linear_fc1.bias", e);
        assert_int_equal(mf_source_add(&s.c, name, 1, 1, 0, &sh), MF_OK);
        sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 1, .shape = { H }, .stride = { 1 }, .offset = at * 4 };
        for (int r = 0; r < H; r++)
            data[at++] = val(e, 1, r, 0);
        snprintf(name, sizeof(name), "decoder.layers.0.mlp.experts.%lld.linear_fc2.bias", e);
        assert_int_equal(mf_source_add(&s.c, name, 1, 1, 0, &sh), MF_OK);
    }
    mf_shard rsh = { .file = 0 };
    rsh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { E, H }, .stride = { H, 1 }, .offset = at * 4 };
    at += (size_t)E * H;
    assert_int_equal(mf_source_add(&s.c, "decoder.layers.0.mlp.router.weight", 0, 1, 0, &rsh), MF_OK);
    top(&s);
    const char *path = us_tmp("stacked_bias.bin");
    assert_int_equal(us_write_file(path, data, at * 4), 0);
    free(data);

    build_ok(&s, 3 + 3);
    const mf_hf_tensor *gu = find(&s, "model.layers.0.mlp.experts.gate_up_proj_bias");
    const mf_hf_tensor *dn = find(&s, "model.layers.0.mlp.experts.down_proj_bias");
    assert_non_null(gu);
    assert_non_null(dn);
    assert_int_equal(gu->ndim, 2);
    assert_int_equal(gu->shape[0], E);
    assert_int_equal(gu->shape[1], 2 * F);
    assert_int_equal(dn->ndim, 2);
    assert_int_equal(dn->shape[0], E);
    assert_int_equal(dn->shape[1], H);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    mf_io io = { .fds = &fd };
    float got[E * 2 * MOE_FFN], want[E * 2 * MOE_FFN];
    for (int e = 0; e < E; e++)
        for (int f = 0; f < F; f++) {
            want[e * 2 * F + 2 * f] = val(e, 0, f, 0);          /* gate */
            want[e * 2 * F + 2 * f + 1] = val(e, 0, F + f, 0);  /* up */
        }
    assert_int_equal(mf_gather(gu, &io, 0, (size_t)gu->nbytes, (uint8_t *)got), 0);
    assert_memory_equal(got, want, gu->nbytes);
    float got2[E * H], want2[E * H];
    for (int e = 0; e < E; e++)
        for (int c = 0; c < H; c++)
            want2[e * H + c] = val(e, 1, c, 0);
    assert_int_equal(mf_gather(dn, &io, 0, (size_t)dn->nbytes, (uint8_t *)got2), 0);
    assert_memory_equal(got2, want2, dn->nbytes);
    close(fd);
    synth_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_families),
        cmocka_unit_test(test_moe_families),
        cmocka_unit_test(test_deepseek_v3),
        cmocka_unit_test(test_glm4_moe),
        cmocka_unit_test(test_layer_kinds_and_refusals),
        cmocka_unit_test(test_stacked_experts),
        cmocka_unit_test(test_stacked_expert_biases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
