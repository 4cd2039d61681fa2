/* Unit tests for the formats without Megatron's sharded keys or args: torch_dcp / fsdp_dtensor
 * detection and key mapping (dcp_model.c), the model description from an HF config
 * (hf_describe.c) and from a NeMo 2.0 context/model.yaml (nemo_context.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "dcp_model.h"
#include "hf_describe.h"
#include "mcorefs/error.h"
#include "mcorefs/recipe.h"
#include "nemo_context.h"
#include "unit_support.h"

/* ---- layout detection ---- */

static mf_dcp_layout layout_of(const char *const *fqns)
{
    mf_dcp_tensor t[8];
    mf_dcp d = { 0 };
    memset(t, 0, sizeof t);
    for (size_t i = 0; fqns[i]; i++)
        t[d.n_tensors++].fqn = (char *)fqns[i];
    d.tensors = t;
    return mf_dcp_layout_of(&d);
}

static void test_layout(void **state)
{
    (void)state;
    const char *dist[] = { "embedding.word_embeddings.weight", "decoder.layers.self_attention.linear_qkv.weight",
                           "optimizer.state.exp_avg.decoder.final_layernorm.weight", NULL };
    const char *dcp[] = { "model.embedding.word_embeddings.weight", "model.decoder.layers.0.mlp.linear_fc1.weight",
                          "optimizer.state.exp_avg.decoder.layers.0.mlp.linear_fc1.weight", NULL };
    const char *fsdp[] = { "model.module.embedding.word_embeddings.weight", "model.module.decoder.final_layernorm.weight",
                           NULL };
    const char *nemo[] = { "module.embedding.word_embeddings.weight", "module.decoder.layers.mlp.linear_fc1.weight",
                           NULL };
    assert_int_equal(layout_of(dist), MF_DCP_TORCH_DIST);
    assert_int_equal(layout_of(dcp), MF_DCP_TORCH_DCP);
    assert_int_equal(layout_of(fsdp), MF_DCP_FSDP_DTENSOR);
    assert_int_equal(layout_of(nemo), MF_DCP_TORCH_DIST);   /* NeMo: Megatron's sharded keys under module. */
    assert_string_equal(mf_dcp_layout_name(MF_DCP_FSDP_DTENSOR), "fsdp_dtensor");
    assert_string_equal(mf_dcp_layout_name(MF_DCP_TORCH_DCP), "torch_dcp");
}

/* ---- key mapping ---- */

static void expect_key(const mf_model *m, const char *fqn, const char *want, int half, int expert)
{
    char out[600];
    mf_dcp_model_key k;
    if (mf_dcp_model_canon(fqn, m, out, sizeof out, &k) != 0)
        fail_msg("'%s' refused", fqn);
    if (want == NULL) {
        if (!k.skip)
            fail_msg("'%s' not skipped (-> %s)", fqn, out);
        return;
    }
    if (k.skip)
        fail_msg("'%s' skipped", fqn);
    if (strcmp(out, want) != 0 || k.half != half || k.expert != expert)
        fail_msg("'%s' -> '%s' half %d expert %d, expected '%s' half %d expert %d", fqn, out, k.half, k.expert, want, half,
                 expert);
}

static void expect_refused(const mf_model *m, const char *fqn)
{
    char out[600];
    mf_dcp_model_key k;
    if (mf_dcp_model_canon(fqn, m, out, sizeof out, &k) == 0)
        fail_msg("'%s' accepted as '%s'", fqn, k.skip ? "(skip)" : out);
}

static void test_keys(void **state)
{
    (void)state;
    mf_model m = { 0 };
    m.num_layers = 4;
    m.num_experts = 8;
    m.mtp_layers = 1;
    m.tied = 1;
    expect_key(&m, "model.decoder.layers.3.self_attention.linear_qkv.weight", "decoder.layers.3.self_attention.linear_qkv.weight", 0, 0);
    expect_key(&m, "model.module.module.decoder.final_layernorm.weight", "decoder.final_layernorm.weight", 0, 0);
    expect_key(&m, "model.module.decoder.layers.0.mlp.linear_fc1.weight_w", "decoder.layers.0.mlp.linear_fc1.weight", 1, 0);
    expect_key(&m, "model.module.decoder.layers.0.mlp.linear_fc1.bias_v", "decoder.layers.0.mlp.linear_fc1.bias", 2, 0);
    expect_key(&m, "model.module.decoder.layers.1.mlp.shared_experts.linear_fc1.weight_v",
               "decoder.layers.1.mlp.shared_experts.linear_fc1.weight", 2, 0);
    expect_key(&m, "model.module.decoder.layers.1.mlp.experts.linear_fc1.weight7_w",      /* TEGroupedMLP */
               "decoder.layers.1.mlp.experts.7.linear_fc1.weight", 1, 1);
    expect_key(&m, "model.module.decoder.layers.1.mlp.experts.linear_fc2.weight5", "decoder.layers.1.mlp.experts.5.linear_fc2.weight", 0, 1);
    expect_key(&m, "model.decoder.layers.2.mlp.experts.local_experts.6.linear_fc1.weight",  /* SequentialMLP */
               "decoder.layers.2.mlp.experts.6.linear_fc1.weight", 0, 1);
    expect_key(&m, "model.mtp.layers.0.transformer_layer.mlp.linear_fc2.weight", "decoder.layers.4.mlp.linear_fc2.weight", 0, 0);
    expect_key(&m, "model.mtp.layers.0.enorm.weight", "mtp.layers.4.enorm.weight", 0, 0);
    /* a _w / _v suffix elsewhere is part of the name, not a gated half */
    expect_key(&m, "model.decoder.layers.0.self_attention.linear_proj.weight_v", "decoder.layers.0.self_attention.linear_proj.weight_v", 0, 0);
    expect_key(&m, "model.decoder.layers.0.mlp.linear_fc1.layer_norm_weight", "decoder.layers.0.mlp.linear_fc1.layer_norm_weight", 0, 0);
    expect_key(&m, "model.output_layer.weight", "stage_copy.output_layer.weight", 0, 0);  /* tied: a copy */
    /* not weights */
    expect_key(&m, "model.decoder.layers.0.self_attention.linear_qkv._extra_state", NULL, 0, 0);
    expect_key(&m, "optimizer.state.exp_avg.module.decoder.layers.0.mlp.linear_fc1.weight", NULL, 0, 0);
    expect_key(&m, "rng_state", NULL, 0, 0);
    /* keys that do not fit the model */
    expect_refused(&m, "model.decoder.layers.4.mlp.linear_fc2.weight");
    expect_refused(&m, "model.mtp.layers.1.enorm.weight");
    expect_refused(&m, "model.decoder.layers.x.mlp.linear_fc2.weight");
    expect_refused(&m, "model.decoder.layers.0.mlp.experts.weight1");          /* legacy GroupedMLP: not FSDP's */
    char p[600];
    mf_dcp_model_partner("model.module.decoder.layers.1.mlp.experts.linear_fc1.weight7_w", p, sizeof p);
    assert_string_equal(p, "model.module.decoder.layers.1.mlp.experts.linear_fc1.weight7_v");
}

/* ---- HF config ---- */

static const char *write_tmp(const char *name, const char *text)
{
    const char *p = us_tmp(name);
    assert_int_equal(us_write_file(p, text, strlen(text)), 0);
    return p;
}

static int from_hf(mf_model *m, mf_pickle **pk, const char *json, int64_t rows)
{
    const mf_pv *args;
    *pk = NULL;
    return mf_model_from_hf_config(m, pk, &args, write_tmp("hf.json", json), NULL, rows, "ckpt/.metadata");
}

static void test_hf_llama(void **state)
{
    (void)state;
    mf_model m;
    mf_pickle *pk;
    int rc = from_hf(&m, &pk, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 64,"
                     " \"intermediate_size\": 128, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                     " \"head_dim\": 16, \"vocab_size\": 1000, \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05,"
                     " \"rope_theta\": 500000.0, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
                     " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}", 1024);
    if (rc)
        fail_msg("%s", mf_error());
    assert_string_equal(m.family->name, "llama");
    assert_int_equal(m.num_layers, 4);
    assert_int_equal(m.groups, 2);
    assert_int_equal(m.padded_vocab, 1024);   /* the stored rows */
    assert_int_equal(m.vocab, 1000);
    assert_int_equal(m.params_dtype, MF_DT_BF16);
    assert_int_equal(m.tied, 0);
    assert_true(m.use_rope_scaling);
    assert_true(m.rope_theta == 500000.0);
    assert_true(strstr(m.args_from, "hf_config ") == m.args_from);
    mf_model_free(&m);
    mf_pickle_free(pk);
}

static void test_hf_qwen_moe(void **state)
{
    (void)state;
    mf_model m;
    mf_pickle *pk;
    int rc = from_hf(&m, &pk, "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                     " \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"vocab_size\": 1000, \"num_experts\": 8,"
                     " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"shared_expert_intermediate_size\": 64,"
                     " \"decoder_sparse_step\": 1, \"mlp_only_layers\": [1], \"norm_topk_prob\": false}", 0);
    if (rc)
        fail_msg("%s", mf_error());
    assert_string_equal(m.family->name, "qwen2_moe");
    assert_int_equal(m.num_experts, 8);
    assert_int_equal(m.moe_ffn, 32);
    assert_int_equal(m.shared_ffn, 64);
    assert_true(m.moe_shared_gate && m.moe_pre_softmax && m.qkv_bias);
    assert_int_equal(m.moe_layer[0], 1);
    assert_int_equal(m.moe_layer[1], 0);   /* mlp_only_layers */
    assert_int_equal(m.padded_vocab, 1000);
    mf_model_free(&m);
    mf_pickle_free(pk);
}

/* A long mlp_only_layers list costs one pass, not one per layer (100k layers x 200k entries took
 * 71 s before); out-of-range, fractional and repeated entries mark nothing or mark once. */
static void test_hf_long_dense_list(void **state)
{
    (void)state;
    enum { LAYERS = 100000, ENTRIES = 200000 };
    size_t cap = 512 + (size_t)ENTRIES * 12, n = 0;
    char *json = malloc(cap);
    assert_non_null(json);
    n += (size_t)snprintf(json + n, cap - n, "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                          " \"num_hidden_layers\": %d, \"num_attention_heads\": 4, \"vocab_size\": 1000, \"num_experts\": 8,"
                          " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"mlp_only_layers\": [1.5, -1, %d",
                          LAYERS, LAYERS);
    for (int i = 0; i < ENTRIES; i++)   /* every odd layer, each twice */
        n += (size_t)snprintf(json + n, cap - n, ", %d", (2 * i + 1) % LAYERS);
    snprintf(json + n, cap - n, "]}");
    mf_model m;
    mf_pickle *pk;
    clock_t t0 = clock();
    int rc = from_hf(&m, &pk, json, 0);
    double cpu = (double)(clock() - t0) / CLOCKS_PER_SEC;
    free(json);
    if (rc)
        fail_msg("%s", mf_error());
    assert_true(cpu < 30.0);   /* generous for valgrind; the quadratic loop needed minutes natively */
    for (int l = 0; l < 8; l++)
        assert_int_equal(m.moe_layer[l], l % 2 == 0);
    assert_int_equal(m.moe_layer[LAYERS - 1], 0);
    assert_int_equal(m.moe_layer[LAYERS - 2], 1);
    mf_model_free(&m);
    mf_pickle_free(pk);
}

static void expect_hf_error(const char *json, int code, const char *part)
{
    mf_model m;
    mf_pickle *pk = NULL;
    int rc = from_hf(&m, &pk, json, 0);
    mf_pickle_free(pk);
    if (rc == MF_OK) {
        mf_model_free(&m);
        fail_msg("accepted: %s", json);
    }
    assert_int_equal(rc, code);
    if (!strstr(mf_error(), part) || !strstr(mf_error(), "hf.json"))
        fail_msg("message '%s' lacks '%s' or the file", mf_error(), part);
}

static void test_hf_refused(void **state)
{
    (void)state;
    expect_hf_error("{\"model_type\": \"llama\", \"hidden_size\": 64}", MF_ERR_MISSING, "lacks 'num_hidden_layers'");
    expect_hf_error("{\"hidden_size\": 64}", MF_ERR_MISSING, "neither 'architectures' nor 'model_type'");
    expect_hf_error("{\"model_type\": \"qwen3_next\"}", MF_ERR_UNSUPPORTED, "describing 'qwen3_next'");
    expect_hf_error("{\"model_type\": \"gpt2\"}", MF_ERR_UNSUPPORTED, "describing 'gpt2'");
    expect_hf_error("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 64.5}", MF_ERR_FORMAT,
                    "'hidden_size' is not a whole number");
    expect_hf_error("{\"model_type\": \"llama\", \"num_hidden_layers\": 1e300}", MF_ERR_FORMAT,
                    "'num_hidden_layers' is not a whole number");
    expect_hf_error("{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 1099511627776,"
                    " \"num_attention_heads\": 4, \"vocab_size\": 10, \"num_local_experts\": 2, \"num_experts_per_tok\": 1}",
                    MF_ERR_INCONSISTENT, "num_hidden_layers=1099511627776 is impossible");
    expect_hf_error("[1, 2]", MF_ERR_FORMAT, "must be a JSON object");
    expect_hf_error("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
                    " \"num_attention_heads\": 4, \"vocab_size\": 10, \"hidden_act\": \"gelu\"}",
                    MF_ERR_UNSUPPORTED, "hidden_act 'gelu'");
    expect_hf_error("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
                    " \"num_attention_heads\": 4, \"vocab_size\": 10, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}",
                    MF_ERR_UNSUPPORTED, "rope_scaling of type 'yarn'");
}

/* ---- NeMo 2.0 model.yaml ---- */

static void test_nemo_yaml(void **state)
{
    (void)state;
    const char *dir = us_tmp("nemo");
    char p[600];
    snprintf(p, sizeof p, "%s/context", dir);
    mkdir(dir, 0755);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/weights", dir);
    mkdir(p, 0755);
    char yaml[600];
    snprintf(yaml, sizeof yaml, "%s/context/model.yaml", dir);
    const char *text =
        "_target_: nemo.collections.llm.gpt.model.qwen3.Qwen3MoEModel\n"
        "config:\n"
        "  _target_: nemo.collections.llm.gpt.model.qwen3.Qwen3Config\n"
        "  num_layers: 3\n"
        "  hidden_size: 64\n"
        "  ffn_hidden_size: 128\n"
        "  num_attention_heads: 4\n"
        "  num_query_groups: 2\n"
        "  kv_channels: 32\n"
        "  normalization: 'RMSNorm'\n"
        "  qk_layernorm: true\n"
        "  layernorm_epsilon: 1.0e-06\n"
        "  seq_length: 4096\n"
        "  num_moe_experts: 4\n"
        "  moe_ffn_hidden_size: 32\n"
        "  moe_router_topk: 2\n"
        "  moe_layer_freq:\n"
        "  - 0\n"
        "  - 1\n"
        "  - 1\n"
        "  window_size: null\n"
        "  gated_linear_unit: true\n"
        "  activation_func:\n"
        "    _call_: false\n"
        "    _target_: torch.nn.functional.silu\n"
        "  share_embeddings_and_output_weights: false\n"
        "  params_dtype:\n"
        "    _call_: false\n"
        "    _target_: torch.bfloat16\n"
        "  vocab_size: 1000\n"
        "tokenizer:\n"
        "  _target_: x.AutoTokenizer\n"
        "  num_layers: 99\n";
    assert_int_equal(us_write_file(yaml, text, strlen(text)), 0);
    char found[700];
    assert_int_equal(mf_nemo_model_yaml(p, found, sizeof found), 1);
    assert_string_equal(found, yaml);
    assert_int_equal(mf_nemo_model_yaml(dir, found, sizeof found), 0);   /* not the weights folder */
    mf_model m;
    mf_pickle *pk = NULL;
    const mf_pv *args;
    int rc = mf_model_from_nemo_yaml(&m, &pk, &args, yaml, NULL, 1024, "w/.metadata");
    if (rc)
        fail_msg("%s", mf_error());
    assert_string_equal(m.family->name, "qwen3_moe");
    assert_int_equal(m.num_layers, 3);   /* config's, not the tokenizer's */
    assert_int_equal(m.groups, 2);
    assert_int_equal(m.head_dim, 32);
    assert_int_equal(m.max_pos, 4096);
    assert_int_equal(m.num_experts, 4);
    assert_int_equal(m.moe_layer[0], 0);
    assert_int_equal(m.moe_layer[2], 1);
    assert_int_equal(m.padded_vocab, 1024);
    assert_int_equal(m.vocab, 1000);
    assert_int_equal(m.params_dtype, MF_DT_BF16);
    assert_true(m.swiglu && m.qk_norm && !m.tied);
    mf_model_free(&m);
    mf_pickle_free(pk);

    /* gated GELU is not SwiGLU: refused by name like any args */
    char *bad = strdup(text);
    char *act = strstr(bad, "functional.silu");
    memcpy(act, "functional.gelu", 15);
    assert_int_equal(us_write_file(yaml, bad, strlen(bad)), 0);
    free(bad);
    pk = NULL;
    rc = mf_model_from_nemo_yaml(&m, &pk, &args, yaml, NULL, 1024, "w/.metadata");
    mf_pickle_free(pk);
    assert_int_equal(rc, MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "swiglu is off"));
    assert_non_null(strstr(mf_error(), "model.yaml"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),        cmocka_unit_test(test_keys),     cmocka_unit_test(test_hf_llama),
        cmocka_unit_test(test_hf_qwen_moe),
        cmocka_unit_test(test_hf_long_dense_list),   cmocka_unit_test(test_hf_refused), cmocka_unit_test(test_nemo_yaml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
