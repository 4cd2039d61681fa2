/* HF config -> Megatron args for DeepSeek-V2/V3, GLM-4.5 and gpt-oss: the inverse of their
 * config writers in families.c (cfg_deepseek, rope_deepseek, cfg_glm4_moe, cfg_gptoss,
 * rope_gptoss). A value those writers can never produce is refused naming the key, so the
 * view never rests on a guess. Absent keys that change no tensor shape take neutral values
 * (no scaling, no groups, no MTP). */
#include <string.h>
#include "hf_describe_more.h"
#include "mcorefs/error.h"

static int is(const char *s, const char *want) { return s && strcmp(s, want) == 0; }

/* DeepSeek / GLM routed experts: sizes, router, leading dense layers, MTP. */
static int routed_moe_args(const mf_hf *h, const char *fam, int64_t layers, pk_out *o)
{
    int glm = is(fam, "glm4_moe"), v3 = is(fam, "deepseek_v3");
    int64_t experts, topk, moe_ffn, shared, first_dense, freq = 1, groups, group_topk, mtp;
    int rc;
    if ((rc = mf_hf_need_int(h, "n_routed_experts", &experts)) || (rc = mf_hf_need_int(h, "num_experts_per_tok", &topk)) ||
        (rc = mf_hf_need_int(h, "moe_intermediate_size", &moe_ffn)) || (rc = mf_hf_need_int(h, "n_shared_experts", &shared)) ||
        (rc = mf_hf_need_int(h, "first_k_dense_replace", &first_dense)) ||
        (!glm && (rc = mf_hf_opt_int(h, "moe_layer_freq", 1, &freq))) || (rc = mf_hf_opt_int(h, "n_group", 1, &groups)) ||
        (rc = mf_hf_opt_int(h, "topk_group", 1, &group_topk)) || (rc = mf_hf_opt_int(h, "num_nextn_predict_layers", 0, &mtp)))
        return rc;
    if (freq <= 0)
        return mf_hf_refuse(h, "moe_layer_freq", "it must be positive");
    if (shared > 100000)   /* shared x moe_ffn must not overflow */
        return mf_hf_refuse(h, "n_shared_experts", "more shared experts than any model has");
    const char *score = glm ? "sigmoid" : mf_hf_str(h, "scoring_func") ? mf_hf_str(h, "scoring_func") : v3 ? "sigmoid" : "softmax";
    if (!is(score, "sigmoid") && !is(score, "softmax"))
        return mf_hf_refuse(h, "scoring_func", "Megatron's router scores are softmax or sigmoid");
    int sigmoid = is(score, "sigmoid");
    /* DeepSeek's e_score_correction_bias comes with topk_method noaux_tc; GLM always has it */
    const char *method = mf_hf_str(h, "topk_method") ? mf_hf_str(h, "topk_method") : v3 ? "noaux_tc" : "greedy";
    if (!glm && !is(method, "noaux_tc") && !is(method, "greedy") && !is(method, "group_limited_greedy"))
        return mf_hf_refuse(h, "topk_method", "known methods are greedy, group_limited_greedy and noaux_tc");
    int expert_bias = glm || is(method, "noaux_tc");
    /* pitfalls #2: Megatron's sigmoid router renormalises the top-k exactly when topk > 1 */
    const cJSON *norm = mf_hf_get(h, "norm_topk_prob");
    if (sigmoid && cJSON_IsBool(norm) && cJSON_IsTrue(norm) != (topk > 1))
        return mf_hf_refuse(h, "norm_topk_prob", "Megatron's sigmoid router renormalises the top-k weights exactly when top-k > 1");
    int pre_softmax = !sigmoid && !mf_hf_bool(h, "norm_topk_prob", 0);
    mf_pk_str(o, "num_experts"), mf_pk_int(o, experts);
    mf_pk_str(o, "moe_router_topk"), mf_pk_int(o, topk);
    mf_pk_str(o, "moe_ffn_hidden_size"), mf_pk_int(o, moe_ffn);
    mf_pk_str(o, "moe_shared_expert_intermediate_size"), mf_pk_int(o, shared * moe_ffn);
    mf_pk_str(o, "moe_router_score_function"), mf_pk_str(o, score);
    mf_pk_str(o, "moe_router_enable_expert_bias"), mf_pk_bool(o, expert_bias);
    mf_pk_str(o, "moe_router_pre_softmax"), mf_pk_bool(o, pre_softmax);
    mf_pk_str(o, "moe_router_topk_scaling_factor"), mf_pk_float(o, mf_hf_float(h, "routed_scaling_factor", 1.0));
    if (groups > 1) {
        mf_pk_str(o, "moe_router_num_groups"), mf_pk_int(o, groups);
        mf_pk_str(o, "moe_router_group_topk"), mf_pk_int(o, group_topk);
    }
    mf_pk_str(o, "moe_aux_loss_coeff"), mf_pk_float(o, mf_hf_float(h, glm ? "router_aux_loss_coef" : "aux_loss_alpha", 0.0));
    if (mtp > 0)
        mf_pk_str(o, "mtp_num_layers"), mf_pk_int(o, mtp);
    /* HF: a layer is MoE from first_k_dense_replace on, every moe_layer_freq-th (DeepSeek) */
    mf_pk_str(o, "moe_layer_freq");
    MF_PK_LIST_BEGIN(o);
    for (int64_t l = 0; l < layers; l++)
        mf_pk_int(o, l >= first_dense && l % freq == 0);
    MF_PK_LIST_END(o);
    return MF_OK;
}

/* DeepSeek rope: none, or YaRN whose fixed fields rope_deepseek writes back */
static int deepseek_rope_args(const mf_hf *h, pk_out *o)
{
    const char *type = mf_hf_rope_type(h);
    const cJSON *rs = mf_hf_get(h, "rope_scaling");
    if (!*type) {
        mf_pk_str(o, "rope_type"), mf_pk_str(o, "rope");
        return MF_OK;
    }
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (!is(type, "yarn") || !cJSON_IsNumber(factor))
        return mf_hf_refuse(h, "rope_scaling", "DeepSeek's Megatron rope is plain or YaRN with a factor");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(rs, "mscale"), *msa = cJSON_GetObjectItemCaseSensitive(rs, "mscale_all_dim");
    mf_pk_str(o, "rope_type"), mf_pk_str(o, "yarn");
    mf_pk_str(o, "rotary_scaling_factor"), mf_pk_float(o, factor->valuedouble);
    mf_pk_str(o, "mscale"), mf_pk_float(o, cJSON_IsNumber(ms) ? ms->valuedouble : 1.0);
    mf_pk_str(o, "mscale_all_dim"), mf_pk_float(o, cJSON_IsNumber(msa) ? msa->valuedouble : 0.0);
    return MF_OK;
}

int mf_hf_deepseek_args(const mf_hf *h, const char *family, int64_t layers, pk_out *o)
{
    int64_t q_lora = 0, kv_lora, nope, rope, v_dim;
    int rc;
    /* q_lora_rank null = no q compression (DeepSeek-V2-Lite); absent is not a choice */
    if (!cJSON_GetObjectItemCaseSensitive(h->root, "q_lora_rank"))
        return mf_fail(MF_ERR_MISSING, "%s: hf_config lacks 'q_lora_rank' (a number, or null for no q compression)", h->path);
    if ((rc = mf_hf_opt_int(h, "q_lora_rank", 0, &q_lora)) || (rc = mf_hf_need_int(h, "kv_lora_rank", &kv_lora)) ||
        (rc = mf_hf_need_int(h, "qk_nope_head_dim", &nope)) || (rc = mf_hf_need_int(h, "qk_rope_head_dim", &rope)) ||
        (rc = mf_hf_need_int(h, "v_head_dim", &v_dim)))
        return rc;
    if (mf_hf_bool(h, "attention_bias", 0))
        return mf_hf_refuse(h, "attention_bias", "Megatron's multi-latent attention has no projection biases");
    /* the view copies q/k rope dims as stored: that is HF's interleaved layout (hf-mapping §4) */
    if (!mf_hf_bool(h, "rope_interleave", 1))
        return mf_hf_refuse(h, "rope_interleave", "the view shows the rope dims in Megatron's interleaved order");
    mf_pk_str(o, "multi_latent_attention"), mf_pk_bool(o, 1);
    mf_pk_str(o, "q_lora_rank");
    if (q_lora > 0)
        mf_pk_int(o, q_lora);
    else
        MF_PK_NONE(o);
    mf_pk_str(o, "kv_lora_rank"), mf_pk_int(o, kv_lora);
    mf_pk_str(o, "qk_head_dim"), mf_pk_int(o, nope);
    mf_pk_str(o, "qk_pos_emb_head_dim"), mf_pk_int(o, rope);
    mf_pk_str(o, "v_head_dim"), mf_pk_int(o, v_dim);
    mf_pk_str(o, "qk_layernorm"), mf_pk_bool(o, 1);
    mf_pk_str(o, "add_qkv_bias"), mf_pk_bool(o, 0);
    mf_pk_str(o, "position_embedding_type"), mf_pk_str(o, "rope");
    mf_pk_str(o, "swiglu"), mf_pk_bool(o, 1);
    if ((rc = deepseek_rope_args(h, o)))
        return rc;
    return routed_moe_args(h, family, layers, o);
}

int mf_hf_glm4_moe_args(const mf_hf *h, int64_t layers, pk_out *o)
{
    mf_pk_str(o, "add_qkv_bias"), mf_pk_bool(o, mf_hf_bool(h, "attention_bias", 0));
    mf_pk_str(o, "qk_layernorm"), mf_pk_bool(o, mf_hf_bool(h, "use_qk_norm", 0));
    mf_pk_str(o, "rotary_percent"), mf_pk_float(o, mf_hf_float(h, "partial_rotary_factor", 0.5));
    mf_pk_str(o, "position_embedding_type"), mf_pk_str(o, "rope");
    mf_pk_str(o, "swiglu"), mf_pk_bool(o, 1);
    int rc = mf_hf_rope_args(h, o);
    return rc ? rc : routed_moe_args(h, "glm4_moe", layers, o);
}

/* gpt-oss YaRN (rope_gptoss's inverse); none: plain rope */
static int gptoss_rope_args(const mf_hf *h, pk_out *o)
{
    const char *type = mf_hf_rope_type(h);
    const cJSON *rs = mf_hf_get(h, "rope_scaling");
    if (!*type) {
        mf_pk_str(o, "position_embedding_type"), mf_pk_str(o, "rope");
        return MF_OK;
    }
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    const cJSON *orig = cJSON_GetObjectItemCaseSensitive(rs, "original_max_position_embeddings");
    const cJSON *fast = cJSON_GetObjectItemCaseSensitive(rs, "beta_fast"), *slow = cJSON_GetObjectItemCaseSensitive(rs, "beta_slow");
    const cJSON *truncate = cJSON_GetObjectItemCaseSensitive(rs, "truncate");
    /* bounded: config.json's max_position_embeddings is factor x original, as a whole number */
    if (!is(type, "yarn") || !cJSON_IsNumber(factor) || !(factor->valuedouble >= 1.0 && factor->valuedouble <= 1048576.0) ||
        !cJSON_IsNumber(orig) || orig->valuedouble < 1 || orig->valuedouble > 1099511627776.0 ||
        orig->valuedouble != (double)(int64_t)orig->valuedouble)
        return mf_hf_refuse(h, "rope_scaling", "gpt-oss's Megatron rope is plain or YaRN with a factor in [1, 2^20] and a "
                            "whole original_max_position_embeddings");
    mf_pk_str(o, "position_embedding_type"), mf_pk_str(o, "yarn");
    mf_pk_str(o, "rotary_scaling_factor"), mf_pk_float(o, factor->valuedouble);
    mf_pk_str(o, "yarn_original_max_position_embeddings"), mf_pk_int(o, (int64_t)orig->valuedouble);
    mf_pk_str(o, "yarn_beta_fast"), mf_pk_float(o, cJSON_IsNumber(fast) ? fast->valuedouble : 32.0);
    mf_pk_str(o, "yarn_beta_slow"), mf_pk_float(o, cJSON_IsNumber(slow) ? slow->valuedouble : 1.0);
    mf_pk_str(o, "yarn_correction_range_round_to_int"), mf_pk_bool(o, !cJSON_IsBool(truncate) || cJSON_IsTrue(truncate));
    return MF_OK;
}

int mf_hf_gptoss_args(const mf_hf *h, int64_t layers, pk_out *o)
{
    int64_t experts, topk, ffn, window;
    int rc;
    if ((rc = mf_hf_need_int(h, "num_local_experts", &experts)) || (rc = mf_hf_need_int(h, "num_experts_per_tok", &topk)) ||
        (rc = mf_hf_need_int(h, "intermediate_size", &ffn)) || (rc = mf_hf_need_int(h, "sliding_window", &window)))
        return rc;
    if (!mf_hf_bool(h, "attention_bias", 1))
        return mf_hf_refuse(h, "attention_bias", "Megatron's gpt-oss (add_bias_linear) has biases on q/k/v/o");
    if (window < 2)   /* HF counts the token itself: Megatron's (window - 1, 0) must be at least 1 */
        return mf_hf_refuse(h, "sliding_window", "gpt-oss's window layers attend at least one earlier token");
    const cJSON *types = mf_hf_get(h, "layer_types");
    if (types && (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != layers))
        return mf_hf_refuse(h, "layer_types", "it must list one type per layer (num_hidden_layers)");
    mf_pk_str(o, "swiglu"), mf_pk_bool(o, 0);
    mf_pk_str(o, "quick_geglu"), mf_pk_bool(o, 1);
    mf_pk_str(o, "glu_linear_offset"), mf_pk_float(o, 1.0);
    mf_pk_str(o, "activation_func_clamp_value"), mf_pk_float(o, mf_hf_float(h, "swiglu_limit", 7.0));
    mf_pk_str(o, "add_bias_linear"), mf_pk_bool(o, 1);
    mf_pk_str(o, "add_qkv_bias"), mf_pk_bool(o, 1);
    mf_pk_str(o, "qk_layernorm"), mf_pk_bool(o, 0);
    mf_pk_str(o, "softmax_type"), mf_pk_str(o, "learnable");
    mf_pk_str(o, "window_size");
    mf_pk_int(o, window - 1), mf_pk_int(o, 0), MF_PK_TUPLE2(o);
    /* Megatron's window_attn_skip_freq as a list: 1 = a window layer */
    mf_pk_str(o, "window_attn_skip_freq");
    MF_PK_LIST_BEGIN(o);
    const cJSON *t = types ? types->child : NULL;
    for (int64_t l = 0; l < layers; l++, t = t ? t->next : NULL) {
        const char *type = cJSON_IsString(t) ? t->valuestring : NULL;
        if (types && !is(type, "sliding_attention") && !is(type, "full_attention"))
            return mf_hf_refuse(h, "layer_types", "gpt-oss layers are sliding_attention or full_attention");
        mf_pk_int(o, types ? is(type, "sliding_attention") : (l + 1) % 2 != 0);   /* HF's default: alternate */
    }
    MF_PK_LIST_END(o);
    mf_pk_str(o, "num_experts"), mf_pk_int(o, experts);
    mf_pk_str(o, "moe_router_topk"), mf_pk_int(o, topk);
    mf_pk_str(o, "moe_ffn_hidden_size"), mf_pk_int(o, ffn);
    mf_pk_str(o, "moe_router_pre_softmax"), mf_pk_bool(o, 0);   /* HF: softmax over the top-k logits */
    mf_pk_str(o, "moe_aux_loss_coeff"), mf_pk_float(o, mf_hf_float(h, "router_aux_loss_coef", 0.0));
    return gptoss_rope_args(h, o);
}
