/* Unit tests for the family rows as data (core/family_select.c, core/families.c, core/config.c):
 * detection on synthetic args for every family, settings refused unless a row supports them,
 * the config.json writer per family, and the one family list (help, README, man page). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/options.h"
#include "mcorefs/recipe.h"
#include "mcorefs/view.h"
#include "unit_support.h"

/* ---- synthetic args: an argparse Namespace dict built by hand ---- */

typedef struct {
    const char *key;
    char type;   /* 'b' bool, 'i' int, 'f' float, 's' str, 'w' window tuple (i, 0), 'n' None */
    int64_t i;
    double f;
    const char *s;
} arg;

#define MAX_ARGS 64
static mf_pv key_v[MAX_ARGS], val_v[MAX_ARGS], win_items[2 * MAX_ARGS];
static mf_pv *key_p[MAX_ARGS], *val_p[MAX_ARGS], *win_p[2 * MAX_ARGS];
static mf_pv args_dict;

static void put(uint32_t k, const arg *a)
{
    key_v[k] = (mf_pv){ .kind = MF_PV_STR, .u.str = { (char *)a->key, strlen(a->key) } };
    mf_pv *v = &val_v[k];
    switch (a->type) {
    case 'b': *v = (mf_pv){ .kind = MF_PV_BOOL, .u.i = a->i }; break;
    case 'i': *v = (mf_pv){ .kind = MF_PV_INT, .u.i = a->i }; break;
    case 'f': *v = (mf_pv){ .kind = MF_PV_FLOAT, .u.f = a->f }; break;
    case 's': *v = (mf_pv){ .kind = MF_PV_STR, .u.str = { (char *)a->s, strlen(a->s) } }; break;
    case 'w':
        win_items[2 * k] = (mf_pv){ .kind = MF_PV_INT, .u.i = a->i };
        win_items[2 * k + 1] = (mf_pv){ .kind = MF_PV_INT, .u.i = 0 };
        win_p[2 * k] = &win_items[2 * k];
        win_p[2 * k + 1] = &win_items[2 * k + 1];
        *v = (mf_pv){ .kind = MF_PV_TUPLE, .u.seq = { &win_p[2 * k], 2, 2 } };
        break;
    default: *v = (mf_pv){ .kind = MF_PV_NONE }; break;
    }
    key_p[k] = &key_v[k];
    val_p[k] = v;
}

/* A small dense Llama-like model; `extra` (terminated by a NULL key) is added after it and
 * wins over it, as a re-assigned key does. */
static const mf_pv *make_args(const arg *extra)
{
    static const arg base[] = {
        { "num_layers", 'i', 4, 0, NULL }, { "hidden_size", 'i', 64, 0, NULL },
        { "num_attention_heads", 'i', 4, 0, NULL }, { "padded_vocab_size", 'i', 256, 0, NULL },
        { "tensor_model_parallel_size", 'i', 1, 0, NULL }, { "swiglu", 'b', 1, 0, NULL },
        { "normalization", 's', 0, 0, "RMSNorm" }, { "position_embedding_type", 's', 0, 0, "rope" },
        { "ffn_hidden_size", 'i', 128, 0, NULL }, { NULL, 0, 0, 0, NULL } };
    uint32_t n = 0;
    for (const arg *a = base; a->key; a++)
        put(n++, a);
    for (const arg *a = extra; a && a->key && n < MAX_ARGS; a++)
        put(n++, a);
    args_dict = (mf_pv){ .kind = MF_PV_DICT, .u.dict = { key_p, val_p, n, n } };
    return &args_dict;
}

#define END { NULL, 0, 0, 0, NULL }
#define ON(k) { k, 'b', 1, 0, NULL }
#define INT(k, v) { k, 'i', v, 0, NULL }

static const arg llama_args[] = { END };
static const arg mistral_args[] = { { "window_size", 'w', 64, 0, NULL }, END };
static const arg qwen2_args[] = { ON("add_qkv_bias"), END };
static const arg qwen3_args[] = { ON("qk_layernorm"), END };
static const arg mixtral_args[] = { INT("num_experts", 8), END };
static const arg qwen2_moe_args[] = { INT("num_experts", 8), INT("moe_shared_expert_intermediate_size", 64),
                                      ON("moe_shared_expert_gate"), ON("add_qkv_bias"), END };
static const arg qwen3_moe_args[] = { INT("num_experts", 8), ON("qk_layernorm"), END };
static const arg dsv2_args[] = { ON("multi_latent_attention"), INT("num_experts", 8), END };
static const arg glm4_moe_args[] = { INT("num_experts", 8), INT("moe_ffn_hidden_size", 32),
                                     INT("moe_shared_expert_intermediate_size", 64), ON("add_qkv_bias"),
                                     ON("qk_layernorm"), ON("moe_router_enable_expert_bias"), INT("kv_channels", 32),
                                     { "moe_router_score_function", 's', 0, 0, "sigmoid" }, INT("moe_router_topk", 2),
                                     { "moe_router_topk_scaling_factor", 'f', 0, 2.5, NULL },
                                     { "rotary_percent", 'f', 0, 0.5, NULL }, INT("mtp_num_layers", 1), END };
static const arg dsv3_args[] = { ON("multi_latent_attention"), INT("num_experts", 8), ON("moe_router_enable_expert_bias"),
                                 { "moe_router_score_function", 's', 0, 0, "sigmoid" }, END };
static const arg gptoss_args[] = { INT("num_experts", 4), { "swiglu", 'b', 0, 0, NULL }, ON("quick_geglu"),
                                   { "glu_linear_offset", 'f', 0, 1.0, NULL }, { "activation_func_clamp_value", 'f', 0, 7.0, NULL },
                                   ON("add_bias_linear"), { "softmax_type", 's', 0, 0, "learnable" },
                                   { "window_size", 'w', 4, 0, NULL }, INT("window_attn_skip_freq", 2), END };

static const arg qwen3next_args[] = { INT("num_experts", 8), INT("moe_ffn_hidden_size", 32),
                                      INT("moe_shared_expert_intermediate_size", 64), ON("moe_shared_expert_gate"),
                                      ON("qk_layernorm"), ON("attention_output_gate"), INT("kv_channels", 32),
                                      { "rotary_percent", 'f', 0, 0.25, NULL },
                                      { "experimental_attention_variant", 's', 0, 0, "gated_delta_net" },
                                      INT("linear_attention_freq", 4), INT("linear_num_key_heads", 2),
                                      INT("linear_num_value_heads", 4), INT("linear_key_head_dim", 16),
                                      INT("linear_value_head_dim", 8), INT("linear_conv_kernel_dim", 3), END };

static const struct {
    const char *family;
    const arg *args;
} each_family[] = {
    { "llama", llama_args }, { "mistral", mistral_args }, { "qwen2", qwen2_args }, { "qwen3", qwen3_args },
    { "mixtral", mixtral_args }, { "qwen2_moe", qwen2_moe_args }, { "qwen3_moe", qwen3_moe_args },
    { "deepseek_v2", dsv2_args }, { "deepseek_v3", dsv3_args }, { "glm4_moe", glm4_moe_args },
    { "gpt_oss", gptoss_args }, { "qwen3_next", qwen3next_args },
};
#define N_FAMILIES (sizeof(each_family) / sizeof(each_family[0]))

/* Every family row is detected from args that have its signs, and only from those. */
static void test_detect_every_family(void **state)
{
    (void)state;
    size_t rows = 0;
    for (const mf_family *const *f = mf_family_all(); *f; f++)
        rows++;
    assert_int_equal(rows, N_FAMILIES);   /* a new row needs its detection case here */
    for (size_t i = 0; i < N_FAMILIES; i++) {
        mf_model m;
        mf_error_clear();
        if (mf_model_from_args(&m, make_args(each_family[i].args), NULL, "args.pt") != MF_OK)
            fail_msg("%s: %s", each_family[i].family, mf_error());
        assert_string_equal(m.family->name, each_family[i].family);
        assert_ptr_equal(m.family, mf_family_find(each_family[i].family));
        mf_model_free(&m);
    }
}

/* Args no row claims are refused with the reason, never guessed. */
static void test_detect_refuses_ambiguous(void **state)
{
    (void)state;
    static const arg mla_dense[] = { ON("multi_latent_attention"), END };
    static const arg shared_no_gate[] = { INT("num_experts", 8), INT("moe_shared_expert_intermediate_size", 64), END };
    mf_model m;
    assert_int_equal(mf_model_from_args(&m, make_args(mla_dense), NULL, "args.pt"), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "args.pt: ambiguous model: multi-latent attention without experts"));
    assert_int_equal(mf_model_from_args(&m, make_args(shared_no_gate), NULL, "args.pt"), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "args.pt: ambiguous MoE model"));
}

/* Each setting no family supports is refused by name, before detection (the messages of the
 * old global list, kept word for word). */
static void test_settings_refused_by_name(void **state)
{
    (void)state;
    static const struct {
        arg a;
        const char *msg;
    } cases[] = {
        { { "normalization", 's', 0, 0, "LayerNorm" }, "args.pt: unsupported model: normalization=LayerNorm (only RMSNorm families are supported)" },
        { { "position_embedding_type", 's', 0, 0, "learned_absolute" }, "args.pt: unsupported model: position_embedding_type=learned_absolute (need rope)" },
        { { "swiglu", 'b', 0, 0, NULL }, "args.pt: unsupported model: swiglu is off (no supported HF family uses a non-gated MLP)" },
        { ON("rotary_interleaved"), "args.pt: unsupported model: rotary_interleaved is set" },
        { { "experimental_attention_variant", 's', 0, 0, "dsa" },
          "args.pt: unsupported model: experimental_attention_variant=dsa (only gated_delta_net layers have an HF class: Qwen3-Next)" },
        { { "hybrid_layer_pattern", 's', 0, 0, "M*M*" }, "args.pt: unsupported model: hybrid_layer_pattern is set" },
        { INT("moe_mlp_glu_interleave_size", 32), "args.pt: unsupported model: moe_mlp_glu_interleave_size is set" },
        /* a setting only some rows express: the class the args point to is named */
        { { "rotary_percent", 'f', 0, 0.5, NULL }, "args.pt: unsupported by LlamaForCausalLM: rotary_percent < 1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        arg extra[] = { cases[i].a, END };
        mf_model m;
        mf_error_clear();
        assert_int_equal(mf_model_from_args(&m, make_args(extra), NULL, "args.pt"), MF_ERR_UNSUPPORTED);
        assert_string_equal(mf_error(), cases[i].msg);
        /* with the family forced, the refusal is the same */
        assert_int_equal(mf_model_from_args(&m, make_args(extra), "llama", "args.pt"), MF_ERR_UNSUPPORTED);
        assert_string_equal(mf_error(), cases[i].msg);
    }
    /* Qwen3-Next's settings: refused by every other row, naming it */
    static const arg gate_only[] = { ON("attention_output_gate"), END };
    static const arg gdn_only[] = { { "experimental_attention_variant", 's', 0, 0, "gated_delta_net" },
                                    INT("linear_attention_freq", 4), END };
    mf_model g;
    assert_int_equal(mf_model_from_args(&g, make_args(gate_only), "llama", "args.pt"), MF_ERR_UNSUPPORTED);
    assert_string_equal(mf_error(), "args.pt: unsupported by LlamaForCausalLM: attention_output_gate is set");
    assert_int_equal(mf_model_from_args(&g, make_args(gdn_only), "qwen3_moe", "args.pt"), MF_ERR_UNSUPPORTED);
    assert_string_equal(mf_error(), "args.pt: unsupported by Qwen3MoeForCausalLM: experimental_attention_variant is set");
    /* detected as Qwen3-Next by its gate, then refused by what its class needs */
    assert_int_equal(mf_model_from_args(&g, make_args(gate_only), NULL, "args.pt"), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "Qwen3NextForCausalLM needs experts"));
    /* the values that are no setting pass */
    static const arg fine[] = { { "position_embedding_type", 's', 0, 0, "yarn" }, { "rotary_percent", 'f', 0, 1.0, NULL },
                                { "hybrid_layer_pattern", 'n', 0, 0, NULL }, END };
    mf_model m;
    assert_int_equal(mf_model_from_args(&m, make_args(fine), NULL, "args.pt"), MF_OK);
    mf_model_free(&m);
}

/* A row that lists a setting in supports_args accepts it; the others refuse it naming their class. */
static void test_row_supports_setting(void **state)
{
    (void)state;
    static const arg partial[] = { { "rotary_percent", 'f', 0, 0.5, NULL }, END };
    const mf_pv *a = make_args(partial);
    mf_family glm = *mf_family_find("qwen2");
    glm.supports_args = MF_ARGF_PARTIAL_ROTARY;
    assert_int_equal(mf_args_settings(a), MF_ARGF_PARTIAL_ROTARY);
    assert_int_equal(mf_family_check_args(&glm, a, "args.pt"), MF_OK);
    assert_int_equal(mf_family_check_args(mf_family_find("qwen2"), a, "args.pt"), MF_ERR_UNSUPPORTED);
    assert_string_equal(mf_error(), "args.pt: unsupported by Qwen2ForCausalLM: rotary_percent < 1");
    /* detection skips a row that cannot express a setting the args turn on */
    mf_model m;
    static const arg qwen2_partial[] = { ON("add_qkv_bias"), END };
    assert_int_equal(mf_model_from_args(&m, make_args(qwen2_partial), NULL, "args.pt"), MF_OK);
    assert_null(mf_family_detect(&m, MF_ARGF_PARTIAL_ROTARY, NULL, "args.pt"));
    assert_ptr_equal(mf_family_detect(&m, 0, NULL, "args.pt"), mf_family_find("qwen2"));
    mf_model_free(&m);
}

/* rotary_percent outside (0, 1] describes no model: refused naming the arg, for every row. */
static void test_rotary_percent_range(void **state)
{
    (void)state;
    static const double bad[] = { 0.0, -0.5, 1.5 };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arg extra[] = { { "rotary_percent", 'f', 0, bad[i], NULL }, END };
        mf_model m;
        mf_error_clear();
        assert_int_equal(mf_model_from_args(&m, make_args(extra), "glm4_moe", "args.pt"), MF_ERR_INCONSISTENT);
        assert_non_null(strstr(mf_error(), "args.pt: rotary_percent="));
        assert_non_null(strstr(mf_error(), "outside (0, 1]"));
    }
}

/* ---- config.json per family ---- */

static const char *str_of(const cJSON *c, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_of(const cJSON *c, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!cJSON_IsNumber(v))
        fail_msg("config.json: %s is not a number", key);
    return v->valuedouble;
}

static void test_config_each_family(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_FAMILIES; i++) {
        mf_model m;
        assert_int_equal(mf_model_from_args(&m, make_args(each_family[i].args), NULL, "args.pt"), MF_OK);
        cJSON *c = us_config_of(&m);
        const char *fam = each_family[i].family;
        assert_string_equal(str_of(c, "model_type"), m.family->model_type);
        assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "architectures"), 0)->valuestring,
                            m.family->architecture);
        assert_string_equal(str_of(c, "hidden_act"), "silu");
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "rope_scaling")));
        if (strcmp(fam, "mistral") == 0)
            assert_true(num_of(c, "sliding_window") == 65);   /* Megatron left size + 1 */
        if (strcmp(fam, "qwen2") == 0 || strcmp(fam, "qwen2_moe") == 0)
            assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "use_sliding_window")));
        if (strcmp(fam, "mixtral") == 0)
            assert_true(num_of(c, "num_local_experts") == 8);
        if (strcmp(fam, "qwen2_moe") == 0)
            assert_true(num_of(c, "shared_expert_intermediate_size") == 64);
        if (strncmp(fam, "qwen", 4) == 0 && strstr(fam, "_moe"))
            assert_true(num_of(c, "num_experts") == 8);
        if (strncmp(fam, "deepseek", 8) == 0) {
            assert_true(num_of(c, "n_routed_experts") == 8);
            assert_true(num_of(c, "num_key_value_heads") == 4);
            assert_string_equal(str_of(c, "scoring_func"), strcmp(fam, "deepseek_v3") == 0 ? "sigmoid" : "softmax");
            assert_string_equal(str_of(c, "topk_method"), strcmp(fam, "deepseek_v3") == 0 ? "noaux_tc" : "greedy");
        }
        if (strcmp(fam, "qwen3_next") == 0) {   /* Qwen3NextConfig keys from their args */
            assert_true(num_of(c, "partial_rotary_factor") == 0.25 && num_of(c, "head_dim") == 32);
            assert_true(num_of(c, "linear_num_key_heads") == 2 && num_of(c, "linear_num_value_heads") == 4);
            assert_true(num_of(c, "linear_key_head_dim") == 16 && num_of(c, "linear_value_head_dim") == 8);
            assert_true(num_of(c, "linear_conv_kernel_dim") == 3 && num_of(c, "full_attention_interval") == 4);
            assert_true(num_of(c, "shared_expert_intermediate_size") == 64 && num_of(c, "moe_intermediate_size") == 32);
            assert_true(num_of(c, "num_experts") == 8 && num_of(c, "decoder_sparse_step") == 1);
            assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "norm_topk_prob")));
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "mlp_only_layers")), 0);
            const cJSON *types = cJSON_GetObjectItemCaseSensitive(c, "layer_types");
            assert_int_equal(cJSON_GetArraySize(types), 4);
            for (int l = 0; l < 4; l++)
                assert_string_equal(cJSON_GetArrayItem(types, l)->valuestring, l == 3 ? "full_attention" : "linear_attention");
        }
        if (strcmp(fam, "glm4_moe") == 0) {   /* each Glm4MoeConfig key from its arg */
            assert_true(num_of(c, "partial_rotary_factor") == 0.5);
            assert_true(num_of(c, "head_dim") == 32);
            assert_true(num_of(c, "n_routed_experts") == 8);
            assert_true(num_of(c, "n_shared_experts") == 2);
            assert_true(num_of(c, "moe_intermediate_size") == 32);
            assert_true(num_of(c, "num_experts_per_tok") == 2);
            assert_true(num_of(c, "routed_scaling_factor") == 2.5);
            assert_true(num_of(c, "n_group") == 1 && num_of(c, "topk_group") == 1);
            assert_true(num_of(c, "first_k_dense_replace") == 0);
            assert_true(num_of(c, "num_nextn_predict_layers") == 1);
            assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "attention_bias")));
            assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "use_qk_norm")));
            assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "norm_topk_prob")));
            assert_true(num_of(c, "num_key_value_heads") == 4);
        }
        cJSON_Delete(c);
        mf_model_free(&m);
    }
}

/* rope_scaling is the row's: Megatron's llama3 / linear flags, DeepSeek's YaRN in place. */
static void test_config_rope_scaling(void **state)
{
    (void)state;
    static const arg llama3[] = { ON("use_rope_scaling"), { "rope_scaling_factor", 'f', 0, 32.0, NULL }, END };
    static const arg yarn[] = { ON("multi_latent_attention"), INT("num_experts", 8),
                                { "rotary_scaling_factor", 'f', 0, 40.0, NULL }, ON("use_rope_scaling"), END };
    mf_model m;
    assert_int_equal(mf_model_from_args(&m, make_args(llama3), NULL, "args.pt"), MF_OK);
    cJSON *c = us_config_of(&m);
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(c, "rope_scaling");
    assert_string_equal(str_of(rs, "rope_type"), "llama3");
    assert_true(num_of(rs, "factor") == 32.0);
    cJSON_Delete(c);
    mf_model_free(&m);

    assert_int_equal(mf_model_from_args(&m, make_args(yarn), NULL, "args.pt"), MF_OK);
    c = us_config_of(&m);
    rs = cJSON_GetObjectItemCaseSensitive(c, "rope_scaling");
    assert_string_equal(str_of(rs, "type"), "yarn");   /* DeepSeek's wins over use_rope_scaling */
    assert_true(num_of(rs, "factor") == 40.0);
    cJSON_Delete(c);
    mf_model_free(&m);
}

static void custom_rope(const mf_model *m, cJSON *c)
{
    (void)m;
    cJSON_AddItemToObject(c, "rope_scaling", cJSON_CreateString("custom"));
}

/* hidden_act and rope_scaling come from the row, not from config.c. */
static void test_config_writer_pieces_from_row(void **state)
{
    (void)state;
    mf_model m;
    assert_int_equal(mf_model_from_args(&m, make_args(llama_args), NULL, "args.pt"), MF_OK);
    mf_family row = *m.family;
    row.hidden_act = "gelu_pytorch_tanh";
    row.rope_scaling = custom_rope;
    m.family = &row;
    cJSON *c = us_config_of(&m);
    assert_string_equal(str_of(c, "hidden_act"), "gelu_pytorch_tanh");
    assert_string_equal(str_of(c, "rope_scaling"), "custom");
    cJSON_Delete(c);
    mf_model_free(&m);
}

/* ---- options: the one place they change the model ---- */

static void test_model_apply_options(void **state)
{
    (void)state;
    static const arg mtp[] = { INT("mtp_num_layers", 1), INT("vocab_size", 200), END };
    mf_model m;
    mf_options o;
    assert_int_equal(mf_model_from_args(&m, make_args(mtp), NULL, "args.pt"), MF_OK);
    assert_int_equal(m.vocab, 200);
    assert_int_equal(m.mtp_shown, 1);
    mf_options_init(&o);
    assert_int_equal(mf_options_apply(&o, "true_vocab_size=257"), 1);   /* valid alone; too big here */
    assert_int_equal(mf_model_apply_options(&m, &o), MF_ERR_INVALID);
    assert_string_equal(mf_error(), "true_vocab_size=257 is larger than the checkpoint's padded vocab 256");
    assert_int_equal(m.vocab, 200);
    assert_int_equal(mf_options_apply(&o, "true_vocab_size=250"), 1);
    assert_int_equal(mf_options_apply(&o, "skip_mtp"), 1);
    assert_int_equal(mf_model_apply_options(&m, &o), MF_OK);
    assert_int_equal(m.vocab, 250);
    assert_int_equal(m.mtp_shown, 0);
    assert_int_equal(m.mtp_layers, 1);   /* still in the checkpoint, only hidden */
    assert_int_equal(m.mtp_head_copies, 0);
    mf_options_free(&o);
    mf_options_init(&o);
    assert_int_equal(mf_options_apply(&o, "mtp_head_copies"), 1);
    assert_int_equal(mf_model_apply_options(&m, &o), MF_OK);
    assert_int_equal(m.mtp_head_copies, 1);
    mf_options_free(&o);
    mf_model_free(&m);
}

/* ---- the one family list ---- */

static char *slurp(const char *rel)
{
    size_t len;
    char *text = (char *)us_read_file(us_data(rel), &len);
    if (!text)
        fail_msg("cannot read %s", us_data(rel));
    return text;
}

/* The README's supported-models table has exactly one row per family, with its architecture;
 * the man page, the README's arch= option and --help name every family. */
/* Each layer's mixer as Megatron's get_linear_attention_pattern reads it: linear_attention_freq
 * N = every N-th layer (1-based) full attention, or a per-layer list (1 = linear attention). */
static void test_mixer_layers_from_args(void **state)
{
    (void)state;
    mf_model m;
    memset(&m, 0, sizeof(m));
    m.num_layers = 8;
    const arg freq4[] = { { "experimental_attention_variant", 's', 0, 0, "gated_delta_net" },
                          INT("linear_attention_freq", 4), END };
    assert_int_equal(mf_model_read_mixers(&m, make_args(freq4), "args"), MF_OK);
    assert_non_null(m.mixer_layer);
    for (int l = 0; l < 8; l++)
        assert_int_equal(m.mixer_layer[l], (l + 1) % 4 == 0 ? MF_MIXER_ATTENTION : MF_MIXER_LINEAR_ATTENTION);

    /* a per-layer list, used as it is */
    static const int64_t pattern[8] = { 0, 1, 1, 0, 0, 0, 1, 0 };
    mf_pv items[8], *item_p[8];
    for (int l = 0; l < 8; l++) {
        items[l] = (mf_pv){ .kind = MF_PV_INT, .u.i = pattern[l] };
        item_p[l] = &items[l];
    }
    const arg listed[] = { { "experimental_attention_variant", 's', 0, 0, "gated_delta_net" }, END };
    mf_pv *a = (mf_pv *)make_args(listed);
    mf_pv key = { .kind = MF_PV_STR, .u.str = { (char *)"linear_attention_freq", 21 } };
    mf_pv list = { .kind = MF_PV_LIST, .u.seq = { item_p, 8, 8 } };
    key_p[a->u.dict.n] = &key;
    val_p[a->u.dict.n] = &list;
    a->u.dict.n++;
    assert_int_equal(mf_model_read_mixers(&m, a, "args"), MF_OK);
    for (int l = 0; l < 8; l++)
        assert_int_equal(m.mixer_layer[l], pattern[l] ? MF_MIXER_LINEAR_ATTENTION : MF_MIXER_ATTENTION);
    m.num_layers = 6;   /* the list must name every layer */
    assert_int_equal(mf_model_read_mixers(&m, a, "args"), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "lists 8 layers, num_layers is 6"));
    m.num_layers = 8;

    /* the variant without a frequency is an error Megatron itself refuses */
    const arg no_freq[] = { { "experimental_attention_variant", 's', 0, 0, "gated_delta_net" }, END };
    assert_int_equal(mf_model_read_mixers(&m, make_args(no_freq), "args"), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "linear_attention_freq"));

    /* no variant: every layer is attention */
    assert_int_equal(mf_model_read_mixers(&m, make_args(NULL), "args"), MF_OK);
    assert_null(m.mixer_layer);
    free(m.mixer_layer);
}

/* gpt-oss: the row's needs refuse by name what GptOssForCausalLM cannot express, other rows
 * refuse its settings, and the config carries the per-layer window, the clamp and YaRN. */
static void test_gptoss(void **state)
{
    (void)state;
    static const arg sinks_on_llama[] = { { "softmax_type", 's', 0, 0, "learnable" }, END };
    static const arg skip_on_mistral[] = { { "window_size", 'w', 64, 0, NULL }, INT("window_attn_skip_freq", 2), END };
    mf_model m;
    assert_int_equal(mf_model_from_args(&m, make_args(sinks_on_llama), "llama", "args.pt"), MF_ERR_UNSUPPORTED);
    assert_string_equal(mf_error(), "args.pt: unsupported by LlamaForCausalLM: softmax_type=learnable");
    assert_int_equal(mf_model_from_args(&m, make_args(skip_on_mistral), "mistral", "args.pt"), MF_ERR_UNSUPPORTED);
    assert_string_equal(mf_error(), "args.pt: unsupported by MistralForCausalLM: window_attn_skip_freq is set");
    static const arg geglu_on_llama[] = { { "swiglu", 'b', 0, 0, NULL }, ON("quick_geglu"), END };
    assert_int_equal(mf_model_from_args(&m, make_args(geglu_on_llama), "llama", "args.pt"), MF_ERR_UNSUPPORTED);
    assert_string_equal(mf_error(), "args.pt: unsupported by LlamaForCausalLM: quick_geglu is set");

    /* each need in turn taken away: refused naming it */
    static const struct {
        arg a;
        const char *what;
    } needs[] = {
        { { "softmax_type", 's', 0, 0, "vanilla" }, "needs learnable attention sinks" },
        { { "activation_func_clamp_value", 'n', 0, 0, NULL }, "needs the clamped quick-GeGLU" },
        { { "quick_geglu", 'b', 0, 0, NULL }, "unsupported model: swiglu is off" },
        { ON("swiglu"), "needs the clamped quick-GeGLU" },
        { { "add_bias_linear", 'b', 0, 0, NULL }, "needs linear-layer biases" },
        { { "window_size", 'n', 0, 0, NULL }, "needs sliding-window attention" },
        { INT("moe_layer_freq", 2), "cannot express dense layers in a MoE model" },
        { ON("moe_router_pre_softmax"), "cannot express a softmax before the top-k choice" },
        { { "moe_router_topk_scaling_factor", 'f', 0, 2.5, NULL }, "cannot express scaled routing weights" },
        { INT("moe_router_num_groups", 2), "cannot express group-limited routing" },
        { ON("moe_apply_probs_on_input"), "unsupported model: moe_apply_probs_on_input is set" },
    };
    for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
        arg extra[16];
        size_t n = 0;
        for (const arg *a = gptoss_args; a->key; a++)
            extra[n++] = *a;
        extra[n++] = needs[i].a;
        extra[n] = (arg)END;
        mf_error_clear();
        assert_int_equal(mf_model_from_args(&m, make_args(extra), "gpt_oss", "args.pt"), MF_ERR_UNSUPPORTED);
        if (!strstr(mf_error(), needs[i].what))
            fail_msg("%s: %s", needs[i].a.key, mf_error());
    }

    static const arg yarn[] = { { "position_embedding_type", 's', 0, 0, "yarn" }, { "rotary_scaling_factor", 'f', 0, 32.0, NULL },
                                INT("yarn_original_max_position_embeddings", 4096), { "yarn_beta_fast", 'f', 0, 32.0, NULL },
                                { "yarn_beta_slow", 'f', 0, 1.0, NULL }, { "yarn_correction_range_round_to_int", 'b', 0, 0, NULL }, END };
    arg both[24];
    size_t n = 0;
    for (const arg *a = gptoss_args; a->key; a++)
        both[n++] = *a;
    for (const arg *a = yarn; a->key; a++)
        both[n++] = *a;
    both[n] = (arg)END;
    assert_int_equal(mf_model_from_args(&m, make_args(both), NULL, "args.pt"), MF_OK);
    assert_string_equal(m.family->name, "gpt_oss");
    cJSON *c = us_config_of(&m);
    assert_true(num_of(c, "sliding_window") == 5);   /* Megatron (4, 0): 4 earlier tokens + itself */
    assert_true(num_of(c, "swiglu_limit") == 7.0);
    assert_true(num_of(c, "num_local_experts") == 4);
    assert_true(num_of(c, "intermediate_size") == 128);
    assert_true(num_of(c, "max_position_embeddings") == 32 * 4096);
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(c, "layer_types");
    assert_int_equal(cJSON_GetArraySize(types), 4);
    static const char *const want[] = { "sliding_attention", "full_attention", "sliding_attention", "full_attention" };
    for (int l = 0; l < 4; l++)
        assert_string_equal(cJSON_GetArrayItem(types, l)->valuestring, want[l]);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c, "rope_scaling");
    assert_string_equal(str_of(rs, "rope_type"), "yarn");
    assert_true(num_of(rs, "factor") == 32.0 && num_of(rs, "original_max_position_embeddings") == 4096);
    assert_true(num_of(rs, "beta_fast") == 32.0 && num_of(rs, "beta_slow") == 1.0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(rs, "truncate")));
    cJSON_Delete(c);
    mf_model_free(&m);
}

static void test_docs_list_every_family(void **state)
{
    (void)state;
    char *readme = slurp("../../README.md"), *man = slurp("../../docs/man/mcorefs.1");
    const char *table = strstr(readme, "| family (`arch=`) | HF architecture |");
    assert_non_null(table);
    const char *end = strstr(table, "\n\n");
    assert_non_null(end);
    int rows = 0;
    for (const char *p = strstr(table, "\n| `"); p && p < end; p = strstr(p + 1, "\n| `"))
        rows++;
    const char *man_arch = strstr(man, "\\-o arch=");
    assert_non_null(man_arch);
    const char *man_end = strstr(man_arch, ".TP");
    int n = 0;
    for (const mf_family *const *f = mf_family_all(); *f; f++, n++) {
        char row[128], opt[64];
        snprintf(row, sizeof(row), "\n| `%s` | %s", (*f)->name, (*f)->architecture);
        const char *hit = strstr(table, row);
        if (!hit || hit > end)
            fail_msg("README's supported-models table lacks the row for %s (%s)", (*f)->name, (*f)->architecture);
        snprintf(opt, sizeof(opt), "`%s`", (*f)->name);
        if (!strstr(strstr(readme, "| `arch=NAME` |"), opt))
            fail_msg("README's arch= option lacks %s", (*f)->name);
        const char *in_man = strstr(man_arch, (*f)->name);
        if (!in_man || (man_end && in_man > man_end))
            fail_msg("docs/man/mcorefs.1 -o arch= lacks %s", (*f)->name);
        if (!strstr(mf_options_help(), (*f)->name) || !strstr(mf_family_names(", "), (*f)->name))
            fail_msg("--help lacks %s", (*f)->name);
    }
    assert_int_equal(rows, n);   /* and no row for a family that does not exist */
    free(readme);
    free(man);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_every_family),
        cmocka_unit_test(test_detect_refuses_ambiguous),
        cmocka_unit_test(test_settings_refused_by_name),
        cmocka_unit_test(test_row_supports_setting),
        cmocka_unit_test(test_rotary_percent_range),
        cmocka_unit_test(test_config_each_family),
        cmocka_unit_test(test_config_rope_scaling),
        cmocka_unit_test(test_config_writer_pieces_from_row),
        cmocka_unit_test(test_model_apply_options),
        cmocka_unit_test(test_mixer_layers_from_args),
        cmocka_unit_test(test_gptoss),
        cmocka_unit_test(test_docs_list_every_family),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
