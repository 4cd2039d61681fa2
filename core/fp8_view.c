/* Which HF tensors the FP8 view quantizes, and the view's tensor list with their scales.
 * The rule follows DeepSeek-V3's release (inference/fp8_cast_bf16.py dequantizes exactly the
 * weights that have a "_scale_inv" companion) and transformers' fine-grained FP8 integration:
 * the linear layers of attention and of every MLP / expert / shared expert are FP8; embeddings,
 * lm_head, norms, the router (mlp.gate), e_score_correction_bias, biases and MTP's eh_proj
 * keep their dtype. Only 2-D weights: stacked expert tensors ([E, rows, cols], gpt-oss) and
 * linear attention's projections (Qwen3-Next) are left as they are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "fp8_state.h"
#include "json_util.h"
#include "mcorefs/error.h"
#include "mcorefs/view.h"

/* A weight is FP8 when its name starts with "model.layers.", contains `within` and ends with
 * `suffix`. */
static const struct {
    const char *within, *suffix;
} fp8_rules[] = {
    { "", ".self_attn.q_proj.weight" },
    { "", ".self_attn.k_proj.weight" },
    { "", ".self_attn.v_proj.weight" },
    { "", ".self_attn.o_proj.weight" },
    { "", ".self_attn.q_a_proj.weight" },             /* MLA */
    { "", ".self_attn.q_b_proj.weight" },
    { "", ".self_attn.kv_a_proj_with_mqa.weight" },
    { "", ".self_attn.kv_b_proj.weight" },
    { ".mlp.", ".gate_proj.weight" },                 /* dense, experts.{E}, shared_expert(s) */
    { ".mlp.", ".up_proj.weight" },
    { ".mlp.", ".down_proj.weight" },
    { ".block_sparse_moe.experts.", ".w1.weight" },   /* Mixtral */
    { ".block_sparse_moe.experts.", ".w2.weight" },
    { ".block_sparse_moe.experts.", ".w3.weight" },
};

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int mf_fp8_name_quantized(const char *name)
{
    if (strncmp(name, "model.layers.", 13) != 0)
        return 0;
    for (size_t i = 0; i < sizeof(fp8_rules) / sizeof(fp8_rules[0]); i++)
        if (ends_with(name, fp8_rules[i].suffix) && strstr(name, fp8_rules[i].within))
            return 1;
    return 0;
}

static int quantized(const mf_hf_tensor *t)
{
    return t->ndim == 2 && mf_dtype_is_float(t->src_dtype) && mf_fp8_name_quantized(t->name);
}

static int64_t blocks(int64_t n)
{
    return (n + MF_FP8_BLOCK - 1) / MF_FP8_BLOCK;
}

/* The scale tensor of weight w (index wi). */
static int make_scale(const mf_hf_tensor *w, uint32_t wi, mf_hf_tensor *out)
{
    *out = *w;
    size_t n = strlen(w->name);
    out->name = malloc(n + sizeof("_scale_inv"));
    out->pieces = malloc((w->n_pieces ? w->n_pieces : 1) * sizeof(mf_piece));
    if (!out->name || !out->pieces) {
        free(out->name);
        free(out->pieces);
        return mf_fail(MF_ERR_NOMEM, "out of memory (FP8 view)");
    }
    memcpy(out->name, w->name, n);
    memcpy(out->name + n, "_scale_inv", sizeof("_scale_inv"));
    /* the weight's pieces: where its bytes come from (manifest, inspect, permissions) */
    memcpy(out->pieces, w->pieces, w->n_pieces * sizeof(mf_piece));
    out->dtype = MF_DT_F32;
    out->shape[0] = blocks(w->shape[0]);
    out->shape[1] = blocks(w->shape[1]);
    out->nbytes = (uint64_t)out->shape[0] * (uint64_t)out->shape[1] * 4u;
    out->quant = MF_TQ_FP8_SCALE;
    out->quant_peer = wi;
    return MF_OK;
}

int mf_fp8_add_to_view(mf_session *s)
{
    if (s->opts.quant == MF_QUANT_NONE)
        return MF_OK;
    mf_mapping *m = &s->map;
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        const mf_hf_tensor *t = &m->tensors[i];
        if (!quantized(t))
            continue;
        if ((uint64_t)t->shape[1] * MF_FP8_BLOCK * mf_dtype_size(t->src_dtype) > MF_FP8_MAX_BLOCK_ROW_BYTES)
            return mf_fail(MF_ERR_LIMIT, "%s: %lld columns are too wide for the FP8 view (a 128-row source block "
                           "would be over %u MiB)", t->name, (long long)t->shape[1], MF_FP8_MAX_BLOCK_ROW_BYTES >> 20);
        k++;
    }
    struct mf_fp8_state *st = calloc(1, sizeof(*st));
    mf_hf_tensor *nt = calloc(m->n + k + 1, sizeof(*nt));
    if (st) {
        st->cache = mf_fp8_cache_new(MF_FP8_CACHE_BYTES);
        st->rows = mf_fp8_cache_new(MF_FP8_ROWS_CACHE_BYTES);
    }
    if (!st || !st->cache || !st->rows || !nt) {
        mf_fp8_state_free(st);
        free(nt);
        return mf_fail(MF_ERR_NOMEM, "out of memory (FP8 view)");
    }
    st->mode = (mf_quant)s->opts.quant;
    size_t j = 0;
    for (size_t i = 0; i < m->n; i++) {
        nt[j] = m->tensors[i];
        nt[j].quant = MF_TQ_NONE;
        if (!quantized(&nt[j])) {
            j++;
            continue;
        }
        mf_hf_tensor *w = &nt[j];
        w->dtype = MF_DT_F8_E4M3;
        w->nbytes = (uint64_t)w->shape[0] * (uint64_t)w->shape[1];
        w->quant = MF_TQ_FP8_WEIGHT;
        w->quant_peer = (uint32_t)(j + 1);
        if (make_scale(w, (uint32_t)j, &nt[j + 1]) != MF_OK) {
            for (size_t q = 0; q < j; q++)   /* the scale tensors made so far own their copies */
                if (nt[q].quant == MF_TQ_FP8_SCALE) {
                    free(nt[q].name);
                    free(nt[q].pieces);
                }
            free(nt);
            mf_fp8_state_free(st);
            return MF_ERR_NOMEM;
        }
        j += 2;
    }
    free(m->tensors);
    m->tensors = nt;
    m->n = j;
    m->total_bytes = 0;
    for (size_t i = 0; i < m->n; i++)
        m->total_bytes += m->tensors[i].nbytes;
    s->fp8 = st;
    return MF_OK;
}

void mf_fp8_state_free(struct mf_fp8_state *st)
{
    if (!st)
        return;
    mf_fp8_cache_free(st->cache);
    mf_fp8_cache_free(st->rows);
    free(st);
}

/* As DeepSeek-V3 publishes it (V3.1 adds scale_fmt "ue8m0"); transformers' FineGrainedFP8Config
 * and vLLM's Fp8Config read these keys. */
struct cJSON *mf_fp8_quantization_config(mf_quant q)
{
    if (q == MF_QUANT_NONE)
        return NULL;
    cJSON *qc = cJSON_CreateObject();
    mf_json_str(qc, "activation_scheme", "dynamic");
    mf_json_str(qc, "fmt", "e4m3");
    mf_json_str(qc, "quant_method", "fp8");
    if (q == MF_QUANT_FP8_UE8M0)
        mf_json_str(qc, "scale_fmt", "ue8m0");
    cJSON *bs = cJSON_CreateArray();
    cJSON_AddItemToArray(bs, cJSON_CreateNumber(MF_FP8_BLOCK));
    cJSON_AddItemToArray(bs, cJSON_CreateNumber(MF_FP8_BLOCK));
    mf_json_set(qc, "weight_block_size", bs);
    return qc;
}
