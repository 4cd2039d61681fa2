/* HF config -> Megatron args -> config.json for the families beyond the GQA ones (DeepSeek-V2/V3,
 * GLM-4.5, gpt-oss): describing a save without args from an HF config and writing config.json
 * back (without the hf_config overlay) gives every key of the HF config back with its value;
 * values Megatron's args cannot express are refused naming the key. The configs are the ones
 * tests/fixtures/mcore_gen.py writes for its deepseek_v3 (mtp=1), glm4_moe (mtp=1) and gpt_oss
 * models, plus a DeepSeek-V2-Lite shape (no q compression, softmax router, YaRN). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include "hf_describe.h"
#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/options.h"
#include "mcorefs/recipe.h"
#include "mcorefs/view.h"
#include "unit_support.h"

static const char *const deepseek_v3 =
    "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\", \"vocab_size\": 1000, \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 4,"
    " \"hidden_act\": \"silu\", \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"rope_scaling\": null,"
    " \"moe_intermediate_size\": 32, \"n_routed_experts\": 8, \"n_shared_experts\": 1, \"routed_scaling_factor\": 2.5,"
    " \"kv_lora_rank\": 16, \"q_lora_rank\": 32, \"qk_rope_head_dim\": 8, \"qk_nope_head_dim\": 16, \"v_head_dim\": 16,"
    " \"n_group\": 2, \"topk_group\": 1, \"num_experts_per_tok\": 2, \"first_k_dense_replace\": 1, \"rope_interleave\": true,"
    " \"norm_topk_prob\": true, \"num_nextn_predict_layers\": 1, \"scoring_func\": \"sigmoid\", \"topk_method\": \"noaux_tc\"}";

static const char *const deepseek_v2_lite =
    "{\"architectures\": [\"DeepseekV2ForCausalLM\"], \"model_type\": \"deepseek_v2\", \"vocab_size\": 1000, \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 4,"
    " \"hidden_act\": \"silu\", \"max_position_embeddings\": 163840, \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true,"
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40.0, \"original_max_position_embeddings\": 4096, \"beta_fast\": 32.0,"
    " \"beta_slow\": 1.0, \"mscale\": 0.707, \"mscale_all_dim\": 0.707},"
    " \"moe_intermediate_size\": 32, \"n_routed_experts\": 8, \"n_shared_experts\": 2, \"routed_scaling_factor\": 1.0,"
    " \"kv_lora_rank\": 16, \"q_lora_rank\": null, \"qk_rope_head_dim\": 8, \"qk_nope_head_dim\": 16, \"v_head_dim\": 16,"
    " \"n_group\": 1, \"topk_group\": 1, \"num_experts_per_tok\": 3, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1,"
    " \"norm_topk_prob\": false, \"num_nextn_predict_layers\": 0, \"scoring_func\": \"softmax\", \"topk_method\": \"greedy\","
    " \"aux_loss_alpha\": 0.001}";

static const char *const glm4_moe =
    "{\"architectures\": [\"Glm4MoeForCausalLM\"], \"model_type\": \"glm4_moe\", \"vocab_size\": 1000, \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    " \"hidden_act\": \"silu\", \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"head_dim\": 32, \"rope_scaling\": null,"
    " \"partial_rotary_factor\": 0.5, \"attention_bias\": true, \"use_qk_norm\": true, \"moe_intermediate_size\": 32,"
    " \"n_routed_experts\": 8, \"n_shared_experts\": 1, \"num_experts_per_tok\": 2, \"routed_scaling_factor\": 2.5,"
    " \"n_group\": 1, \"topk_group\": 1, \"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"num_nextn_predict_layers\": 1}";

static const char *const gpt_oss =
    "{\"architectures\": [\"GptOssForCausalLM\"], \"model_type\": \"gpt_oss\", \"vocab_size\": 1000, \"hidden_size\": 64,"
    " \"intermediate_size\": 32, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    " \"hidden_act\": \"silu\", \"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-05, \"rope_theta\": 150000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"head_dim\": 32,"
    " \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 32.0, \"beta_fast\": 32.0, \"beta_slow\": 1.0, \"truncate\": false,"
    " \"original_max_position_embeddings\": 4096}, \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"attention_bias\": true,"
    " \"sliding_window\": 5, \"swiglu_limit\": 7.0,"
    " \"layer_types\": [\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\"]}";

static int describe(mf_model *m, mf_pickle **pk, const char *json)
{
    const mf_pv *args;
    const char *p = us_tmp("hf.json");
    assert_int_equal(us_write_file(p, json, strlen(json)), 0);
    *pk = NULL;
    return mf_model_from_hf_config(m, pk, &args, p, NULL, 1024, "ckpt/.metadata");
}

/* Every key of the HF config comes back from config.json with the same value. */
static void round_trip(const char *json, const char *family)
{
    mf_model m;
    mf_pickle *pk;
    if (describe(&m, &pk, json) != MF_OK)
        fail_msg("%s: %s", family, mf_error());
    assert_string_equal(m.family->name, family);
    cJSON *in = cJSON_Parse(json), *out = us_config_of(&m);
    for (const cJSON *k = in->child; k; k = k->next) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(out, k->string);
        if (!v || !cJSON_Compare(k, v, 1)) {
            char *a = cJSON_PrintUnformatted(k), *b = v ? cJSON_PrintUnformatted(v) : NULL;
            fail_msg("%s: config.json '%s' = %s, the HF config has %s", family, k->string, b ? b : "(absent)", a);
        }
    }
    cJSON_Delete(in);
    cJSON_Delete(out);
    mf_model_free(&m);
    mf_pickle_free(pk);
}

static void test_deepseek_v3(void **state)
{
    (void)state;
    round_trip(deepseek_v3, "deepseek_v3");
    mf_model m;
    mf_pickle *pk;
    assert_int_equal(describe(&m, &pk, deepseek_v3), MF_OK);
    assert_true(m.mla && m.moe_expert_bias && m.mtp_layers == 1 && m.moe_num_groups == 2);
    assert_int_equal(m.shared_ffn, 32);
    assert_int_equal(m.moe_layer[0], 0);   /* first_k_dense_replace */
    assert_int_equal(m.moe_layer[1], 1);
    mf_model_free(&m);
    mf_pickle_free(pk);
}

static void test_deepseek_v2_lite(void **state)
{
    (void)state;
    round_trip(deepseek_v2_lite, "deepseek_v2");
}

static void test_glm4_moe(void **state)
{
    (void)state;
    round_trip(glm4_moe, "glm4_moe");
}

static void test_gpt_oss(void **state)
{
    (void)state;
    round_trip(gpt_oss, "gpt_oss");
}

/* The config with `key`'s value text replaced by `value` is refused with code, naming part. */
static void expect_refused(const char *json, const char *key, const char *value, int code, const char *part)
{
    cJSON *c = cJSON_Parse(json);
    assert_non_null(c);
    cJSON_DeleteItemFromObjectCaseSensitive(c, key);
    if (value)
        cJSON_AddItemToObject(c, key, cJSON_Parse(value));
    char *text = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    mf_model m;
    mf_pickle *pk;
    int rc = describe(&m, &pk, text);
    mf_pickle_free(pk);
    if (rc == MF_OK) {
        mf_model_free(&m);
        fail_msg("accepted %s=%s", key, value ? value : "(absent)");
    }
    free(text);
    assert_int_equal(rc, code);
    if (!strstr(mf_error(), part) || !strstr(mf_error(), "hf.json"))
        fail_msg("message '%s' lacks '%s' or the file", mf_error(), part);
}

static void test_refused(void **state)
{
    (void)state;
    expect_refused(deepseek_v3, "q_lora_rank", NULL, MF_ERR_MISSING, "lacks 'q_lora_rank'");
    expect_refused(deepseek_v3, "kv_lora_rank", NULL, MF_ERR_MISSING, "lacks 'kv_lora_rank'");
    expect_refused(deepseek_v3, "rope_interleave", "false", MF_ERR_UNSUPPORTED, "'rope_interleave' = false");
    expect_refused(deepseek_v3, "norm_topk_prob", "false", MF_ERR_UNSUPPORTED, "'norm_topk_prob' = false");
    expect_refused(deepseek_v3, "scoring_func", "\"tanh\"", MF_ERR_UNSUPPORTED, "'scoring_func' = \"tanh\"");
    expect_refused(deepseek_v3, "topk_method", "\"other\"", MF_ERR_UNSUPPORTED, "'topk_method' = \"other\"");
    expect_refused(deepseek_v3, "attention_bias", "true", MF_ERR_UNSUPPORTED, "'attention_bias' = true");
    expect_refused(deepseek_v2_lite, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2}", MF_ERR_UNSUPPORTED, "'rope_scaling'");
    expect_refused(glm4_moe, "head_dim", NULL, MF_ERR_MISSING, "lacks 'head_dim'");
    expect_refused(glm4_moe, "first_k_dense_replace", NULL, MF_ERR_MISSING, "lacks 'first_k_dense_replace'");
    expect_refused(gpt_oss, "attention_bias", "false", MF_ERR_UNSUPPORTED, "'attention_bias' = false");
    expect_refused(gpt_oss, "layer_types", "[\"full_attention\"]", MF_ERR_UNSUPPORTED, "'layer_types'");
    expect_refused(gpt_oss, "layer_types", "[\"a\", \"b\", \"c\", \"d\"]", MF_ERR_UNSUPPORTED, "sliding_attention or full_attention");
    expect_refused(gpt_oss, "sliding_window", "1", MF_ERR_UNSUPPORTED, "'sliding_window' = 1");
    expect_refused(gpt_oss, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 32.0}", MF_ERR_UNSUPPORTED, "original_max_position_embeddings");
    expect_refused(gpt_oss, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 1e300, \"original_max_position_embeddings\": 4096}",
                   MF_ERR_UNSUPPORTED, "factor in [1, 2^20]");
    /* the clamp HF hard-codes is 7 (MF_FEAT_CLAMPED_GEGLU): another limit has no HF class */
    expect_refused(gpt_oss, "swiglu_limit", "5.0", MF_ERR_UNSUPPORTED, "clamped quick-GeGLU");
    /* Qwen3-Next: the norm convention is not in an HF config */
    expect_refused(glm4_moe, "architectures", "[\"Qwen3NextForCausalLM\"]", MF_ERR_UNSUPPORTED, "layernorm_zero_centered_gamma");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deepseek_v3), cmocka_unit_test(test_deepseek_v2_lite), cmocka_unit_test(test_glm4_moe),
        cmocka_unit_test(test_gpt_oss),     cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
