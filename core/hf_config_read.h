/* Reading an HF config.json's values for describing a save without Megatron's args
 * (hf_describe.c, hf_describe_more.c): typed getters whose errors name the file and the key. */
#ifndef MCOREFS_HF_CONFIG_READ_H
#define MCOREFS_HF_CONFIG_READ_H
#include <stdint.h>
#include <cjson/cJSON.h>

typedef struct {
    const cJSON *root;
    const char *path;
} mf_hf;

/* The value of key, NULL when absent or JSON null. */
const cJSON *mf_hf_get(const mf_hf *h, const char *key);
/* 1 and *out when key is a whole number in [0, 2^40]; 0 when absent (*out = def); or
 * MF_ERR_FORMAT (message set). */
int mf_hf_get_int(const mf_hf *h, const char *key, int64_t def, int64_t *out);
/* MF_OK and *out, or an error (message set) when absent or not a whole number. */
int mf_hf_need_int(const mf_hf *h, const char *key, int64_t *out);
/* MF_OK (present or absent: *out = def) or the error of a value that is not a whole number. */
int mf_hf_opt_int(const mf_hf *h, const char *key, int64_t def, int64_t *out);
double mf_hf_float(const mf_hf *h, const char *key, double def);
int mf_hf_bool(const mf_hf *h, const char *key, int def);
const char *mf_hf_str(const mf_hf *h, const char *key);
/* HF's rope_scaling type ("rope_type", older configs "type"), "" when no rope_scaling. */
const char *mf_hf_rope_type(const mf_hf *h);
/* MF_ERR_UNSUPPORTED naming the key, its value and why Megatron's args cannot express it. */
int mf_hf_refuse(const mf_hf *h, const char *key, const char *why);
#endif
