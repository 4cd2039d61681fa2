#include <math.h>
#include <stdarg.h>
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

void mf_jbuf_reserve(mf_jbuf *b, size_t n)
{
    if (b->failed || b->cap - b->n >= n + 1)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->n < n + 1)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
        free(b->p);
        *b = (mf_jbuf){.failed = 1};
        return;
    }
    b->p = np;
    b->cap = cap;
}

void mf_jbuf_add(mf_jbuf *b, const char *s, size_t n)
{
    mf_jbuf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void mf_jbuf_printf(mf_jbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) { /* only short numeric fragments go through here */
        free(b->p);
        *b = (mf_jbuf){.failed = 1};
        return;
    }
    mf_jbuf_add(b, tmp, (size_t)n);
}

void mf_jbuf_str(mf_jbuf *b, const char *s)
{
    mf_jbuf_add(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 32) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (esc) {
            mf_jbuf_add(b, run, (size_t)(s - run));
            mf_jbuf_add(b, esc, strlen(esc));
            run = s + 1;
        }
    }
    mf_jbuf_add(b, run, (size_t)(s - run));
    mf_jbuf_add(b, "\"", 1);
}
