/* All model knowledge: per-family rule tables (Megatron name -> HF name + split) and the
 * family-specific config.json fields. Adding a family = adding tables here. */
#include <pthread.h>
#include <string.h>
#include "families_qwen3next.h"
#include "json_util.h"
#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/recipe.h"

#define DL "decoder.layers.{L}."
#define HL "model.layers.{L}."

const mf_rule mf_rules_top[] = {
    { "model.embed_tokens.weight", { "embedding.word_embeddings.weight" }, MF_SPLIT_VOCAB, MF_WHEN_ALWAYS, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { "model.norm.weight", { "decoder.final_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { "lm_head.weight", { "output_layer.weight" }, MF_SPLIT_VOCAB, MF_WHEN_UNTIED, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* Grouped-query attention with fused QKV (Llama, Mistral, Qwen2/3, Mixtral, Qwen-MoE). */
static const mf_rule gqa_attn[] = {
    { HL "input_layernorm.weight", { DL "self_attention.linear_qkv.layer_norm_weight", DL "input_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.q_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_Q, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.k_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_K, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.v_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_V, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.q_proj.bias", { DL "self_attention.linear_qkv.bias" }, MF_SPLIT_QKV_Q, MF_WHEN_QKV_BIAS, MF_D_QKV, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.k_proj.bias", { DL "self_attention.linear_qkv.bias" }, MF_SPLIT_QKV_K, MF_WHEN_QKV_BIAS, MF_D_QKV, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.v_proj.bias", { DL "self_attention.linear_qkv.bias" }, MF_SPLIT_QKV_V, MF_WHEN_QKV_BIAS, MF_D_QKV, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.q_norm.weight", { DL "self_attention.q_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_QK_NORM, MF_D_HEAD_DIM, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.k_norm.weight", { DL "self_attention.k_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_QK_NORM, MF_D_HEAD_DIM, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.o_proj.weight", { DL "self_attention.linear_proj.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_ATTN_OUT, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* Multi-latent attention (DeepSeek-V2/V3, Moonlight). No RoPE permutation (hf-mapping §4). */
static const mf_rule mla_attn[] = {
    { HL "input_layernorm.weight", { DL "input_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.q_a_proj.weight", { DL "self_attention.linear_q_down_proj.weight" }, MF_SPLIT_AUTO0, MF_WHEN_Q_LORA, MF_D_Q_LORA, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.q_a_layernorm.weight", { DL "self_attention.linear_q_up_proj.layer_norm_weight", DL "self_attention.q_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_Q_LORA, MF_D_Q_LORA, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.q_b_proj.weight", { DL "self_attention.linear_q_up_proj.weight" }, MF_SPLIT_DIM0, MF_WHEN_Q_LORA, MF_D_MLA_Q, MF_D_Q_LORA, MF_DTYPE_SHOWN },
    { HL "self_attn.q_proj.weight", { DL "self_attention.linear_q_proj.weight" }, MF_SPLIT_DIM0, MF_WHEN_NO_Q_LORA, MF_D_MLA_Q, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.kv_a_proj_with_mqa.weight", { DL "self_attention.linear_kv_down_proj.weight" }, MF_SPLIT_AUTO0, MF_WHEN_ALWAYS, MF_D_KV_A, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.kv_a_layernorm.weight", { DL "self_attention.linear_kv_up_proj.layer_norm_weight", DL "self_attention.kv_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_KV_LORA, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.kv_b_proj.weight", { DL "self_attention.linear_kv_up_proj.weight" }, MF_SPLIT_DIM0, MF_WHEN_ALWAYS, MF_D_MLA_KV, MF_D_KV_LORA, MF_DTYPE_SHOWN },
    { HL "self_attn.o_proj.weight", { DL "self_attention.linear_proj.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_ATTN_OUT, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

static const mf_rule dense_mlp[] = {
    { HL "post_attention_layernorm.weight", { DL "mlp.linear_fc1.layer_norm_weight", DL "pre_mlp_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "mlp.gate_proj.weight", { DL "mlp.linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_ALWAYS, MF_D_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.up_proj.weight", { DL "mlp.linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_ALWAYS, MF_D_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.down_proj.weight", { DL "mlp.linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_FFN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* torch_dist renames a local-spec pre-MLP norm to the TE name, even on MoE layers */
#define PRE_MLP_NORM { HL "post_attention_layernorm.weight", { DL "pre_mlp_layernorm.weight", DL "mlp.linear_fc1.layer_norm_weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN }
#define XP DL "mlp.experts.{E}."

static const mf_rule mixtral_moe[] = {
    PRE_MLP_NORM,
    { HL "block_sparse_moe.gate.weight", { DL "mlp.router.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};
static const mf_rule mixtral_expert[] = {
    { HL "block_sparse_moe.experts.{E}.w1.weight", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "block_sparse_moe.experts.{E}.w2.weight", { XP "linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_MOE_FFN, MF_DTYPE_SHOWN },
    { HL "block_sparse_moe.experts.{E}.w3.weight", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* Qwen-MoE and DeepSeek name experts the same way. */
static const mf_rule hf_expert[] = {
    { HL "mlp.experts.{E}.gate_proj.weight", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.experts.{E}.up_proj.weight", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.experts.{E}.down_proj.weight", { XP "linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_MOE_FFN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

static const mf_rule qwen_moe[] = {
    PRE_MLP_NORM,
    { HL "mlp.gate.weight", { DL "mlp.router.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    /* Qwen2-MoE: one gated shared expert, singular name */
    { HL "mlp.shared_expert.gate_proj.weight", { DL "mlp.shared_experts.linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_SHARED, MF_D_SHARED_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert.up_proj.weight", { DL "mlp.shared_experts.linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_SHARED, MF_D_SHARED_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert.down_proj.weight", { DL "mlp.shared_experts.linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_SHARED, MF_D_HIDDEN, MF_D_SHARED_FFN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert_gate.weight", { DL "mlp.shared_experts.gate_weight" }, MF_SPLIT_REPL, MF_WHEN_SHARED_GATE, MF_D_ONE, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

static const mf_rule deepseek_moe[] = {
    PRE_MLP_NORM,
    { HL "mlp.gate.weight", { DL "mlp.router.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.gate.e_score_correction_bias", { DL "mlp.router.expert_bias" }, MF_SPLIT_REPL, MF_WHEN_EXPERT_BIAS, MF_D_EXPERTS, MF_D_NONE, MF_DTYPE_STORED },
    { HL "mlp.shared_experts.gate_proj.weight", { DL "mlp.shared_experts.linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_SHARED, MF_D_SHARED_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_experts.up_proj.weight", { DL "mlp.shared_experts.linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_SHARED, MF_D_SHARED_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_experts.down_proj.weight", { DL "mlp.shared_experts.linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_SHARED, MF_D_HIDDEN, MF_D_SHARED_FFN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* DeepSeek MTP layer extras: mtp.layers.K.* is indexed here by the HF layer N+K. */
static const mf_rule deepseek_mtp[] = {
    { HL "enorm.weight", { "mtp.layers.{L}.enorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "hnorm.weight", { "mtp.layers.{L}.hnorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "eh_proj.weight", { "mtp.layers.{L}.eh_proj.weight" }, MF_SPLIT_DIM0, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_HIDDEN_X2, MF_DTYPE_SHOWN },
    { HL "shared_head.norm.weight", { "mtp.layers.{L}.final_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    /* copies of the shared embedding and head, as DeepSeek's own release layout has them */
    { HL "embed_tokens.weight", { "embedding.word_embeddings.weight" }, MF_SPLIT_VOCAB, MF_WHEN_MTP_COPIES, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "shared_head.head.weight", { "output_layer.weight" }, MF_SPLIT_VOCAB, MF_WHEN_MTP_COPIES_UNTIED, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "shared_head.head.weight", { "embedding.word_embeddings.weight" }, MF_SPLIT_VOCAB, MF_WHEN_MTP_COPIES_TIED, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* gpt-oss: GQA with biases on q/k/v/o and a learnable sink per head (Megatron's softmax_offset,
 * TP-split over heads); router with bias; experts stacked as HF stores them (pitfalls.md 17):
 * gate_up_proj [E, H, 2F] with gate/up columns interleaved, down_proj [E, F, H], biases [E, N]. */
static const mf_rule gptoss_attn[] = {
    { HL "input_layernorm.weight", { DL "self_attention.linear_qkv.layer_norm_weight", DL "input_layernorm.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.q_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_Q, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.k_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_K, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.v_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_V, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.q_proj.bias", { DL "self_attention.linear_qkv.bias" }, MF_SPLIT_QKV_Q, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.k_proj.bias", { DL "self_attention.linear_qkv.bias" }, MF_SPLIT_QKV_K, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.v_proj.bias", { DL "self_attention.linear_qkv.bias" }, MF_SPLIT_QKV_V, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.o_proj.weight", { DL "self_attention.linear_proj.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_ATTN_OUT, MF_DTYPE_SHOWN },
    { HL "self_attn.o_proj.bias", { DL "self_attention.linear_proj.bias" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.sinks", { DL "self_attention.core_attention.softmax_offset" }, MF_SPLIT_DIM0, MF_WHEN_ALWAYS, MF_D_HEADS, MF_D_NONE, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

static const mf_rule gptoss_moe[] = {
    PRE_MLP_NORM,
    { HL "mlp.router.weight", { DL "mlp.router.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.router.bias", { DL "mlp.router.bias" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_NONE, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* no {E}: each rule stacks the layer's experts into one tensor */
static const mf_rule gptoss_expert[] = {
    { HL "mlp.experts.gate_up_proj", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_INTERLEAVE_T, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.experts.gate_up_proj_bias", { XP "linear_fc1.bias" }, MF_SPLIT_GLU_INTERLEAVE_T, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "mlp.experts.down_proj", { XP "linear_fc2.weight" }, MF_SPLIT_DIM1_T, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_MOE_FFN, MF_DTYPE_SHOWN },
    { HL "mlp.experts.down_proj_bias", { XP "linear_fc2.bias" }, MF_SPLIT_DIM1_T, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { NULL, { NULL }, 0, 0, 0, 0, 0 },
};

/* ---- config.json fields beyond the common ones (hf-mapping.md §7, pitfalls.md) ---- */

static void cfg_llama(const mf_model *m, cJSON *c)
{
    mf_json_int(c, "head_dim", m->head_dim);
    mf_json_bool(c, "attention_bias", m->qkv_bias);
    mf_json_bool(c, "mlp_bias", m->add_bias_linear);
}

static void cfg_mistral(const mf_model *m, cJSON *c)
{
    cfg_llama(m, c);
    if (m->window > 0)   /* Megatron window (left, 0) = HF sliding_window - 1 */
        mf_json_int(c, "sliding_window", m->window + 1);
    else
        mf_json_null(c, "sliding_window");
}

static void cfg_qwen2(const mf_model *m, cJSON *c)
{
    mf_json_bool(c, "use_sliding_window", 0);
    mf_json_null(c, "sliding_window");
    mf_json_int(c, "max_window_layers", m->num_layers);
}

static void cfg_qwen3(const mf_model *m, cJSON *c)
{
    mf_json_int(c, "head_dim", m->head_dim);
    mf_json_bool(c, "attention_bias", m->qkv_bias);
    cfg_qwen2(m, c);
}

static void cfg_mixtral(const mf_model *m, cJSON *c)
{
    mf_json_int(c, "head_dim", m->head_dim);
    mf_json_int(c, "intermediate_size", m->moe_ffn);   /* per-expert FFN */
    mf_json_int(c, "num_local_experts", m->num_experts);
    mf_json_int(c, "num_experts_per_tok", m->moe_topk);
    mf_json_float(c, "router_aux_loss_coef", m->moe_aux_coeff);
    mf_json_null(c, "sliding_window");
    mf_json_float(c, "router_jitter_noise", 0.0);
}

static void cfg_dense_layer_list(const mf_model *m, cJSON *c)
{
    cJSON *dense = cJSON_CreateArray();
    for (int64_t l = 0; l < m->num_layers; l++)
        if (!m->moe_layer[l])
            cJSON_AddItemToArray(dense, cJSON_CreateNumber((double)l));
    mf_json_set(c, "mlp_only_layers", dense);
    mf_json_int(c, "decoder_sparse_step", 1);
}

static void cfg_qwen_moe_common(const mf_model *m, cJSON *c)
{
    mf_json_int(c, "num_experts", m->num_experts);
    mf_json_int(c, "num_experts_per_tok", m->moe_topk);
    mf_json_int(c, "moe_intermediate_size", m->moe_ffn);
    mf_json_bool(c, "norm_topk_prob", !m->moe_pre_softmax);
    mf_json_float(c, "router_aux_loss_coef", m->moe_aux_coeff);
    cfg_dense_layer_list(m, c);
}

static void cfg_qwen2_moe(const mf_model *m, cJSON *c)
{
    cfg_qwen2(m, c);
    cfg_qwen_moe_common(m, c);
    mf_json_int(c, "shared_expert_intermediate_size", m->shared_ffn);
    mf_json_bool(c, "qkv_bias", m->qkv_bias);
}

static void cfg_qwen3_moe(const mf_model *m, cJSON *c)
{
    cfg_qwen3(m, c);
    cfg_qwen_moe_common(m, c);
}

static void cfg_deepseek(const mf_model *m, cJSON *c)
{
    int sigmoid = strcmp(m->score_function, "sigmoid") == 0;
    int64_t first_dense = 0;
    while (first_dense < m->num_layers && !m->moe_layer[first_dense])
        first_dense++;
    mf_json_int(c, "num_key_value_heads", m->heads);           /* pitfalls #4 */
    mf_json_int(c, "moe_intermediate_size", m->moe_ffn);
    mf_json_int(c, "n_routed_experts", m->num_experts);
    mf_json_int(c, "n_shared_experts", m->moe_ffn > 0 ? m->shared_ffn / m->moe_ffn : 0);
    mf_json_float(c, "routed_scaling_factor", m->moe_scaling_factor);
    mf_json_int(c, "kv_lora_rank", m->mla_dims.kv_lora_rank);
    if (m->mla_dims.q_lora_rank > 0)
        mf_json_int(c, "q_lora_rank", m->mla_dims.q_lora_rank);
    else
        mf_json_null(c, "q_lora_rank");
    mf_json_int(c, "qk_rope_head_dim", m->mla_dims.qk_pos_dim);
    mf_json_int(c, "qk_nope_head_dim", m->mla_dims.qk_head_dim);
    mf_json_int(c, "v_head_dim", m->mla_dims.v_head_dim);
    mf_json_int(c, "n_group", m->moe_num_groups > 0 ? m->moe_num_groups : 1);
    mf_json_int(c, "topk_group", m->moe_group_topk > 0 ? m->moe_group_topk : 1);
    mf_json_int(c, "num_experts_per_tok", m->moe_topk);
    mf_json_int(c, "first_k_dense_replace", first_dense);
    mf_json_int(c, "moe_layer_freq", 1);
    mf_json_bool(c, "rope_interleave", 1);
    /* pitfalls #2: sigmoid renormalises only with topk > 1; softmax unless pre-softmax */
    mf_json_bool(c, "norm_topk_prob", sigmoid ? m->moe_topk > 1 : !m->moe_pre_softmax);
    mf_json_str(c, "scoring_func", m->score_function);
    mf_json_str(c, "topk_method", m->moe_expert_bias ? "noaux_tc" : "greedy");
    mf_json_int(c, "num_nextn_predict_layers", m->mtp_shown);
    mf_json_float(c, "aux_loss_alpha", m->moe_aux_coeff);
}

/* DeepSeek: YaRN from its MLA rope args, else Megatron's own rope flags */
static void rope_deepseek(const mf_model *m, cJSON *c)
{
    if (strcmp(m->yarn.rope_type, "yarn") != 0 || m->yarn.factor <= 1.0) {
        mf_config_rope_megatron(m, c);
        return;
    }
    cJSON *rs = cJSON_CreateObject();
    mf_json_str(rs, "type", "yarn");
    mf_json_float(rs, "factor", m->yarn.factor);
    mf_json_int(rs, "original_max_position_embeddings", 4096);
    mf_json_float(rs, "beta_fast", 32.0);
    mf_json_float(rs, "beta_slow", 1.0);
    mf_json_float(rs, "mscale", m->yarn.mscale);
    mf_json_float(rs, "mscale_all_dim", m->yarn.mscale_all_dim);
    mf_json_set(c, "rope_scaling", rs);
}

/* GLM-4.5 / 4.6: Megatron-Bridge's GLM45Bridge; transformers' Glm4MoeConfig (v4.57). */
static void cfg_glm4_moe(const mf_model *m, cJSON *c)
{
    int64_t first_dense = 0;
    while (first_dense < m->num_layers && !m->moe_layer[first_dense])
        first_dense++;
    mf_json_int(c, "head_dim", m->head_dim);            /* kv_channels; not hidden / heads */
    mf_json_float(c, "partial_rotary_factor", m->rotary_percent);
    mf_json_bool(c, "attention_bias", m->qkv_bias);
    mf_json_bool(c, "use_qk_norm", m->qk_norm);
    mf_json_int(c, "moe_intermediate_size", m->moe_ffn);
    mf_json_int(c, "n_routed_experts", m->num_experts);
    mf_json_int(c, "n_shared_experts", m->moe_ffn > 0 ? m->shared_ffn / m->moe_ffn : 0);  /* whole: MF_FEAT_SHARED_PARTIAL */
    mf_json_int(c, "num_experts_per_tok", m->moe_topk);
    mf_json_float(c, "routed_scaling_factor", m->moe_scaling_factor);
    mf_json_int(c, "n_group", m->moe_num_groups > 0 ? m->moe_num_groups : 1);
    mf_json_int(c, "topk_group", m->moe_group_topk > 0 ? m->moe_group_topk : 1);
    mf_json_int(c, "first_k_dense_replace", first_dense);
    /* pitfalls #2: Megatron's sigmoid router renormalises the top-k only when topk > 1 */
    mf_json_bool(c, "norm_topk_prob", m->moe_topk > 1);
    mf_json_int(c, "num_nextn_predict_layers", m->mtp_shown);
}

/* gpt-oss (GptOssConfig): Megatron window (W, 0) attends W earlier tokens and itself, HF's
 * sliding_window counts itself: W + 1; layer_types from window_attn_skip_freq. */
static void cfg_gptoss(const mf_model *m, cJSON *c)
{
    mf_json_int(c, "head_dim", m->head_dim);
    mf_json_bool(c, "attention_bias", 1);
    mf_json_int(c, "intermediate_size", m->moe_ffn);   /* per-expert FFN */
    mf_json_int(c, "num_local_experts", m->num_experts);
    mf_json_int(c, "num_experts_per_tok", m->moe_topk);
    mf_json_float(c, "router_aux_loss_coef", m->moe_aux_coeff);
    mf_json_bool(c, "output_router_logits", 0);
    mf_json_float(c, "swiglu_limit", m->glu_clamp);
    mf_json_int(c, "sliding_window", m->window + 1);
    cJSON *types = cJSON_CreateArray();
    for (int64_t l = 0; l < m->num_layers; l++)
        cJSON_AddItemToArray(types, cJSON_CreateString(m->window_layer && m->window_layer[l] ? "sliding_attention" : "full_attention"));
    mf_json_set(c, "layer_types", types);
}

/* gpt-oss YaRN (Megatron position_embedding_type=yarn). transformers derives the YaRN factor
 * as max_position_embeddings / original_max_position_embeddings when the latter is given, so
 * max_position_embeddings is written as factor x original (131072 = 32 x 4096 in the release). */
static void rope_gptoss(const mf_model *m, cJSON *c)
{
    if (!m->position_yarn) {
        mf_config_rope_megatron(m, c);
        return;
    }
    cJSON *rs = cJSON_CreateObject();
    mf_json_str(rs, "rope_type", "yarn");
    mf_json_float(rs, "factor", m->yarn.factor);
    mf_json_float(rs, "beta_fast", m->yarn_beta_fast);
    mf_json_float(rs, "beta_slow", m->yarn_beta_slow);
    mf_json_bool(rs, "truncate", m->yarn_round);
    mf_json_int(rs, "original_max_position_embeddings", m->yarn_orig_max_pos);
    mf_json_set(c, "rope_scaling", rs);
    mf_json_int(c, "max_position_embeddings", (int64_t)(m->yarn.factor * (double)m->yarn_orig_max_pos + 0.5));
}

/* What each HF class always has (needs) and cannot express (forbids), beyond its tensors. */
#define GQA_NO (MF_FEAT_MLA | MF_FEAT_WINDOW | MF_FEAT_EXPERT_BIAS | MF_FEAT_SIGMOID)
#define DENSE_NO (MF_FEAT_MOE | MF_FEAT_MLA | MF_FEAT_WINDOW)
#define DS_NO (MF_FEAT_QKV_BIAS | MF_FEAT_WINDOW | MF_FEAT_SHARED_GATE | MF_FEAT_DENSE_AFTER_MOE | MF_FEAT_SHARED_PARTIAL)

/* Detection: what sets each family apart (the masks exclude each other). */
#define NOT_DENSE_GQA (MF_FEAT_MOE | MF_FEAT_MLA)
#define NOT_MOE_GQA (MF_FEAT_MLA | MF_FEAT_SINKS)

static const mf_family families[] = {
    { .name = "llama", .architecture = "LlamaForCausalLM", .model_type = "llama",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .config = cfg_llama,
      .needs = 0, .forbids = DENSE_NO | MF_FEAT_QK_NORM | MF_FEAT_QKV_BIAS,
      .detect_none = NOT_DENSE_GQA | MF_FEAT_QK_NORM | MF_FEAT_QKV_BIAS | MF_FEAT_WINDOW_SET,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "mistral", .architecture = "MistralForCausalLM", .model_type = "mistral",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .config = cfg_mistral,
      .needs = 0, .forbids = (DENSE_NO & ~MF_FEAT_WINDOW) | MF_FEAT_QK_NORM | MF_FEAT_QKV_BIAS,
      .detect_all = MF_FEAT_WINDOW_SET, .detect_none = NOT_DENSE_GQA | MF_FEAT_QK_NORM | MF_FEAT_QKV_BIAS,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "qwen2", .architecture = "Qwen2ForCausalLM", .model_type = "qwen2",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .config = cfg_qwen2,
      .needs = MF_FEAT_QKV_BIAS, .forbids = DENSE_NO | MF_FEAT_QK_NORM,
      .detect_all = MF_FEAT_QKV_BIAS, .detect_none = NOT_DENSE_GQA | MF_FEAT_QK_NORM,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "qwen3", .architecture = "Qwen3ForCausalLM", .model_type = "qwen3",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .config = cfg_qwen3,
      .needs = MF_FEAT_QK_NORM, .forbids = DENSE_NO | MF_FEAT_QKV_BIAS,
      .detect_all = MF_FEAT_QK_NORM, .detect_none = NOT_DENSE_GQA,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "mixtral", .architecture = "MixtralForCausalLM", .model_type = "mixtral",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .moe_mlp = mixtral_moe, .expert = mixtral_expert, .config = cfg_mixtral,
      .needs = MF_FEAT_MOE, .forbids = GQA_NO | MF_FEAT_QK_NORM | MF_FEAT_QKV_BIAS | MF_FEAT_SHARED | MF_FEAT_DENSE_LAYERS,
      .detect_all = MF_FEAT_MOE, .detect_none = NOT_MOE_GQA | MF_FEAT_SHARED | MF_FEAT_QK_NORM,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "qwen2_moe", .architecture = "Qwen2MoeForCausalLM", .model_type = "qwen2_moe",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .moe_mlp = qwen_moe, .expert = hf_expert, .config = cfg_qwen2_moe,
      .needs = MF_FEAT_MOE | MF_FEAT_QKV_BIAS | MF_FEAT_SHARED | MF_FEAT_SHARED_GATE, .forbids = GQA_NO | MF_FEAT_QK_NORM,
      .detect_all = MF_FEAT_MOE | MF_FEAT_SHARED | MF_FEAT_SHARED_GATE | MF_FEAT_QKV_BIAS, .detect_none = NOT_MOE_GQA,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "qwen3_moe", .architecture = "Qwen3MoeForCausalLM", .model_type = "qwen3_moe",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .moe_mlp = qwen_moe, .expert = hf_expert, .config = cfg_qwen3_moe,
      .needs = MF_FEAT_MOE | MF_FEAT_QK_NORM, .forbids = GQA_NO | MF_FEAT_QKV_BIAS | MF_FEAT_SHARED,
      .detect_all = MF_FEAT_MOE | MF_FEAT_QK_NORM, .detect_none = NOT_MOE_GQA | MF_FEAT_SHARED,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "deepseek_v2", .architecture = "DeepseekV2ForCausalLM", .model_type = "deepseek_v2",
      .attn = mla_attn, .dense_mlp = dense_mlp, .moe_mlp = deepseek_moe, .expert = hf_expert, .mtp = deepseek_mtp,
      .config = cfg_deepseek,
      .needs = MF_FEAT_MOE | MF_FEAT_MLA, .forbids = DS_NO | MF_FEAT_SIGMOID | MF_FEAT_EXPERT_BIAS,
      .detect_all = MF_FEAT_MOE | MF_FEAT_MLA, .detect_none = MF_FEAT_SIGMOID,
      .hidden_act = "silu", .rope_scaling = rope_deepseek },
    { .name = "deepseek_v3", .architecture = "DeepseekV3ForCausalLM", .model_type = "deepseek_v3",
      .attn = mla_attn, .dense_mlp = dense_mlp, .moe_mlp = deepseek_moe, .expert = hf_expert, .mtp = deepseek_mtp,
      .config = cfg_deepseek,
      .needs = MF_FEAT_MOE | MF_FEAT_MLA | MF_FEAT_SIGMOID, .forbids = DS_NO,
      .detect_all = MF_FEAT_MOE | MF_FEAT_MLA | MF_FEAT_SIGMOID,
      .hidden_act = "silu", .rope_scaling = rope_deepseek },
    /* GLM-4.5: GQA with q/k/v biases, optional q/k norm, partial rotary (rotate-half on the first
     * rotary_percent of each head in both Megatron and HF: plain copies), leading dense layers, a
     * sigmoid router with an F32 expert bias, shared experts, DeepSeek-style MTP layers. */
    { .name = "glm4_moe", .architecture = "Glm4MoeForCausalLM", .model_type = "glm4_moe",
      .attn = gqa_attn, .dense_mlp = dense_mlp, .moe_mlp = deepseek_moe, .expert = hf_expert, .mtp = deepseek_mtp,
      .config = cfg_glm4_moe,
      .needs = MF_FEAT_MOE | MF_FEAT_SHARED | MF_FEAT_SIGMOID | MF_FEAT_EXPERT_BIAS,
      .forbids = MF_FEAT_MLA | MF_FEAT_WINDOW | MF_FEAT_SHARED_GATE | MF_FEAT_DENSE_AFTER_MOE | MF_FEAT_SHARED_PARTIAL,
      .detect_all = MF_FEAT_MOE | MF_FEAT_SHARED | MF_FEAT_QKV_BIAS | MF_FEAT_SIGMOID,
      .detect_none = MF_FEAT_MLA | MF_FEAT_SHARED_GATE | MF_FEAT_SINKS,
      .supports_args = MF_ARGF_PARTIAL_ROTARY,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
    { .name = "gpt_oss", .architecture = "GptOssForCausalLM", .model_type = "gpt_oss",
      .attn = gptoss_attn, .dense_mlp = dense_mlp, .moe_mlp = gptoss_moe, .expert = gptoss_expert, .config = cfg_gptoss,
      .needs = MF_FEAT_MOE | MF_FEAT_SINKS | MF_FEAT_CLAMPED_GEGLU | MF_FEAT_LINEAR_BIAS | MF_FEAT_WINDOW,
      .forbids = MF_FEAT_MLA | MF_FEAT_QK_NORM | MF_FEAT_SHARED | MF_FEAT_EXPERT_BIAS | MF_FEAT_SIGMOID | MF_FEAT_DENSE_LAYERS |
                 MF_FEAT_PRE_SOFTMAX | MF_FEAT_TOPK_SCALING | MF_FEAT_GROUP_ROUTING,  /* HF: top-k of logits, softmax of those */
      .detect_all = MF_FEAT_MOE | MF_FEAT_SINKS, .detect_none = MF_FEAT_MLA,
      .supports_args = MF_ARGF_QUICK_GEGLU | MF_ARGF_SOFTMAX_TYPE | MF_ARGF_WINDOW_SKIP,
      .hidden_act = "silu", .rope_scaling = rope_gptoss },
    /* Qwen3-Next: gated delta net + gated attention layers, zero-centred or plain norms shown in
     * HF's conventions, MoE with a gated shared expert (core/families_qwen3next.c) */
    { .name = "qwen3_next", .architecture = "Qwen3NextForCausalLM", .model_type = "qwen3_next",
      .attn = mf_qwen3next_attn, .linear_attn = mf_qwen3next_linear_attn, .top = mf_qwen3next_top,
      .dense_mlp = mf_qwen3next_dense_mlp, .moe_mlp = mf_qwen3next_moe, .expert = mf_qwen3next_expert,
      .config = mf_qwen3next_config,
      .needs = MF_FEAT_MOE | MF_FEAT_SHARED | MF_FEAT_SHARED_GATE | MF_FEAT_QK_NORM | MF_FEAT_ATTN_GATE,
      .forbids = MF_FEAT_MLA | MF_FEAT_WINDOW | MF_FEAT_QKV_BIAS | MF_FEAT_LINEAR_BIAS | MF_FEAT_EXPERT_BIAS |
                 MF_FEAT_SIGMOID | MF_FEAT_SINKS | MF_FEAT_CLAMPED_GEGLU | MF_FEAT_TOPK_SCALING | MF_FEAT_GROUP_ROUTING,
      .detect_all = MF_FEAT_ATTN_GATE, .detect_none = MF_FEAT_MLA | MF_FEAT_SINKS,
      .supports_args = MF_ARGF_ATTN_OUTPUT_GATE | MF_ARGF_ATTN_VARIANT | MF_ARGF_PARTIAL_ROTARY |
                       MF_ARGF_ZERO_CENTERED_GAMMA | MF_ARGF_LAYERNORM_1P,
      .hidden_act = "silu", .rope_scaling = mf_config_rope_megatron },
};

unsigned mf_model_features(const mf_model *m)
{
    unsigned f = 0;
    int seen_moe = 0;
    f |= m->num_experts > 0 ? MF_FEAT_MOE : 0;
    f |= m->mla ? MF_FEAT_MLA : 0;
    f |= m->qk_norm ? MF_FEAT_QK_NORM : 0;
    f |= m->qkv_bias ? MF_FEAT_QKV_BIAS : 0;
    f |= m->window > 0 ? MF_FEAT_WINDOW : 0;
    f |= m->num_experts > 0 && m->shared_ffn > 0 ? MF_FEAT_SHARED : 0;
    f |= m->num_experts > 0 && m->shared_ffn > 0 && m->moe_shared_gate ? MF_FEAT_SHARED_GATE : 0;
    f |= m->num_experts > 0 && m->moe_expert_bias ? MF_FEAT_EXPERT_BIAS : 0;
    f |= m->num_experts > 0 && strcmp(m->score_function, "sigmoid") == 0 ? MF_FEAT_SIGMOID : 0;
    f |= m->window_set ? MF_FEAT_WINDOW_SET : 0;
    f |= m->num_experts > 0 && m->shared_ffn > 0 && m->moe_ffn > 0 && m->shared_ffn % m->moe_ffn ? MF_FEAT_SHARED_PARTIAL : 0;
    f |= m->learnable_sinks ? MF_FEAT_SINKS : 0;
    /* HF's GptOssExperts: (up + 1) x quick_gelu(gate), gate <= 7, |up| <= 7, fixed in code */
    f |= m->quick_geglu && m->glu_offset == 1.0 && m->glu_clamp == 7.0 ? MF_FEAT_CLAMPED_GEGLU : 0;
    f |= m->add_bias_linear ? MF_FEAT_LINEAR_BIAS : 0;
    f |= m->num_experts > 0 && m->moe_pre_softmax ? MF_FEAT_PRE_SOFTMAX : 0;
    f |= m->num_experts > 0 && m->moe_scaling_factor != 1.0 ? MF_FEAT_TOPK_SCALING : 0;
    f |= m->num_experts > 0 && m->moe_num_groups > 1 ? MF_FEAT_GROUP_ROUTING : 0;
    f |= m->attn_output_gate ? MF_FEAT_ATTN_GATE : 0;
    for (int64_t l = 0; m->mixer_layer && l < m->num_layers; l++)
        f |= m->mixer_layer[l] == MF_MIXER_LINEAR_ATTENTION ? MF_FEAT_LINEAR_ATTN : 0;
    for (int64_t l = 0; m->num_experts > 0 && m->moe_layer && l < m->num_layers; l++) {
        if (!m->moe_layer[l])
            f |= MF_FEAT_DENSE_LAYERS | (seen_moe ? MF_FEAT_DENSE_AFTER_MOE : 0);
        seen_moe |= m->moe_layer[l];
    }
    return f;
}

static const struct {
    unsigned bit;
    const char *what, *args;
} feature_words[] = {
    { MF_FEAT_MOE, "experts", "num_experts" },
    { MF_FEAT_MLA, "multi-latent attention", "multi_latent_attention" },
    { MF_FEAT_QK_NORM, "q/k layer norms", "qk_layernorm" },
    { MF_FEAT_QKV_BIAS, "q/k/v biases", "add_qkv_bias / add_bias_linear" },
    { MF_FEAT_WINDOW, "sliding-window attention", "window_size" },
    { MF_FEAT_SHARED, "shared experts", "moe_shared_expert_intermediate_size" },
    { MF_FEAT_SHARED_GATE, "a shared-expert gate", "moe_shared_expert_gate" },
    { MF_FEAT_EXPERT_BIAS, "a router expert bias", "moe_router_enable_expert_bias" },
    { MF_FEAT_SIGMOID, "sigmoid router scores", "moe_router_score_function" },
    { MF_FEAT_DENSE_LAYERS, "dense layers in a MoE model", "moe_layer_freq" },
    { MF_FEAT_DENSE_AFTER_MOE, "dense layers after MoE layers", "moe_layer_freq" },
    { MF_FEAT_SHARED_PARTIAL, "a shared-expert size that is not a multiple of the expert size", "moe_shared_expert_intermediate_size" },
    { MF_FEAT_SINKS, "learnable attention sinks", "softmax_type=learnable" },
    { MF_FEAT_CLAMPED_GEGLU, "the clamped quick-GeGLU", "quick_geglu, glu_linear_offset=1, activation_func_clamp_value=7" },
    { MF_FEAT_LINEAR_BIAS, "linear-layer biases", "add_bias_linear" },
    { MF_FEAT_PRE_SOFTMAX, "a softmax before the top-k choice", "moe_router_pre_softmax" },
    { MF_FEAT_TOPK_SCALING, "scaled routing weights", "moe_router_topk_scaling_factor" },
    { MF_FEAT_GROUP_ROUTING, "group-limited routing", "moe_router_num_groups" },
    { MF_FEAT_ATTN_GATE, "an attention output gate", "attention_output_gate" },
    { MF_FEAT_LINEAR_ATTN, "gated delta net layers", "experimental_attention_variant=gated_delta_net" },
};

int mf_family_check(const mf_family *f, const mf_model *m, const char *arch, const char *src)
{
    unsigned have = mf_model_features(m);
    for (size_t i = 0; i < sizeof(feature_words) / sizeof(feature_words[0]); i++) {
        unsigned bit = feature_words[i].bit;
        int missing = (f->needs & bit) && !(have & bit), extra = (f->forbids & bit) && (have & bit);
        if (!missing && !extra)
            continue;
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s%s does not fit this checkpoint: %s %s %s, which the args %s (%s)",
                       src, arch && *arch ? "-o arch=" : "the detected family ", arch && *arch ? arch : f->name,
                       f->architecture, missing ? "needs" : "cannot express", feature_words[i].what,
                       missing ? "do not set" : "set", feature_words[i].args);
    }
    return MF_OK;
}

const mf_family *mf_family_find(const char *name)
{
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
        if (strcmp(families[i].name, name) == 0 || strcmp(families[i].architecture, name) == 0)
            return &families[i];
    return NULL;
}

static const mf_family *all_families[sizeof(families) / sizeof(families[0]) + 1];

static void list_families(void)
{
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
        all_families[i] = &families[i];
}

const mf_family *const *mf_family_all(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, list_families);
    return all_families;
}
