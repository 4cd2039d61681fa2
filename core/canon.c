/* Local Megatron state-dict keys -> canonical names: global layer ids, global expert ids,
 * MTP inner layers folded into the decoder numbering (HF layer N+k). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "canon.h"
#include "mcorefs/error.h"

/* Parse a decimal number at *s, advance past it. -1 if none. */
static long long take_num(const char **s)
{
    const char *p = *s;
    long long v = 0;
    if (*p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 100000000)
            return -1;
        p++;
    }
    *s = p;
    return v;
}

/* Within one layer: expert storage layouts -> "mlp.experts.<g>.<rest>". */
static int canon_layer_rest(const char *rest, const mf_canon_ctx *x, char *out, size_t n, mf_canon *res, const char *prefix)
{
    const char *p;
    long long j;
    if (strncmp(rest, "mlp.experts.local_experts.", 26) == 0) {       /* SequentialMLP */
        p = rest + 26;
        if ((j = take_num(&p)) < 0 || *p != '.')
            return -1;
        res->expert = 1;
        snprintf(out, n, "%s.mlp.experts.%lld%s", prefix, x->expert_base + j, p);
        return 0;
    }
    if (strncmp(rest, "mlp.experts.linear_fc", 21) == 0 && (rest[21] == '1' || rest[21] == '2')) {
        p = rest + 22;                                                  /* TEGroupedMLP: weightJ / biasJ */
        const char *kind = NULL;
        if (strncmp(p, ".weight", 7) == 0)
            kind = "weight";
        else if (strncmp(p, ".bias", 5) == 0)
            kind = "bias";
        if (kind) {
            p += 1 + strlen(kind);
            if ((j = take_num(&p)) >= 0 && *p == 0) {
                res->expert = 1;
                snprintf(out, n, "%s.mlp.experts.%lld.linear_fc%c.%s", prefix, x->expert_base + j, rest[21], kind);
                return 0;
            }
        }
    }
    if (strcmp(rest, "mlp.experts.weight1") == 0 || strcmp(rest, "mlp.experts.weight2") == 0) {
        res->legacy_grouped = rest[18] == '1' ? 1 : 2;                  /* split by the caller */
        res->expert = 1;
        snprintf(out, n, "%s.mlp.experts.%%lld.linear_fc%c.weight", prefix, rest[18]);
        return 0;
    }
    snprintf(out, n, "%s.%s", prefix, rest);
    return 0;
}

int mf_canon_key(const char *key, const mf_canon_ctx *x, char *out, size_t n, mf_canon *res)
{
    const char *p;
    long long i;
    char prefix[64];
    memset(res, 0, sizeof(*res));
    if (strstr(key, "._extra_state") || strncmp(key, "_extra_state", 12) == 0) {
        res->skip = 1;
        return 0;
    }
    if (strncmp(key, "decoder.layers.", 15) == 0) {
        p = key + 15;
        if ((i = take_num(&p)) < 0 || *p != '.' || i >= x->layer_count)
            return -1;
        snprintf(prefix, sizeof(prefix), "decoder.layers.%lld", x->layer_offset + i);
        return canon_layer_rest(p + 1, x, out, n, res, prefix);
    }
    if (strncmp(key, "mtp.layers.", 11) == 0) {
        p = key + 11;
        if ((i = take_num(&p)) < 0 || *p != '.' || !x->has_mtp)
            return -1;
        p++;
        long long hf_layer = x->num_layers + i;
        if (strncmp(p, "mtp_model_layer.", 16) == 0 || strncmp(p, "transformer_layer.", 18) == 0) {
            snprintf(prefix, sizeof(prefix), "decoder.layers.%lld", hf_layer);
            res->mtp = 1;
            return canon_layer_rest(strchr(p, '.') + 1, x, out, n, res, prefix);
        }
        res->mtp = 1;
        snprintf(out, n, "mtp.layers.%lld.%s", hf_layer, p);
        return 0;
    }
    if (strcmp(key, "embedding.word_embeddings.weight") == 0 && !x->first_chunk) {
        /* the MTP / tied-head stage keeps its own synchronized copy (pitfalls #8) */
        snprintf(out, n, "stage_copy.%s", key);
        res->replica_copy = 1;
        return 0;
    }
    if (strcmp(key, "output_layer.weight") == 0 && x->tied) {
        snprintf(out, n, "stage_copy.%s", key);
        res->replica_copy = 1;
        return 0;
    }
    snprintf(out, n, "%s", key);
    return 0;
}
