/* Qwen3-Next (Qwen3NextForCausalLM, transformers v4.57; Megatron-Bridge's Qwen3NextBridge):
 * hybrid layers of gated delta net (linear attention) and gated full attention, MoE with a
 * gated shared expert. Three things beyond table rows (pitfalls.md 14-16):
 *  - the gated delta net's in_proj and conv1d are sectioned per TP rank ([q|k|v|z|beta|alpha],
 *    [q|k|v]) and HF regroups in_proj per key head: MF_SPLIT_GDN_*;
 *  - the output gate sits in linear_qkv per query group, HF's q_proj holds [q_j; gate_j] per
 *    head: MF_SPLIT_QKV_QG;
 *  - HF's Qwen3NextRMSNorm computes x * (1 + w) but its gated norm x * w, while Megatron's norms
 *    are all plain or all zero-centred (layernorm_zero_centered_gamma): MF_SPLIT_NORM_1P / _PLAIN
 *    shift the weights by 1 where the conventions differ. */
#include <string.h>
#include "families_qwen3next.h"
#include "json_util.h"
#include "mcorefs/model.h"

#define DL "decoder.layers.{L}."
#define HL "model.layers.{L}."
#define XP DL "mlp.experts.{E}."
#define END { NULL, { NULL }, 0, 0, 0, 0, 0 }

const mf_rule mf_qwen3next_top[] = {
    { "model.embed_tokens.weight", { "embedding.word_embeddings.weight" }, MF_SPLIT_VOCAB, MF_WHEN_ALWAYS, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { "model.norm.weight", { "decoder.final_layernorm.weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { "lm_head.weight", { "output_layer.weight" }, MF_SPLIT_VOCAB, MF_WHEN_UNTIED, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    END,
};

/* full attention with the output gate and q/k norms, no biases */
const mf_rule mf_qwen3next_attn[] = {
    { HL "input_layernorm.weight", { DL "self_attention.linear_qkv.layer_norm_weight", DL "input_layernorm.weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.q_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_QG, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.k_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_K, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.v_proj.weight", { DL "self_attention.linear_qkv.weight" }, MF_SPLIT_QKV_V, MF_WHEN_ALWAYS, MF_D_QKV, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "self_attn.o_proj.weight", { DL "self_attention.linear_proj.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_ATTN_OUT, MF_DTYPE_SHOWN },
    { HL "self_attn.q_norm.weight", { DL "self_attention.q_layernorm.weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HEAD_DIM, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "self_attn.k_norm.weight", { DL "self_attention.k_layernorm.weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HEAD_DIM, MF_D_NONE, MF_DTYPE_SHOWN },
    END,
};

/* gated delta net (Megatron's GatedDeltaNet; TE fuses the input norm into in_proj). torch_dist
 * stores in_proj and conv1d as one key per section (`.query`, `.key`, ...): the second spelling
 * finds the first, and the mapping places every section key in the global tensor. */
const mf_rule mf_qwen3next_linear_attn[] = {
    { HL "input_layernorm.weight", { DL "self_attention.in_proj.layer_norm_weight", DL "input_layernorm.weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "linear_attn.in_proj_qkvz.weight", { DL "self_attention.in_proj.weight", DL "self_attention.in_proj.weight.query" }, MF_SPLIT_GDN_QKVZ, MF_WHEN_ALWAYS, MF_D_GDN_IN, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "linear_attn.in_proj_ba.weight", { DL "self_attention.in_proj.weight", DL "self_attention.in_proj.weight.query" }, MF_SPLIT_GDN_BA, MF_WHEN_ALWAYS, MF_D_GDN_IN, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "linear_attn.conv1d.weight", { DL "self_attention.conv1d.weight", DL "self_attention.conv1d.weight.query" }, MF_SPLIT_GDN_CONV, MF_WHEN_ALWAYS, MF_D_GDN_CONV, MF_D_GDN_KERNEL, MF_DTYPE_SHOWN },
    { HL "linear_attn.dt_bias", { DL "self_attention.dt_bias" }, MF_SPLIT_DIM0, MF_WHEN_ALWAYS, MF_D_GDN_VHEADS, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "linear_attn.A_log", { DL "self_attention.A_log" }, MF_SPLIT_DIM0, MF_WHEN_ALWAYS, MF_D_GDN_VHEADS, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "linear_attn.norm.weight", { DL "self_attention.out_norm.weight" }, MF_SPLIT_NORM_PLAIN, MF_WHEN_ALWAYS, MF_D_GDN_VHEAD, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "linear_attn.out_proj.weight", { DL "self_attention.out_proj.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_GDN_V, MF_DTYPE_SHOWN },
    END,
};

/* layers in mlp_only_layers */
const mf_rule mf_qwen3next_dense_mlp[] = {
    { HL "post_attention_layernorm.weight", { DL "mlp.linear_fc1.layer_norm_weight", DL "pre_mlp_layernorm.weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "mlp.gate_proj.weight", { DL "mlp.linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_ALWAYS, MF_D_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.up_proj.weight", { DL "mlp.linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_ALWAYS, MF_D_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.down_proj.weight", { DL "mlp.linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_FFN, MF_DTYPE_SHOWN },
    END,
};

/* Qwen3NextSparseMoeBlock: router, one shared expert and its sigmoid gate */
const mf_rule mf_qwen3next_moe[] = {
    { HL "post_attention_layernorm.weight", { DL "pre_mlp_layernorm.weight", DL "mlp.linear_fc1.layer_norm_weight" }, MF_SPLIT_NORM_1P, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN },
    { HL "mlp.gate.weight", { DL "mlp.router.weight" }, MF_SPLIT_REPL, MF_WHEN_ALWAYS, MF_D_EXPERTS, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert.gate_proj.weight", { DL "mlp.shared_experts.linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_SHARED, MF_D_SHARED_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert.up_proj.weight", { DL "mlp.shared_experts.linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_SHARED, MF_D_SHARED_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert.down_proj.weight", { DL "mlp.shared_experts.linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_SHARED, MF_D_HIDDEN, MF_D_SHARED_FFN, MF_DTYPE_SHOWN },
    { HL "mlp.shared_expert_gate.weight", { DL "mlp.shared_experts.gate_weight" }, MF_SPLIT_REPL, MF_WHEN_SHARED_GATE, MF_D_ONE, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    END,
};

const mf_rule mf_qwen3next_expert[] = {
    { HL "mlp.experts.{E}.gate_proj.weight", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_GATE, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.experts.{E}.up_proj.weight", { XP "linear_fc1.weight" }, MF_SPLIT_GLU_UP, MF_WHEN_ALWAYS, MF_D_MOE_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN },
    { HL "mlp.experts.{E}.down_proj.weight", { XP "linear_fc2.weight" }, MF_SPLIT_DIM1, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_MOE_FFN, MF_DTYPE_SHOWN },
    END,
};

/* full_attention_interval when the mixers follow one (HF's default pattern, and what
 * Megatron-Bridge reads back as linear_attention_freq); 0 when they do not */
static int64_t full_attention_interval(const mf_model *m)
{
    int64_t first = 0;
    while (first < m->num_layers && m->mixer_layer && m->mixer_layer[first] != MF_MIXER_ATTENTION)
        first++;
    if (m->mixer_layer == NULL || first == m->num_layers)
        return m->mixer_layer == NULL ? 1 : 0;
    for (int64_t l = 0; l < m->num_layers; l++)
        if ((m->mixer_layer[l] == MF_MIXER_ATTENTION) != ((l + 1) % (first + 1) == 0))
            return 0;
    return first + 1;
}

/* Qwen3NextConfig (v4.57) keys beyond the common ones; README lists arg -> key. */
void mf_qwen3next_config(const mf_model *m, cJSON *c)
{
    mf_json_int(c, "head_dim", m->head_dim);                     /* kv_channels */
    mf_json_float(c, "partial_rotary_factor", m->rotary_percent);
    mf_json_bool(c, "attention_bias", 0);                        /* biases are refused (forbids) */
    mf_json_int(c, "linear_conv_kernel_dim", m->gdn.conv_kernel);
    mf_json_int(c, "linear_key_head_dim", m->gdn.key_head_dim);
    mf_json_int(c, "linear_value_head_dim", m->gdn.value_head_dim);
    mf_json_int(c, "linear_num_key_heads", m->gdn.key_heads);
    mf_json_int(c, "linear_num_value_heads", m->gdn.value_heads);
    mf_json_int(c, "num_experts", m->num_experts);
    mf_json_int(c, "num_experts_per_tok", m->moe_topk);
    mf_json_int(c, "moe_intermediate_size", m->moe_ffn);
    mf_json_int(c, "shared_expert_intermediate_size", m->shared_ffn);
    /* Megatron: top-k of the logits, then softmax = HF softmax, top-k, renormalised; with
     * moe_router_pre_softmax the top-k probabilities are used as they are */
    mf_json_bool(c, "norm_topk_prob", !m->moe_pre_softmax);
    mf_json_float(c, "router_aux_loss_coef", m->moe_aux_coeff);
    mf_json_bool(c, "output_router_logits", 0);
    mf_json_int(c, "decoder_sparse_step", 1);
    cJSON *dense = cJSON_CreateArray(), *types = cJSON_CreateArray();
    for (int64_t l = 0; l < m->num_layers; l++) {
        if (m->num_experts > 0 && m->moe_layer && !m->moe_layer[l])
            cJSON_AddItemToArray(dense, cJSON_CreateNumber((double)l));
        int linear = m->mixer_layer && m->mixer_layer[l] == MF_MIXER_LINEAR_ATTENTION;
        cJSON_AddItemToArray(types, cJSON_CreateString(linear ? "linear_attention" : "full_attention"));
    }
    mf_json_set(c, "mlp_only_layers", dense);
    mf_json_set(c, "layer_types", types);
    int64_t interval = full_attention_interval(m);
    if (interval > 0)
        mf_json_int(c, "full_attention_interval", interval);
}
