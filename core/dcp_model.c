/* torch_dcp / fsdp_dtensor keys -> canonical source names (see dcp_model.h). The state-dict key
 * under the "model." (and Megatron-FSDP's "module.") prefixes is what the legacy format stores
 * per rank, with global layer and expert ids: the legacy key mapping (canon.c) names it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "canon.h"
#include "dcp_model.h"

/* The state-dict key after "model." and any number of wrapper "module." prefixes; NULL if the
 * fqn is not under "model.". */
static const char *model_key(const char *fqn)
{
    if (strncmp(fqn, "model.", 6) != 0)
        return NULL;
    const char *p = fqn + 6;
    while (strncmp(p, "module.", 7) == 0)
        p += 7;
    return p;
}

mf_dcp_layout mf_dcp_layout_of(const mf_dcp *d)
{
    size_t model = 0, wrapped = 0;
    for (size_t i = 0; i < d->n_tensors; i++) {
        const char *f = d->tensors[i].fqn;
        model += strncmp(f, "model.", 6) == 0;
        wrapped += strncmp(f, "model.module.", 13) == 0;
    }
    if (model == 0)
        return MF_DCP_TORCH_DIST;
    return wrapped ? MF_DCP_FSDP_DTENSOR : MF_DCP_TORCH_DCP;
}

const char *mf_dcp_layout_name(mf_dcp_layout l)
{
    switch (l) {
    case MF_DCP_TORCH_DCP: return "torch_dcp";
    case MF_DCP_FSDP_DTENSOR: return "fsdp_dtensor";
    case MF_DCP_TORCH_DIST: break;
    }
    return "torch_dist";
}

/* "...linear_fc1.weight[J]_w" / "_v" (also bias): Megatron-FSDP's split of a gated fc1 into its
 * gate and up halves (handle_swiglu_in_state_dict). 1 gate, 2 up, 0 none. */
static int gated_half(const char *key)
{
    size_t n = strlen(key);
    if (n < 3 || key[n - 2] != '_' || (key[n - 1] != 'w' && key[n - 1] != 'v'))
        return 0;
    const char *fc1 = NULL;
    for (const char *p = strstr(key, "linear_fc1."); p; p = strstr(p + 1, "linear_fc1."))
        fc1 = p;
    if (!fc1)
        return 0;
    const char *p = fc1 + 11;
    if (strncmp(p, "weight", 6) == 0)
        p += 6;
    else if (strncmp(p, "bias", 4) == 0)
        p += 4;
    else
        return 0;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p != key + n - 2)
        return 0;
    return key[n - 1] == 'w' ? 1 : 2;
}

int mf_dcp_model_canon(const char *fqn, const mf_model *m, char *out, size_t n, mf_dcp_model_key *k)
{
    memset(k, 0, sizeof *k);
    const char *key = model_key(fqn);
    if (!key || strstr(key, "_extra_state")) {
        k->skip = 1;
        return 0;
    }
    char base[512];
    if (snprintf(base, sizeof base, "%s", key) >= (int)sizeof base)
        return -1;
    if ((k->half = gated_half(base)) != 0)
        base[strlen(base) - 2] = '\0';
    if (strncmp(base, "mtp.layers.", 11) == 0) {
        char *end;
        long long i = strtoll(base + 11, &end, 10);
        if (end == base + 11 || *end != '.' || i < 0 || i >= m->mtp_layers)
            return -1;
    }
    mf_canon_ctx x = { .layer_offset = 0, .layer_count = m->num_layers, .expert_base = 0,
                       .num_layers = m->num_layers, .has_mtp = m->mtp_layers > 0, .first_chunk = 1, .tied = m->tied };
    mf_canon res;
    if (mf_canon_key(base, &x, out, n, &res) != 0 || res.legacy_grouped)
        return -1;
    k->skip = res.skip;
    k->expert = res.expert;
    k->replica_copy = res.replica_copy;
    return 0;
}

void mf_dcp_model_partner(const char *fqn, char *out, size_t n)
{
    snprintf(out, n, "%s", fqn);
    size_t len = strlen(out);
    if (len >= 2 && out[len - 2] == '_')
        out[len - 1] = out[len - 1] == 'w' ? 'v' : 'w';
}
