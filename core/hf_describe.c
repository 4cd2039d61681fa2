/* HF config.json -> the Megatron args of the same model (see hf_describe.h). The args are
 * written as a small pickle (a dict of plain values) and read back by the safe pickle VM, so
 * the description, family choice and checks are exactly those of a checkpoint with args
 * (args_pickle.h). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "args_pickle.h"
#include "hf_config_read.h"
#include "hf_describe.h"
#include "hf_describe_more.h"
#include "mcorefs/error.h"
#include "mcorefs/recipe.h"
#include "small_file.h"

static const char *const described[] = { "llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe",
                                         "deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss", NULL };

const char *mf_hf_describe_families(void)
{
    return "llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3, glm4_moe, gpt_oss";
}

static const mf_family *pick_family(const mf_hf *h, const char *arch, int *rc)
{
    const cJSON *archs = mf_hf_get(h, "architectures");
    const char *name = arch && *arch ? arch : NULL;
    if (!name && cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
        name = cJSON_GetArrayItem(archs, 0)->valuestring;
    if (!name)
        name = mf_hf_str(h, "model_type");
    if (!name) {
        *rc = mf_fail(MF_ERR_MISSING, "%s: hf_config has neither 'architectures' nor 'model_type'", h->path);
        return NULL;
    }
    const mf_family *f = mf_family_find(name);
    if (!f && !arch && mf_hf_str(h, "model_type"))
        f = mf_family_find(mf_hf_str(h, "model_type"));
    for (int i = 0; f && described[i]; i++)
        if (strcmp(f->name, described[i]) == 0)
            return f;
    if (f && strcmp(f->name, "qwen3_next") == 0) {
        /* the view shifts norm weights by 1 or not depending on how Megatron stored them */
        *rc = mf_fail(MF_ERR_UNSUPPORTED, "%s: describing '%s' from an HF config is not supported: whether Megatron stored "
                      "its norms zero-centred (layernorm_zero_centered_gamma) is not in an HF config, and the shown norm "
                      "weights depend on it; mount a save that carries Megatron's args", h->path, name);
        return NULL;
    }
    *rc = mf_fail(MF_ERR_UNSUPPORTED, "%s: describing '%s' from an HF config is not supported (supported: %s); "
                  "mount a save that carries Megatron's args", h->path, name, mf_hf_describe_families());
    return NULL;
}

/* HF's rope_scaling -> Megatron's rope args (llama3 and linear are what the families write);
 * hf_describe_more.h. */
int mf_hf_rope_args(const mf_hf *h, pk_out *o)
{
    const cJSON *rs = mf_hf_get(h, "rope_scaling");
    if (!rs)
        return MF_OK;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t))
        t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    const char *type = cJSON_IsString(t) ? t->valuestring : "?";
    if (!cJSON_IsNumber(factor) || (strcmp(type, "llama3") != 0 && strcmp(type, "linear") != 0))
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: hf_config rope_scaling of type '%s' cannot be described as Megatron args", h->path, type);
    if (strcmp(type, "llama3") == 0) {
        mf_pk_str(o, "use_rope_scaling"), mf_pk_bool(o, 1);
        mf_pk_str(o, "rope_scaling_factor"), mf_pk_float(o, factor->valuedouble);
    } else {
        mf_pk_str(o, "rotary_seq_len_interpolation_factor"), mf_pk_float(o, factor->valuedouble);
    }
    return MF_OK;
}

/* The MoE args; moe_layer_freq from Qwen's decoder_sparse_step and mlp_only_layers. */
static int moe_args(const mf_hf *h, const char *family, int64_t layers, pk_out *o)
{
    int mixtral = strcmp(family, "mixtral") == 0, qwen2 = strcmp(family, "qwen2_moe") == 0;
    int64_t experts, topk, moe_ffn, step = 1, shared = 0;
    int rc;
    if ((rc = mf_hf_need_int(h, mixtral ? "num_local_experts" : "num_experts", &experts)) || (rc = mf_hf_need_int(h, "num_experts_per_tok", &topk)) ||
        (rc = mf_hf_need_int(h, mixtral ? "intermediate_size" : "moe_intermediate_size", &moe_ffn)) ||
        (rc = mf_hf_opt_int(h, "decoder_sparse_step", 1, &step)) || (qwen2 && (rc = mf_hf_need_int(h, "shared_expert_intermediate_size", &shared))))
        return rc;
    mf_pk_str(o, "num_experts"), mf_pk_int(o, experts);
    mf_pk_str(o, "moe_router_topk"), mf_pk_int(o, topk);
    mf_pk_str(o, "moe_ffn_hidden_size"), mf_pk_int(o, moe_ffn);
    mf_pk_str(o, "moe_aux_loss_coeff"), mf_pk_float(o, mf_hf_float(h, "router_aux_loss_coef", 0.0));
    /* Qwen: norm_topk_prob = top-k after softmax renormalised, Megatron's default order */
    mf_pk_str(o, "moe_router_pre_softmax"), mf_pk_bool(o, !mixtral && !mf_hf_bool(h, "norm_topk_prob", 0));
    if (qwen2) {
        mf_pk_str(o, "moe_shared_expert_intermediate_size"), mf_pk_int(o, shared);
        mf_pk_str(o, "moe_shared_expert_gate"), mf_pk_bool(o, 1);
    }
    const cJSON *dense = mf_hf_get(h, "mlp_only_layers");
    if (step <= 0)
        return mf_fail(MF_ERR_FORMAT, "%s: hf_config decoder_sparse_step must be positive", h->path);
    /* one pass over the list into a per-layer mark: layers x list entries would let a crafted
     * config hold the mount for hours */
    unsigned char *is_dense = calloc(layers > 0 ? (size_t)layers : 1, 1);
    if (!is_dense)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", h->path);
    for (const cJSON *d = cJSON_IsArray(dense) ? dense->child : NULL; d; d = d->next)
        if (cJSON_IsNumber(d) && d->valuedouble >= 0 && d->valuedouble < (double)layers &&
            d->valuedouble == (double)(int64_t)d->valuedouble)
            is_dense[(int64_t)d->valuedouble] = 1;
    mf_pk_str(o, "moe_layer_freq");
    MF_PK_LIST_BEGIN(o);
    for (int64_t l = 0; l < layers; l++)
        mf_pk_int(o, (l + 1) % step == 0 && !is_dense[l]);
    MF_PK_LIST_END(o);
    free(is_dense);
    return MF_OK;
}

/* Llama, Mistral, Qwen2/3 (MoE) and Mixtral: GQA with fused QKV, plain rope. */
static int gqa_family_args(const mf_hf *h, const char *fam, int64_t layers, pk_out *o)
{
    int64_t window;
    int rc = mf_hf_opt_int(h, "sliding_window", 0, &window);
    if (rc)
        return rc;
    int qwen2 = strncmp(fam, "qwen2", 5) == 0, qwen3 = strncmp(fam, "qwen3", 5) == 0;
    mf_pk_str(o, "add_qkv_bias"), mf_pk_bool(o, qwen2 || mf_hf_bool(h, "attention_bias", 0) || mf_hf_bool(h, "qkv_bias", 0));
    mf_pk_str(o, "qk_layernorm"), mf_pk_bool(o, qwen3);
    mf_pk_str(o, "position_embedding_type"), mf_pk_str(o, "rope");
    mf_pk_str(o, "swiglu"), mf_pk_bool(o, 1);
    if (strcmp(fam, "mistral") == 0 && window > 0) {   /* HF sliding_window = Megatron (left, 0) + 1 */
        mf_pk_str(o, "window_size");
        mf_pk_int(o, window - 1), mf_pk_int(o, 0), MF_PK_TUPLE2(o);
    }
    rc = mf_hf_rope_args(h, o);
    if (rc == MF_OK && (strcmp(fam, "mixtral") == 0 || strcmp(fam, "qwen2_moe") == 0 || strcmp(fam, "qwen3_moe") == 0))
        rc = moe_args(h, fam, layers, o);
    return rc;
}

/* The args pickle for the HF config; MF_OK or an error (message set). */
static int write_args(const mf_hf *h, const mf_family *f, int64_t embed_rows, pk_out *o)
{
    const char *fam = f->name;
    int mla = strncmp(fam, "deepseek", 8) == 0;
    int64_t layers, hidden, heads, vocab, ffn, groups, head_dim, max_pos;
    int rc;
    if ((rc = mf_hf_need_int(h, "num_hidden_layers", &layers)) || (rc = mf_hf_need_int(h, "hidden_size", &hidden)) ||
        (rc = mf_hf_need_int(h, "num_attention_heads", &heads)) || (rc = mf_hf_need_int(h, "vocab_size", &vocab)) ||
        (rc = mf_hf_need_int(h, "intermediate_size", &ffn)) || (rc = mf_hf_opt_int(h, "num_key_value_heads", heads, &groups)) ||
        (rc = mf_hf_opt_int(h, "max_position_embeddings", 0, &max_pos)))
        return rc;
    /* DeepSeek's HF head_dim is qk_rope_head_dim; MLA reads its own dims (Megatron ignores
     * kv_channels there). GLM-4.5 and gpt-oss size heads by head_dim, not hidden / heads. */
    if (mla)
        head_dim = heads ? hidden / heads : 0;
    else if ((rc = strcmp(fam, "glm4_moe") == 0 || strcmp(fam, "gpt_oss") == 0 ? mf_hf_need_int(h, "head_dim", &head_dim)
                                                                               : mf_hf_opt_int(h, "head_dim", heads ? hidden / heads : 0, &head_dim)))
        return rc;
    if (layers > 100000)   /* model.c refuses it too; bound the per-layer lists written here */
        return mf_fail(MF_ERR_INCONSISTENT, "%s: hf_config num_hidden_layers=%lld is impossible", h->path, (long long)layers);
    const char *act = mf_hf_str(h, "hidden_act");
    if (act && strcmp(act, "silu") != 0)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: hf_config hidden_act '%s': %s uses silu", h->path, act, f->architecture);
    const char *dt = mf_hf_str(h, "torch_dtype") ? mf_hf_str(h, "torch_dtype") : mf_hf_str(h, "dtype");
    MF_PK_DICT_BEGIN(o);
    mf_pk_str(o, "num_layers"), mf_pk_int(o, layers);
    mf_pk_str(o, "hidden_size"), mf_pk_int(o, hidden);
    mf_pk_str(o, "num_attention_heads"), mf_pk_int(o, heads);
    mf_pk_str(o, "group_query_attention"), mf_pk_bool(o, 1);
    mf_pk_str(o, "num_query_groups"), mf_pk_int(o, groups);
    mf_pk_str(o, "kv_channels"), mf_pk_int(o, head_dim);
    mf_pk_str(o, "ffn_hidden_size"), mf_pk_int(o, ffn);
    mf_pk_str(o, "padded_vocab_size"), mf_pk_int(o, embed_rows >= vocab ? embed_rows : vocab);
    mf_pk_str(o, "vocab_size"), mf_pk_int(o, vocab);
    mf_pk_str(o, "max_position_embeddings"), mf_pk_int(o, max_pos);
    mf_pk_str(o, "norm_epsilon"), mf_pk_float(o, mf_hf_float(h, "rms_norm_eps", 1e-6));
    mf_pk_str(o, "rotary_base"), mf_pk_float(o, mf_hf_float(h, "rope_theta", 10000.0));
    mf_pk_str(o, "init_method_std"), mf_pk_float(o, mf_hf_float(h, "initializer_range", 0.02));
    mf_pk_str(o, "attention_dropout"), mf_pk_float(o, mf_hf_float(h, "attention_dropout", 0.0));
    mf_pk_str(o, "untie_embeddings_and_output_weights"), mf_pk_bool(o, !mf_hf_bool(h, "tie_word_embeddings", 0));
    mf_pk_str(o, "normalization"), mf_pk_str(o, "RMSNorm");
    mf_pk_str(o, "tensor_model_parallel_size"), mf_pk_int(o, 1);
    mf_pk_str(o, "bf16"), mf_pk_bool(o, dt && strcmp(dt, "bfloat16") == 0);
    mf_pk_str(o, "fp16"), mf_pk_bool(o, dt && strcmp(dt, "float16") == 0);
    if (mla)
        rc = mf_hf_deepseek_args(h, fam, layers, o);
    else if (strcmp(fam, "glm4_moe") == 0)
        rc = mf_hf_glm4_moe_args(h, layers, o);
    else if (strcmp(fam, "gpt_oss") == 0)
        rc = mf_hf_gptoss_args(h, layers, o);
    else
        rc = gqa_family_args(h, fam, layers, o);
    MF_PK_DICT_END(o);
    if (rc == MF_OK && o->oom)
        rc = mf_fail(MF_ERR_NOMEM, "out of memory (hf_config)");
    return rc;
}

int mf_model_from_hf_config(mf_model *m, mf_pickle **pk, const mf_pv **args, const char *path, const char *arch,
                            int64_t embed_rows, const char *src)
{
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    memset(m, 0, sizeof *m);
    *args = NULL;
    int rc = mf_small_file_load(AT_FDCWD, path, path, &text, &len, &st);
    if (rc)
        return rc;
    cJSON *root = strlen(text) == len ? cJSON_Parse(text) : NULL;
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mf_fail(MF_ERR_FORMAT, "%s: hf_config must be a JSON object", path);
    }
    mf_hf h = { root, path };
    pk_out o = { 0 };
    const mf_family *f = pick_family(&h, arch, &rc);
    if (f)
        rc = write_args(&h, f, embed_rows, &o);
    cJSON_Delete(root);
    if (rc != MF_OK) {
        free(o.b);
        return rc;
    }
    return mf_model_from_args_pickle(m, pk, args, &o, path, "hf_config ", f->name, src);
}
