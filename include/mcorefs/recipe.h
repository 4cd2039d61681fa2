/* Data-driven mapping: families are tables of rules; each HF tensor becomes a recipe of pieces.
 * A piece copies a rectangle of one source shard (seen as a 2-D strided view) into a rectangle
 * of the HF tensor. TP concat, QKV de-interleave, gated-fc1 split, expert choice, vocab trim and
 * MTP renaming are all expressed as pieces, so one gather engine serves every read. */
#ifndef MCOREFS_RECIPE_H
#define MCOREFS_RECIPE_H

#include <stdint.h>
#include "mcorefs/torchfile.h"

struct cJSON;
struct mf_pv;
struct mf_model_s; /* = mf_model */

typedef enum {
    MF_SPLIT_REPL,      /* replicated over TP: take shard 0 */
    MF_SPLIT_DIM0,      /* column-parallel: concat shards on dim 0 */
    MF_SPLIT_DIM1,      /* row-parallel: concat shards on dim 1 */
    MF_SPLIT_QKV_Q,     /* group-interleaved [q(r heads), k, v] per group: the q rows */
    MF_SPLIT_QKV_K,
    MF_SPLIT_QKV_V,
    MF_SPLIT_GLU_GATE,  /* each shard is [gate_t; up_t]: the gate halves */
    MF_SPLIT_GLU_UP,
    MF_SPLIT_VOCAB,     /* dim 0 concat, trimmed to the shown vocab */
    MF_SPLIT_AUTO0,     /* replicated if a shard already has the full rows, else dim 0 (MLA down-proj) */
    MF_SPLIT_DIM1_T,    /* row-parallel (concat on dim 1), shown transposed: HF [cols, rows];
                           a 1-D source is shown as one row (an expert's bias in a stacked [E, N]) */
    MF_SPLIT_GLU_INTERLEAVE_T, /* gated fc1 [gate; up] shown transposed with gate and up columns
                                  interleaved: HF [H, 2F], (h, 2f) = gate (f, h), (h, 2f+1) = up;
                                  a 1-D [gate; up] bias is shown as one row [2F], interleaved alike */
    /* Sectioned tensors (Qwen3-Next): each TP shard is [section_0 / tp; section_1 / tp; ...] of
     * the sections mf_sections gives; the shards are placed section by section into the global
     * [section_0; section_1; ...] before the cut (pitfalls.md 14). */
    MF_SPLIT_GDN_QKVZ,  /* gated delta net in_proj [q; k; v; z; beta; alpha]: HF in_proj_qkvz, per
                           key-head group g [q_g; k_g; v_g; z_g] */
    MF_SPLIT_GDN_BA,    /* the same in_proj: HF in_proj_ba, per key-head group [beta_g; alpha_g] */
    MF_SPLIT_GDN_CONV,  /* conv1d [q; k; v] channels x 1 x kernel: the global tensor as it is (3-D) */
    MF_SPLIT_QKV_QG,    /* fused QKV with the output gate, per group [q heads; gate heads; k; v]:
                           HF q_proj, per head [q_j; gate_j] (pitfalls.md 16) */
    MF_SPLIT_NORM_1P,   /* replicated norm weight shown in HF's x * (1 + w) convention: w - 1 unless
                           Megatron's own norm is zero-centred (pitfalls.md 15) */
    MF_SPLIT_NORM_PLAIN, /* replicated norm weight shown in HF's plain x * w convention: w + 1 when
                            Megatron's norm is zero-centred */
} mf_split;

typedef enum {
    MF_WHEN_ALWAYS, MF_WHEN_QKV_BIAS, MF_WHEN_QK_NORM, MF_WHEN_Q_LORA, MF_WHEN_NO_Q_LORA,
    MF_WHEN_SHARED, MF_WHEN_SHARED_GATE, MF_WHEN_EXPERT_BIAS, MF_WHEN_ROUTER_BIAS,
    MF_WHEN_UNTIED, MF_WHEN_LINEAR_BIAS, MF_WHEN_GLU, MF_WHEN_NOT_GLU,
    MF_WHEN_MTP_COPIES_UNTIED, MF_WHEN_MTP_COPIES_TIED,  /* -o mtp_head_copies */
    MF_WHEN_MTP_COPIES,
} mf_when;

/* One dimension of a source tensor's global (unsharded) shape, as the args give it; the split
 * then says how it is divided over ranks (core/shape_check.c). */
typedef enum {
    MF_D_NONE,        /* no such dimension: the tensor is 1-D */
    MF_D_ONE,         /* 1 (the shared-expert gate) */
    MF_D_HIDDEN,      /* hidden_size */
    MF_D_HIDDEN_X2,   /* 2 x hidden_size (MTP eh_proj input) */
    MF_D_FC1,         /* ffn_hidden_size, x 2 when gated ([gate; up]) */
    MF_D_FFN,         /* ffn_hidden_size */
    MF_D_MOE_FC1,     /* moe_ffn_hidden_size, x 2 when gated */
    MF_D_MOE_FFN,
    MF_D_SHARED_FC1,  /* moe_shared_expert_intermediate_size, x 2 when gated */
    MF_D_SHARED_FFN,
    MF_D_QKV,         /* (heads + 2 x query groups) x kv_channels */
    MF_D_ATTN_OUT,    /* linear_proj input: heads x kv_channels (MLA: heads x v_head_dim) */
    MF_D_HEAD_DIM,    /* kv_channels (q/k norms) */
    MF_D_VOCAB,       /* padded_vocab_size */
    MF_D_EXPERTS,     /* num_experts */
    MF_D_Q_LORA,      /* q_lora_rank */
    MF_D_KV_A,        /* kv_lora_rank + qk_pos_emb_head_dim */
    MF_D_KV_LORA,     /* kv_lora_rank */
    MF_D_MLA_Q,       /* heads x (qk_head_dim + qk_pos_emb_head_dim) */
    MF_D_MLA_KV,      /* heads x (qk_head_dim + v_head_dim) */
    MF_D_HEADS,       /* num_attention_heads (gpt-oss attention sinks) */
    MF_D_GDN_IN,      /* gated delta net in_proj: 2 x key dim + 2 x value dim + 2 x value heads */
    MF_D_GDN_CONV,    /* its conv1d channels: 2 x key dim + value dim */
    MF_D_GDN_V,       /* value dim: linear_num_value_heads x linear_value_head_dim */
    MF_D_GDN_VHEADS,  /* linear_num_value_heads (A_log, dt_bias) */
    MF_D_GDN_VHEAD,   /* linear_value_head_dim (the gated output norm) */
    MF_D_GDN_KERNEL,  /* linear_conv_kernel_dim */
} mf_dim;

/* HF and source names are templates: {L} = layer index (HF numbering, MTP layers follow the
 * decoder layers), {E} = global expert id. Up to three source spellings (TE / local spec).
 * An expert rule whose HF name has no {E} stacks all experts of the layer into one tensor
 * [num_experts, ...] (e.g. gpt-oss mlp.experts.down_proj).
 * rows, cols: the source tensor's global shape (cols MF_D_NONE for a 1-D tensor). */
/* Whether -o dtype= converts the tensor: HF keeps some float tensors in their stored dtype
 * (DeepSeek's e_score_correction_bias stays F32 in transformers). */
typedef enum { MF_DTYPE_SHOWN, MF_DTYPE_STORED } mf_dtype_rule;

typedef struct {
    const char *hf;
    const char *src[3];
    mf_split split;
    mf_when when;
    mf_dim rows, cols;
    mf_dtype_rule dtype;
} mf_rule;

/* A decoder layer's kind, chosen per layer from the args: its token mixer and its MLP. The
 * mapping emits the family's rule table for each part (mf_layer_rules). */
typedef enum { MF_MIXER_ATTENTION, MF_MIXER_LINEAR_ATTENTION, MF_MIXER_MAMBA } mf_mixer;
typedef struct {
    mf_mixer mixer;
    uint8_t moe;       /* MoE MLP (router, experts), else dense */
    uint8_t mtp;       /* a multi-token-prediction layer (after the decoder layers) */
} mf_layer_kind;

/* Model features a family's HF class needs or cannot express (mf_family_check). */
enum {
    MF_FEAT_MOE = 1 << 0,          /* num_experts > 0 */
    MF_FEAT_MLA = 1 << 1,          /* multi-latent attention */
    MF_FEAT_QK_NORM = 1 << 2,      /* q/k layer norms */
    MF_FEAT_QKV_BIAS = 1 << 3,     /* q/k/v biases */
    MF_FEAT_WINDOW = 1 << 4,       /* sliding-window attention */
    MF_FEAT_SHARED = 1 << 5,       /* shared experts */
    MF_FEAT_SHARED_GATE = 1 << 6,  /* gated shared experts */
    MF_FEAT_EXPERT_BIAS = 1 << 7,  /* router expert bias (aux-loss-free balancing) */
    MF_FEAT_SIGMOID = 1 << 8,      /* sigmoid router scores */
    MF_FEAT_DENSE_LAYERS = 1 << 9, /* dense layers in a MoE model */
    MF_FEAT_DENSE_AFTER_MOE = 1 << 10, /* a dense layer after a MoE layer */
    MF_FEAT_WINDOW_SET = 1 << 11,  /* window_size given (detection only: Mistral's sign) */
    MF_FEAT_SINKS = 1 << 12,       /* learnable attention sinks (softmax_type=learnable) */
    MF_FEAT_CLAMPED_GEGLU = 1 << 13, /* gpt-oss MLP: quick_geglu, glu_linear_offset 1, a clamp */
    MF_FEAT_LINEAR_BIAS = 1 << 14, /* biases on every linear layer (add_bias_linear) */
    MF_FEAT_PRE_SOFTMAX = 1 << 15, /* router softmax before top-k (moe_router_pre_softmax) */
    MF_FEAT_TOPK_SCALING = 1 << 16, /* routing weights scaled (moe_router_topk_scaling_factor) */
    MF_FEAT_GROUP_ROUTING = 1 << 17, /* group-limited routing (moe_router_num_groups) */
    MF_FEAT_SHARED_PARTIAL = 1 << 20, /* shared-expert size not a whole number of routed experts */
    MF_FEAT_ATTN_GATE = 1 << 21,   /* attention output gate (attention_output_gate) */
    MF_FEAT_LINEAR_ATTN = 1 << 22, /* gated delta net (linear attention) layers */
};

/* Megatron settings beyond what every family shares (core/family_select.c): refused by name
 * unless the chosen family row lists them in supports_args. */
enum {
    MF_ARGF_NORM_NOT_RMS = 1 << 0,        /* normalization other than RMSNorm */
    MF_ARGF_POS_NOT_ROPE = 1 << 1,        /* position embeddings other than rope / yarn */
    MF_ARGF_NO_SWIGLU = 1 << 2,           /* a non-gated MLP (neither swiglu nor quick_geglu) */
    MF_ARGF_ROTARY_INTERLEAVED = 1 << 3,
    MF_ARGF_ZERO_CENTERED_GAMMA = 1 << 4,
    MF_ARGF_LAYERNORM_1P = 1 << 5,
    MF_ARGF_ATTN_OUTPUT_GATE = 1 << 6,
    MF_ARGF_FP8_PARAM_GATHER = 1 << 7,
    MF_ARGF_MLA_DOWN_FUSION = 1 << 8,
    MF_ARGF_PP_LAYOUT = 1 << 9,           /* pipeline_model_parallel_layout */
    MF_ARGF_HETEROGENEOUS = 1 << 10,      /* heterogeneous_layers_config_* */
    MF_ARGF_HYBRID_PATTERN = 1 << 11,     /* hybrid_layer_pattern (Mamba) */
    MF_ARGF_SPEC = 1 << 12,               /* a custom layer spec module */
    MF_ARGF_GLU_INTERLEAVE = 1 << 13,     /* column-interleaved gate/up */
    MF_ARGF_MOE_LATENT = 1 << 14,         /* moe_latent_size */
    MF_ARGF_ATTN_VARIANT = 1 << 15,       /* experimental_attention_variant */
    MF_ARGF_PARTIAL_ROTARY = 1 << 16,     /* rotary_percent < 1 */
    MF_ARGF_SOFTMAX_TYPE = 1 << 17,       /* softmax_type other than vanilla (attention sinks) */
    MF_ARGF_WINDOW_SKIP = 1 << 18,        /* window_attn_skip_freq: full-attention layers among windowed */
    MF_ARGF_QUICK_GEGLU = 1 << 19,        /* gated MLP with quick-GELU (gpt-oss) */
    MF_ARGF_PROBS_ON_INPUT = 1 << 20,     /* moe_apply_probs_on_input: routing weight before fc1 */
    MF_ARGF_ATTN_VARIANT_OTHER = 1 << 21, /* an experimental_attention_variant other than gated_delta_net */
};

typedef struct mf_family {
    const char *name;          /* option value for -o arch= */
    const char *architecture;  /* "LlamaForCausalLM" */
    const char *model_type;
    const mf_rule *attn;       /* per layer */
    const mf_rule *dense_mlp;  /* per dense layer */
    const mf_rule *moe_mlp;    /* per MoE layer (router, shared experts) */
    const mf_rule *expert;     /* per MoE layer and expert */
    const mf_rule *mtp;        /* extra tensors of an MTP layer */
    const mf_rule *linear_attn; /* per linear-attention (gated delta net) layer; NULL: none */
    const mf_rule *top;        /* embed, final norm, lm_head; NULL: mf_rules_top */
    /* family-specific config.json fields (the common ones are written by the caller) */
    void (*config)(const struct mf_model_s *m, struct cJSON *cfg);
    unsigned needs, forbids;   /* MF_FEAT_* the HF class always has / cannot express */
    /* auto-detection: the row fits when the model has every MF_FEAT_* of detect_all and none of
     * detect_none; the rows' masks exclude each other, so no order decides */
    unsigned detect_all, detect_none;
    unsigned supports_args;    /* MF_ARGF_* settings the HF class can express */
    const char *hidden_act;    /* config.json hidden_act */
    void (*rope_scaling)(const struct mf_model_s *m, struct cJSON *cfg);  /* config.json rope_scaling */
} mf_family;

extern const mf_rule mf_rules_top[];     /* embed, final norm, lm_head */
const mf_family *mf_family_find(const char *name);  /* by name or architecture */
const mf_family *const *mf_family_all(void);        /* NULL-terminated; the one list of families */
/* The family names joined by sep (", " or "|"), for messages and help texts. */
const char *mf_family_names(const char *sep);
/* MF_ARGF_* settings the args turn on (args: the Namespace dict). */
unsigned mf_args_settings(const struct mf_pv *args);
/* Refuse a setting the family (NULL: every family) cannot express: MF_OK, or MF_ERR_UNSUPPORTED
 * naming src and the arg ("...: unsupported model: rotary_percent < 1"). */
int mf_family_check_args(const mf_family *f, const struct mf_pv *args, const char *src);
/* The one family whose detection masks fit m and whose supports_args cover arg_settings_on;
 * NULL with the message set when none (or, a table error, two) fit. When the masks point to a
 * row that cannot express a setting of `args` (may be NULL), the message names the setting. */
const mf_family *mf_family_detect(const struct mf_model_s *m, unsigned arg_settings_on, const struct mf_pv *args,
                                  const char *src);
/* config.json rope_scaling from Megatron's own flags: llama3 (use_rope_scaling), linear
 * (rotary_seq_len_interpolation_factor) or null. */
void mf_config_rope_megatron(const struct mf_model_s *m, struct cJSON *cfg);
/* MF_FEAT_* of the model the args describe. */
unsigned mf_model_features(const struct mf_model_s *m);
/* The family's HF class must fit the args: each feature it needs present, none it cannot
 * express. MF_OK, or MF_ERR_UNSUPPORTED naming the family and the first misfit (src: the file
 * for messages; arch: the -o arch= value that chose it, NULL when detected). */
int mf_family_check(const mf_family *f, const struct mf_model_s *m, const char *arch, const char *src);

struct mf_dist_chunk; /* torch_dist: a chunk of the reader's table, its archive read on first use */

/* One source shard: a strided tensor in one rank file. Shards are const once the checkpoint
 * is open; a torch_dist chunk's location lives in the reader's chunk table, not here. */
typedef struct {
    int file;       /* index into the checkpoint's files */
    mf_tensor t;    /* lazy shards: only dtype, ndim and shape; mf_shard_locate gives the rest */
    int64_t row0, col0;  /* torch_dist chunks: position in the global tensor (else 0) */
    struct mf_dist_chunk *chunk;  /* NULL: t is complete from the start */
    int64_t layer, expert;        /* lazy shards: the slice of the chunk's stacked axes */
} mf_shard;

/* The shard's complete tensor (strides, offset, storage) in *out, before its bytes are read.
 * Legacy shards: sh->t. torch_dist: the chunk's embedded archive is parsed once, on the first
 * call that needs it, and checked against .metadata then. Thread-safe, no lock once read;
 * MF_OK, or an error (message set: file, tensor, problem) returned again on every later call. */
int mf_shard_locate(const mf_shard *sh, mf_tensor *out);

/* A piece: dst rows [dst_row, dst_row+rows) x cols [dst_col, dst_col+cols) of the HF tensor
 * (seen as a matrix: all dims but the last are rows) come from src rows [src_row, ...) x cols
 * [src_col, ...) of the source viewed as 2-D. Two variants (0 = a plain copy):
 *   transposed: dst (i, j) <- src (src_row + j, src_col + i): the source block is cols x rows;
 *   dst_step > 1: the piece's columns land every dst_step-th column from dst_col
 *                 (column-interleaved, e.g. gate and up alternating): dst (i, dst_col + j*step).
 * The gather engine reads row blocks of the source and copies with strides in memory. */
typedef struct {
    const mf_shard *src;
    uint32_t dst_row, dst_col, src_row, src_col, rows, cols;
    uint8_t transposed;
    uint8_t dst_step;   /* 0 or 1: contiguous columns */
} mf_piece;

#endif
