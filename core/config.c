/* config.json: the fields every family shares, the family's own, then the user's overlay. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "json_util.h"
#include "mcorefs/error.h"
#include "mcorefs/view.h"

static char *read_small_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        mf_fail(MF_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max) {
        free(buf);
        mf_fail(MF_ERR_LIMIT, "%s: larger than %zu bytes", path, max);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

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
    mf_json_str(c, "hidden_act", "silu");
    mf_json_int(c, "max_position_embeddings", m->max_pos);
    mf_json_float(c, "rms_norm_eps", m->norm_eps);
    mf_json_float(c, "rope_theta", m->rope_theta);
    mf_json_bool(c, "tie_word_embeddings", m->tied);
    mf_json_str(c, "torch_dtype", mf_dtype_torch_name(m->params_dtype));
    mf_json_bool(c, "use_cache", 1);
    mf_json_float(c, "initializer_range", m->init_std);
    mf_json_float(c, "attention_dropout", m->attn_dropout);
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

char *mf_config_build(const mf_checkpoint *ck, const mf_options *o)
{
    const mf_model *m = &ck->model;
    cJSON *c = cJSON_CreateObject();
    add_common(m, c);
    if (m->family->config)
        m->family->config(m, c);
    if (o->dtype != MF_DT_INVALID)
        mf_json_str(c, "torch_dtype", mf_dtype_torch_name(o->dtype));
    if (o->hf_config) {
        char *text = read_small_file(o->hf_config, 16u << 20);
        if (!text) {
            cJSON_Delete(c);
            return NULL;
        }
        cJSON *user = cJSON_Parse(text);
        free(text);
        if (!cJSON_IsObject(user)) {
            cJSON_Delete(user);
            cJSON_Delete(c);
            mf_fail(MF_ERR_FORMAT, "%s: hf_config must be a JSON object", o->hf_config);
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
    char *out = cJSON_Print(c);
    cJSON_Delete(c);
    if (!out)
        mf_fail(MF_ERR_NOMEM, "out of memory (config.json)");
    return out;
}
