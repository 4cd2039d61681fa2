/* What the checkpoint's args say about the model: one description, both Megatron arg spellings. */
#ifndef MCOREFS_MODEL_H
#define MCOREFS_MODEL_H

#include <stdint.h>
#include "mcorefs/dtype.h"
#include "mcorefs/options.h"
#include "mcorefs/pickle.h"

struct mf_family;

/* Multi-latent attention sizes (Megatron's MLA args). */
typedef struct {
    int64_t q_lora_rank;               /* 0: no q down-projection */
    int64_t kv_lora_rank, qk_head_dim, qk_pos_dim, v_head_dim;
} mf_mla_dims;

/* Gated delta net (linear attention) sizes: Megatron's linear_* args. */
typedef struct {
    int64_t key_heads, value_heads, key_head_dim, value_head_dim, conv_kernel;
} mf_gdn_dims;

/* YaRN rope scaling as Megatron's MLA args give it (rope_type "yarn" and factor > 1 to apply). */
typedef struct {
    double factor, mscale, mscale_all_dim;
    char rope_type[16];
} mf_yarn;

typedef struct mf_model_s {
    const struct mf_family *family;   /* chosen recipe set */
    /* sizes */
    int64_t num_layers, hidden, ffn, heads, groups, head_dim;
    int64_t padded_vocab, vocab;       /* vocab: the size shown (true vocab or padded) */
    int64_t max_pos;
    int64_t window;                    /* sliding window (left size) or 0 */
    int window_set;                    /* window_size given at all (Mistral's sign in detection) */
    double norm_eps, rope_theta, init_std, attn_dropout;
    int swiglu, qkv_bias, add_bias_linear, qk_norm, tied, gqa;
    int use_rope_scaling; double rope_scaling_factor; double seq_interp_factor;
    double rotary_percent;             /* share of head_dim that rope rotates (1: all) */
    mf_dtype params_dtype;
    /* parallel layout */
    int64_t tp, pp, vpp, ep, etp, cp;
    int64_t pp_first, pp_last;         /* 0 when not set */
    int account_embedding, account_loss;
    int te_spec;
    /* MoE */
    int64_t num_experts, moe_ffn, moe_topk, shared_ffn;
    int moe_shared_gate, moe_expert_bias, moe_pre_softmax, moe_router_bias;
    int64_t moe_num_groups, moe_group_topk;
    double moe_scaling_factor, moe_aux_coeff;
    char score_function[16];
    uint8_t *moe_layer;                /* [num_layers] 1 = MoE layer */
    uint8_t *mixer_layer;              /* [num_layers] mf_mixer of each layer; NULL: all attention */
    /* MLA (the DeepSeek rows' attention; read for every model, used only when mla) */
    int mla;
    mf_mla_dims mla_dims;
    mf_yarn yarn;                      /* the DeepSeek rows' rope_scaling */
    /* gpt-oss: attention sinks, the clamped quick-GeGLU, per-layer sliding window, YaRN */
    int learnable_sinks;               /* softmax_type = learnable (softmax_offset per head) */
    int quick_geglu;                   /* gated MLP with quick-GELU: quick_gelu(gate) x (up + offset) */
    double glu_offset, glu_clamp;      /* glu_linear_offset; activation_func_clamp_value (0: none) */
    uint8_t *window_layer;             /* [num_layers] 1 = sliding-window layer; NULL: no window */
    int position_yarn;                 /* position_embedding_type = yarn */
    int64_t yarn_orig_max_pos;         /* yarn_original_max_position_embeddings */
    double yarn_beta_fast, yarn_beta_slow;
    int yarn_round;                    /* yarn_correction_range_round_to_int (HF: truncate) */
    /* Qwen3-Next: gated attention, zero-centred norms, gated delta net layers */
    int attn_output_gate;              /* linear_qkv holds an output gate per query head */
    int zero_centered_norm;            /* layernorm_zero_centered_gamma / apply_layernorm_1p: x * (1 + w) */
    mf_gdn_dims gdn;
    /* MTP */
    int64_t mtp_layers;                /* in the checkpoint */
    int64_t mtp_shown;                 /* 0 with skip_mtp */
    int mtp_head_copies;               /* also show embed_tokens / shared_head.head per MTP layer */
    /* a save without Megatron's args: what described the model ("hf_config FILE", a NeMo
     * model.yaml), for messages; "" when the args did */
    char args_from[256];
} mf_model;

/* Read args (the argparse Namespace state dict) into m. `arch` (may be NULL) overrides
 * auto-detection. `src` names the file for messages. */
int mf_model_from_args(mf_model *m, const mf_pv *args, const char *arch, const char *src);
void mf_model_free(mf_model *m);
/* The one place the view options change the model: true_vocab_size (checked against the padded
 * vocab), skip_mtp, mtp_head_copies. MF_OK or MF_ERR_INVALID (message set). */
int mf_model_apply_options(mf_model *m, const mf_options *o);

/* Helpers to read args with defaults (both spellings handled by callers). */
int mf_args_int(const mf_pv *args, const char *name, int64_t def, int64_t *out);
int mf_args_bool(const mf_pv *args, const char *name, int def);
double mf_args_float(const mf_pv *args, const char *name, double def);
/* Each layer's token mixer from the args into m->mixer_layer (needs m->num_layers): linear
 * attention layers of experimental_attention_variant=gated_delta_net per linear_attention_freq;
 * NULL when every layer is attention. */
int mf_model_read_mixers(mf_model *m, const mf_pv *args, const char *src);
const char *mf_args_str(const mf_pv *args, const char *name);  /* NULL if None/absent */
int mf_args_is_set(const mf_pv *args, const char *name);         /* present and not None */

#endif
