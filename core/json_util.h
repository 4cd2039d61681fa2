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

#endif
