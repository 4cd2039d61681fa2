#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json_util.h"

void mf_format_float(double v, char *buf, size_t n)
{
    if (buf == NULL || n < 8)
        return;
    if (!isfinite(v)) {
        snprintf(buf, n, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e16) {   /* as Python prints it: 10000.0, not 1e+04 */
        snprintf(buf, n, "%.1f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (strpbrk(buf, ".eE") == NULL && strlen(buf) + 3 < n)
        strcat(buf, ".0");
}

void mf_json_set(cJSON *o, const char *key, cJSON *item)
{
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, item);
    else
        cJSON_AddItemToObject(o, key, item);
}

void mf_json_float(cJSON *o, const char *key, double v)
{
    char buf[64];
    mf_format_float(v, buf, sizeof(buf));
    mf_json_set(o, key, cJSON_CreateRaw(buf));
}

void mf_json_int(cJSON *o, const char *key, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    mf_json_set(o, key, cJSON_CreateRaw(buf));
}

void mf_json_bool(cJSON *o, const char *key, int v) { mf_json_set(o, key, cJSON_CreateBool(v)); }
void mf_json_str(cJSON *o, const char *key, const char *v) { mf_json_set(o, key, cJSON_CreateString(v)); }
void mf_json_null(cJSON *o, const char *key) { mf_json_set(o, key, cJSON_CreateNull()); }
