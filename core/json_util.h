/* cJSON helpers that keep Python/transformers types exact: floats always carry a '.' or an
 * exponent (transformers v5 @strict configs reject 1 for a float field). */
#ifndef MCOREFS_JSON_UTIL_H
#define MCOREFS_JSON_UTIL_H

#include <stdint.h>
#include <cjson/cJSON.h>

void mf_json_float(cJSON *o, const char *key, double v);
void mf_json_int(cJSON *o, const char *key, int64_t v);
void mf_json_bool(cJSON *o, const char *key, int v);
void mf_json_str(cJSON *o, const char *key, const char *v);
void mf_json_null(cJSON *o, const char *key);
/* Replace (or add) key with item, keeping the position of an existing key. */
void mf_json_set(cJSON *o, const char *key, cJSON *item);
/* Shortest text that reads back as the same double, with a '.' or exponent. */
void mf_format_float(double v, char *buf, size_t n);

/* Appending JSON text directly, for documents with tens of thousands of entries (safetensors
 * headers) where building a cJSON tree costs a dozen allocations per entry. */
typedef struct {
    char *p;
    size_t n, cap;
    int failed;  /* out of memory: p is freed and stays NULL */
} mf_jbuf;
void mf_jbuf_add(mf_jbuf *b, const char *s, size_t n);
void mf_jbuf_reserve(mf_jbuf *b, size_t n);  /* room for n more bytes */
void mf_jbuf_printf(mf_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A quoted JSON string, escaped as cJSON escapes it. */
void mf_jbuf_str(mf_jbuf *b, const char *s);

#endif
