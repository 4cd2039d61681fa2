#ifndef MCOREFS_CANON_H
#define MCOREFS_CANON_H
#include <stddef.h>

typedef struct {
    long long layer_offset, layer_count;  /* this model chunk's global layers */
    long long expert_base;                /* ep_rank * experts per EP rank */
    long long num_layers;                 /* decoder layers (MTP layer k -> num_layers + k) */
    int has_mtp, first_chunk, tied;
} mf_canon_ctx;

typedef struct {
    int skip;            /* _extra_state and friends: never weights */
    int expert;          /* sharded over expert-TP */
    int mtp;
    int replica_copy;    /* a copy kept for sync (stage_copy.*): verifiable, never shown */
    int legacy_grouped;  /* 1: weight1, 2: weight2 — `out` holds a %lld for the expert id */
} mf_canon;

/* Map one local key of a model chunk to its canonical name. 0 ok, -1 malformed key. */
int mf_canon_key(const char *key, const mf_canon_ctx *x, char *out, size_t n, mf_canon *res);
#endif
