/* Typed reads of an HF config (see hf_config_read.h). */
#include <stdio.h>
#include <string.h>
#include "hf_config_read.h"
#include "mcorefs/error.h"

const cJSON *mf_hf_get(const mf_hf *h, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(h->root, key);
    return cJSON_IsNull(v) ? NULL : v;
}

int mf_hf_get_int(const mf_hf *h, const char *key, int64_t def, int64_t *out)
{
    const cJSON *v = mf_hf_get(h, key);
    *out = def;
    if (!v)
        return 0;
    /* whole numbers up to 2^40: sizes beyond any model (and no overflowing casts) are refused */
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1099511627776.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return mf_fail(MF_ERR_FORMAT, "%s: hf_config '%s' is not a whole number in [0, 2^40]", h->path, key);
    *out = (int64_t)v->valuedouble;
    return 1;
}

int mf_hf_need_int(const mf_hf *h, const char *key, int64_t *out)
{
    int r = mf_hf_get_int(h, key, 0, out);
    if (r == 0)
        return mf_fail(MF_ERR_MISSING, "%s: hf_config lacks '%s' (needed to describe a save without Megatron's args)", h->path, key);
    return r < 0 ? r : MF_OK;
}

int mf_hf_opt_int(const mf_hf *h, const char *key, int64_t def, int64_t *out)
{
    int r = mf_hf_get_int(h, key, def, out);
    return r < 0 ? r : MF_OK;
}

double mf_hf_float(const mf_hf *h, const char *key, double def)
{
    const cJSON *v = mf_hf_get(h, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

int mf_hf_bool(const mf_hf *h, const char *key, int def)
{
    const cJSON *v = mf_hf_get(h, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

const char *mf_hf_str(const mf_hf *h, const char *key)
{
    const cJSON *v = mf_hf_get(h, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *mf_hf_rope_type(const mf_hf *h)
{
    const cJSON *rs = mf_hf_get(h, "rope_scaling");
    if (!rs)
        return "";
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t))
        t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    return cJSON_IsString(t) ? t->valuestring : "?";
}

int mf_hf_refuse(const mf_hf *h, const char *key, const char *why)
{
    const cJSON *v = mf_hf_get(h, key);
    char *text = v ? cJSON_PrintUnformatted(v) : NULL;
    int rc = mf_fail(MF_ERR_UNSUPPORTED, "%s: hf_config '%s' = %.200s cannot be described as Megatron args: %s", h->path, key,
                     text ? text : "(absent)", why);
    cJSON_free(text);
    return rc;
}
