/* args -> model description; the family rows decide which family it is (core/family_select.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/recipe.h"

static void read_moe_layer_freq(mf_model *m, const mf_pv *a)
{
    const mf_pv *v = mf_pv_dict_get(a, "moe_layer_freq");
    int64_t freq = 1;
    for (int64_t l = 0; l < m->num_layers; l++)
        m->moe_layer[l] = m->num_experts > 0;
    if (m->num_experts == 0 || v == NULL)
        return;
    if (v->kind == MF_PV_LIST || v->kind == MF_PV_TUPLE) {
        for (int64_t l = 0; l < m->num_layers && (size_t)l < v->u.seq.n; l++) {
            int64_t x = 1;
            mf_pv_get_int(v->u.seq.items[l], &x);
            m->moe_layer[l] = x != 0;
        }
    } else if (mf_pv_get_int(v, &freq) == 0 && freq > 0) {
        for (int64_t l = 0; l < m->num_layers; l++)
            m->moe_layer[l] = (l % freq) == 0;
    }
}

/* Megatron's is_layer_window_attention (1-based layer numbers): with window_size set, an int
 * window_attn_skip_freq N makes every N-th layer full attention; a list gives each layer
 * (1 = window); none: every layer has the window. */
static int read_window_layers(mf_model *m, const mf_pv *a)
{
    if (!m->window_set)
        return MF_OK;
    m->window_layer = calloc((size_t)m->num_layers, 1);
    if (m->window_layer == NULL)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    const mf_pv *v = mf_pv_dict_get(a, "window_attn_skip_freq");
    int64_t freq = 0;
    int is_list = v && (v->kind == MF_PV_LIST || v->kind == MF_PV_TUPLE);
    if (v && !is_list)
        mf_pv_get_int(v, &freq);
    for (int64_t l = 0; l < m->num_layers; l++) {
        int64_t x = 1;
        if (is_list && (size_t)l < v->u.seq.n)
            mf_pv_get_int(v->u.seq.items[l], &x);
        else if (freq > 0)
            x = (l + 1) % freq != 0;
        m->window_layer[l] = x != 0;
    }
    return MF_OK;
}

int mf_model_read_mixers(mf_model *m, const mf_pv *a, const char *src)
{
    /* Megatron's get_linear_attention_pattern: with experimental_attention_variant=gated_delta_net,
     * linear_attention_freq N makes every N-th layer (1-based) full attention and the others
     * linear attention; a list gives each layer (1 = linear attention). Other variants are
     * refused by name (family_select.c); no variant: every layer is attention (mixer_layer NULL). */
    const char *variant = mf_args_str(a, "experimental_attention_variant");
    free(m->mixer_layer);
    m->mixer_layer = NULL;
    if (variant == NULL || strcmp(variant, "gated_delta_net") != 0 || m->num_layers <= 0)
        return MF_OK;
    const mf_pv *v = mf_pv_dict_get(a, "linear_attention_freq");
    int64_t freq = 0;
    int list = v && (v->kind == MF_PV_LIST || v->kind == MF_PV_TUPLE);
    if (list && (int64_t)v->u.seq.n != m->num_layers)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: linear_attention_freq lists %zu layers, num_layers is %lld", src,
                       v->u.seq.n, (long long)m->num_layers);
    if (!list && (v == NULL || mf_pv_get_int(v, &freq) != 0 || freq <= 0))
        return mf_fail(MF_ERR_INCONSISTENT, "%s: experimental_attention_variant=gated_delta_net needs linear_attention_freq "
                       "(a positive int or a per-layer list)", src);
    if ((m->mixer_layer = calloc((size_t)m->num_layers, 1)) == NULL)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    for (int64_t l = 0; l < m->num_layers; l++) {
        int64_t linear = 0;
        if (list && mf_pv_get_int(v->u.seq.items[l], &linear) != 0)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: linear_attention_freq[%lld] is not 0 or 1", src, (long long)l);
        if (!list)
            linear = (l + 1) % freq != 0;
        m->mixer_layer[l] = (uint8_t)(linear ? MF_MIXER_LINEAR_ATTENTION : MF_MIXER_ATTENTION);
    }
    return MF_OK;
}

/* Gated delta net sizes (only with experimental_attention_variant=gated_delta_net): every head
 * count splits over TP and the value heads group evenly under the key heads (HF repeats each key
 * head for value_heads / key_heads value heads, as Megatron does). */
static int check_gdn_dims(const mf_model *m, const mf_pv *a, const char *src)
{
    const char *variant = mf_args_str(a, "experimental_attention_variant");
    if (variant == NULL || strcmp(variant, "gated_delta_net") != 0)
        return MF_OK;
    const mf_gdn_dims *g = &m->gdn;
    if (g->key_heads <= 0 || g->value_heads <= 0 || g->key_head_dim <= 0 || g->value_head_dim <= 0 ||
        g->conv_kernel <= 0 || g->key_heads > 65536 || g->value_heads > 65536 || g->key_head_dim > 65536 ||
        g->value_head_dim > 65536 || g->conv_kernel > 65536 || g->value_heads % g->key_heads != 0 ||
        g->key_heads % m->tp != 0 || g->value_heads % m->tp != 0)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: args describe an impossible gated delta net (linear_num_key_heads=%lld "
                       "linear_num_value_heads=%lld linear_key_head_dim=%lld linear_value_head_dim=%lld "
                       "linear_conv_kernel_dim=%lld tp=%lld)", src, (long long)g->key_heads, (long long)g->value_heads,
                       (long long)g->key_head_dim, (long long)g->value_head_dim, (long long)g->conv_kernel, (long long)m->tp);
    return MF_OK;
}

static void copy_str(char *dst, size_t n, const char *s, const char *def)
{
    snprintf(dst, n, "%s", s ? s : def);
}

int mf_model_from_args(mf_model *m, const mf_pv *args, const char *arch, const char *src)
{
    const mf_pv *a = args;
    memset(m, 0, sizeof(*m));
    if (a && a->kind == MF_PV_OBJECT)
        a = mf_pv_obj_state(a);
    if (a == NULL || a->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_MISSING, "%s: no usable 'args' (a checkpoint saved without Megatron training args cannot be described)", src);

    /* Required sizes: without them shapes alone cannot determine the model (pitfalls #9). */
    static const char *const required[] = { "num_layers", "hidden_size", "num_attention_heads",
        "padded_vocab_size", "tensor_model_parallel_size", NULL };
    for (int i = 0; required[i]; i++)
        if (!mf_args_is_set(a, required[i]))
            return mf_fail(MF_ERR_MISSING, "%s: args lack '%s'", src, required[i]);

    /* settings no family can express are refused before anything else */
    int rc = mf_family_check_args(NULL, a, src);
    if (rc)
        return rc;

    mf_args_int(a, "num_layers", 0, &m->num_layers);
    mf_args_int(a, "hidden_size", 0, &m->hidden);
    mf_args_int(a, "num_attention_heads", 0, &m->heads);
    mf_args_int(a, "ffn_hidden_size", 4 * m->hidden, &m->ffn);
    m->gqa = mf_args_bool(a, "group_query_attention", 0);
    m->groups = m->heads;
    if (m->gqa)
        mf_args_int(a, "num_query_groups", m->heads, &m->groups);
    mf_args_int(a, "kv_channels", m->heads ? m->hidden / m->heads : 0, &m->head_dim);
    mf_args_int(a, "padded_vocab_size", 0, &m->padded_vocab);
    mf_args_int(a, "vocab_size", 0, &m->vocab);
    if (m->vocab <= 0 || m->vocab > m->padded_vocab)
        m->vocab = m->padded_vocab;
    mf_args_int(a, "max_position_embeddings", 0, &m->max_pos);
    if (m->max_pos == 0)
        mf_args_int(a, "seq_length", 0, &m->max_pos);
    const mf_pv *win = mf_pv_dict_get(a, "window_size");
    m->window_set = win != NULL && win->kind != MF_PV_NONE;
    if (win && (win->kind == MF_PV_TUPLE || win->kind == MF_PV_LIST) && win->u.seq.n > 0)
        mf_pv_get_int(win->u.seq.items[0], &m->window);
    m->norm_eps = mf_args_float(a, "layernorm_epsilon", mf_args_float(a, "norm_epsilon", 1e-5));
    m->rope_theta = mf_args_float(a, "rotary_base", 10000.0);
    m->init_std = mf_args_float(a, "init_method_std", 0.02);
    m->attn_dropout = mf_args_float(a, "attention_dropout", 0.0);
    int swiglu = mf_args_bool(a, "swiglu", 0), geglu = mf_args_bool(a, "quick_geglu", 0);
    m->quick_geglu = geglu && !swiglu;   /* both set: not gpt-oss's activation (which one runs is unclear) */
    m->swiglu = swiglu || geglu;         /* gated fc1 [gate; up] */
    m->glu_offset = mf_args_float(a, "glu_linear_offset", 0.0);
    m->glu_clamp = mf_args_float(a, "activation_func_clamp_value", 0.0);
    const char *softmax = mf_args_str(a, "softmax_type");
    m->learnable_sinks = softmax != NULL && strcmp(softmax, "learnable") == 0;
    const char *pos = mf_args_str(a, "position_embedding_type");
    m->position_yarn = pos != NULL && strcmp(pos, "yarn") == 0;
    mf_args_int(a, "yarn_original_max_position_embeddings", 4096, &m->yarn_orig_max_pos);
    m->yarn_beta_fast = mf_args_float(a, "yarn_beta_fast", 32.0);
    m->yarn_beta_slow = mf_args_float(a, "yarn_beta_slow", 1.0);
    m->yarn_round = mf_args_bool(a, "yarn_correction_range_round_to_int", 1);
    m->add_bias_linear = mf_args_bool(a, "add_bias_linear", 0);
    m->qkv_bias = m->add_bias_linear || mf_args_bool(a, "add_qkv_bias", 0);
    m->qk_norm = mf_args_bool(a, "qk_layernorm", 0);
    m->tied = !mf_args_bool(a, "untie_embeddings_and_output_weights", 0);
    m->use_rope_scaling = mf_args_bool(a, "use_rope_scaling", 0);
    m->rope_scaling_factor = mf_args_float(a, "rope_scaling_factor", 8.0);
    m->seq_interp_factor = mf_args_float(a, "rotary_seq_len_interpolation_factor", 0.0);
    m->rotary_percent = mf_args_float(a, "rotary_percent", 1.0);

    const mf_pv *pd = mf_pv_dict_get(a, "params_dtype");
    m->params_dtype = pd && pd->kind == MF_PV_GLOBAL ? mf_dtype_from_torch(pd->u.global.name) : MF_DT_INVALID;
    if (m->params_dtype == MF_DT_INVALID)
        m->params_dtype = mf_args_bool(a, "bf16", 0) ? MF_DT_BF16 : mf_args_bool(a, "fp16", 0) ? MF_DT_F16 : MF_DT_F32;

    mf_args_int(a, "tensor_model_parallel_size", 1, &m->tp);
    mf_args_int(a, "pipeline_model_parallel_size", 1, &m->pp);
    mf_args_int(a, "virtual_pipeline_model_parallel_size", 1, &m->vpp);
    mf_args_int(a, "expert_model_parallel_size", 1, &m->ep);
    mf_args_int(a, "expert_tensor_parallel_size", m->tp, &m->etp);
    mf_args_int(a, "context_parallel_size", 1, &m->cp);
    mf_args_int(a, "decoder_first_pipeline_num_layers", 0, &m->pp_first);
    mf_args_int(a, "decoder_last_pipeline_num_layers", 0, &m->pp_last);
    m->account_embedding = mf_args_bool(a, "account_for_embedding_in_pipeline_split", 0);
    m->account_loss = mf_args_bool(a, "account_for_loss_in_pipeline_split", 0);
    const char *impl = mf_args_str(a, "transformer_impl");
    m->te_spec = impl == NULL || strcmp(impl, "local") != 0;

    mf_args_int(a, "num_experts", 0, &m->num_experts);
    mf_args_int(a, "moe_ffn_hidden_size", m->ffn, &m->moe_ffn);
    mf_args_int(a, "moe_router_topk", 2, &m->moe_topk);
    mf_args_int(a, "moe_shared_expert_intermediate_size", 0, &m->shared_ffn);
    m->moe_shared_gate = mf_args_bool(a, "moe_shared_expert_gate", 0);
    m->moe_expert_bias = mf_args_bool(a, "moe_router_enable_expert_bias", 0);
    m->moe_pre_softmax = mf_args_bool(a, "moe_router_pre_softmax", 0);
    m->moe_router_bias = m->add_bias_linear;
    mf_args_int(a, "moe_router_num_groups", 0, &m->moe_num_groups);
    mf_args_int(a, "moe_router_group_topk", 0, &m->moe_group_topk);
    m->moe_scaling_factor = mf_args_float(a, "moe_router_topk_scaling_factor", 1.0);
    m->moe_aux_coeff = mf_args_float(a, "moe_aux_loss_coeff", 0.0);
    copy_str(m->score_function, sizeof(m->score_function), mf_args_str(a, "moe_router_score_function"), "softmax");

    m->mla = mf_args_bool(a, "multi_latent_attention", 0);
    mf_mla_dims *d = &m->mla_dims;
    mf_args_int(a, "q_lora_rank", 0, &d->q_lora_rank);
    mf_args_int(a, "kv_lora_rank", 32, &d->kv_lora_rank);
    mf_args_int(a, "qk_head_dim", 128, &d->qk_head_dim);
    mf_args_int(a, "qk_pos_emb_head_dim", 64, &d->qk_pos_dim);
    mf_args_int(a, "v_head_dim", 128, &d->v_head_dim);
    m->yarn.factor = mf_args_float(a, "rotary_scaling_factor", 1.0);
    m->yarn.mscale = mf_args_float(a, "mscale", 1.0);
    m->yarn.mscale_all_dim = mf_args_float(a, "mscale_all_dim", 0.0);
    copy_str(m->yarn.rope_type, sizeof(m->yarn.rope_type), mf_args_str(a, "rope_type"), m->mla ? "yarn" : "rope");
    m->attn_output_gate = mf_args_bool(a, "attention_output_gate", 0);
    m->zero_centered_norm = mf_args_bool(a, "layernorm_zero_centered_gamma", 0) || mf_args_bool(a, "apply_layernorm_1p", 0);
    mf_args_int(a, "linear_num_key_heads", 16, &m->gdn.key_heads);
    mf_args_int(a, "linear_num_value_heads", 32, &m->gdn.value_heads);
    mf_args_int(a, "linear_key_head_dim", 128, &m->gdn.key_head_dim);
    mf_args_int(a, "linear_value_head_dim", 128, &m->gdn.value_head_dim);
    mf_args_int(a, "linear_conv_kernel_dim", 4, &m->gdn.conv_kernel);
    mf_args_int(a, "mtp_num_layers", 0, &m->mtp_layers);
    m->mtp_shown = m->mtp_layers;
    if (m->mla)
        m->groups = m->heads;  /* pitfalls #4: MLA has no KV groups */

    if (m->num_layers <= 0 || m->hidden <= 0 || m->heads <= 0 || m->groups <= 0 || m->head_dim <= 0 ||
        m->heads % m->groups != 0 || m->tp <= 0 || m->pp <= 0 || m->vpp <= 0 || m->ep <= 0 || m->etp <= 0 ||
        m->padded_vocab <= 0 || m->num_layers > 100000 || m->num_experts < 0 || m->num_experts > 100000 ||
        m->mtp_layers < 0 || m->mtp_layers > 64)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: args describe an impossible model (layers=%lld hidden=%lld heads=%lld groups=%lld tp=%lld pp=%lld)",
                       src, (long long)m->num_layers, (long long)m->hidden, (long long)m->heads,
                       (long long)m->groups, (long long)m->tp, (long long)m->pp);
    if (m->num_experts > 0 && m->num_experts % m->ep != 0)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: num_experts=%lld is not divisible by expert_model_parallel_size=%lld",
                       src, (long long)m->num_experts, (long long)m->ep);

    if (!(m->rotary_percent > 0.0 && m->rotary_percent <= 1.0))
        return mf_fail(MF_ERR_INCONSISTENT, "%s: rotary_percent=%g is outside (0, 1]", src, m->rotary_percent);

    if ((rc = check_gdn_dims(m, a, src)) != MF_OK)
        return rc;

    m->moe_layer = calloc((size_t)m->num_layers, 1);
    if (m->moe_layer == NULL)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    read_moe_layer_freq(m, a);
    rc = read_window_layers(m, a);
    if (rc == MF_OK)
        rc = mf_model_read_mixers(m, a, src);
    if (rc != MF_OK) {
        mf_model_free(m);
        return rc;
    }

    if (arch && *arch) {
        m->family = mf_family_find(arch);
        if (m->family == NULL) {
            mf_model_free(m);
            return mf_fail(MF_ERR_INVALID, "unknown arch '%s' (known: %s)", arch, mf_family_names(", "));
        }
    } else {
        m->family = mf_family_detect(m, mf_args_settings(a), a, src);
        if (m->family == NULL) {
            mf_model_free(m);
            return MF_ERR_UNSUPPORTED;
        }
    }
    if ((rc = mf_family_check_args(m->family, a, src)) != 0) {
        mf_model_free(m);
        return rc;
    }
    if ((rc = mf_family_check(m->family, m, arch, src)) != 0) {
        mf_model_free(m);
        return rc;
    }
    return MF_OK;
}

void mf_model_free(mf_model *m)
{
    free(m->moe_layer);
    free(m->mixer_layer);
    free(m->window_layer);
    m->moe_layer = m->mixer_layer = m->window_layer = NULL;
}

int mf_model_apply_options(mf_model *m, const mf_options *o)
{
    if (o->true_vocab_size > m->padded_vocab)
        return mf_fail(MF_ERR_INVALID, "true_vocab_size=%lld is larger than the checkpoint's padded vocab %lld",
                       (long long)o->true_vocab_size, (long long)m->padded_vocab);
    if (o->true_vocab_size > 0)
        m->vocab = o->true_vocab_size;
    if (o->skip_mtp)
        m->mtp_shown = 0;
    m->mtp_head_copies = o->mtp_head_copies;
    return MF_OK;
}
