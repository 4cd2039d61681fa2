/* config.json: the fields every family shares (with the family row's activation and rope
 * scaling), the family's own, then the user's overlay. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "json_python.h"
#include "json_util.h"
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"
#include "mcorefs/recipe.h"
#include "mcorefs/view.h"
#include "small_file.h"

static void add_common(const mf_model *m, cJSON *c)
{
    cJSON *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString(m->family->architecture));
    mf_json_set(c, "architectures", arch);
    mf_json_str(c, "model_type", m->family->model_type);
    mf_json_int(c, "vocab_size", m->vocab);
    mf_json_int(c, "hidden_size", m->hidden);
    mf_json_int(c, "intermediate_size", m->ffn);
    mf_json_int(c, "num_hidden_layers", m->num_layers);
    mf_json_int(c, "num_attention_heads", m->heads);
    mf_json_int(c, "num_key_value_heads", m->groups);
    mf_json_str(c, "hidden_act", m->family->hidden_act);
    mf_json_int(c, "max_position_embeddings", m->max_pos);
    mf_json_float(c, "rms_norm_eps", m->norm_eps);
    mf_json_float(c, "rope_theta", m->rope_theta);
    mf_json_bool(c, "tie_word_embeddings", m->tied);
    mf_json_str(c, "torch_dtype", mf_dtype_torch_name(m->params_dtype));
    mf_json_bool(c, "use_cache", 1);
    mf_json_float(c, "initializer_range", m->init_std);
    mf_json_float(c, "attention_dropout", m->attn_dropout);
    m->family->rope_scaling(m, c);
}

void mf_config_rope_megatron(const mf_model *m, cJSON *c)
{
    if (m->use_rope_scaling) {
        cJSON *rs = cJSON_CreateObject();
        mf_json_str(rs, "rope_type", "llama3");
        mf_json_float(rs, "factor", m->rope_scaling_factor);
        mf_json_float(rs, "low_freq_factor", 1.0);
        mf_json_float(rs, "high_freq_factor", 4.0);
        mf_json_int(rs, "original_max_position_embeddings", 8192);
        mf_json_set(c, "rope_scaling", rs);
    } else if (m->seq_interp_factor > 1.0) {
        cJSON *rs = cJSON_CreateObject();
        mf_json_str(rs, "rope_type", "linear");
        mf_json_float(rs, "factor", m->seq_interp_factor);
        mf_json_set(c, "rope_scaling", rs);
    } else {
        mf_json_null(c, "rope_scaling");
    }
}

/* The user's -o hf_config JSON object, read once at mount, numbers kept as written. */
static cJSON *load_overlay(const char *path, struct stat *st)
{
    char *text = NULL;
    size_t len = 0;
    if (mf_small_file_load(AT_FDCWD, path, path, &text, &len, st) != MF_OK)
        return NULL;
    cJSON *user = strlen(text) == len ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(user)) {
        mf_fail(MF_ERR_FORMAT, "%s: hf_config must be a JSON object", path);
    } else if (mf_json_keep_numbers(user, text) != MF_OK) {
        mf_fail(MF_ERR_FORMAT, "%s: hf_config: a number could not be read as written", path);
    } else {
        free(text);
        return user;
    }
    cJSON_Delete(user);
    free(text);
    return NULL;
}

char *mf_config_build(const mf_checkpoint *ck, const mf_options *o, struct stat *hf_config_st)
{
    const mf_model *m = &ck->model;
    cJSON *c = cJSON_CreateObject();
    add_common(m, c);
    if (m->family->config)
        m->family->config(m, c);
    if (o->dtype != MF_DT_INVALID)
        mf_json_str(c, "torch_dtype", mf_dtype_torch_name(o->dtype));
    if (o->quant != MF_QUANT_NONE)
        mf_json_set(c, "quantization_config", mf_fp8_quantization_config((mf_quant)o->quant));
    if (o->hf_config) {
        cJSON *user = load_overlay(o->hf_config, hf_config_st);
        if (!user) {
            cJSON_Delete(c);
            return NULL;
        }
        cJSON *item = user->child;
        while (item) {
            cJSON *next = item->next;
            char *key = strdup(item->string ? item->string : "");
            cJSON_DetachItemViaPointer(user, item);
            mf_json_set(c, key, item);   /* cJSON frees item->string while renaming: pass a copy */
            free(key);
            item = next;
        }
        cJSON_Delete(user);
    }
    char *out = mf_json_print_python(c);   /* as transformers' save_pretrained writes it */
    cJSON_Delete(c);
    if (!out)
        mf_fail(MF_ERR_NOMEM, "out of memory (config.json)");
    return out;
}
