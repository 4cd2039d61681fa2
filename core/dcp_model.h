/* DCP saves of a model's plain state dict: Megatron's --ckpt-format torch_dcp (Torch FSDP2) and
 * fsdp_dtensor (Megatron-FSDP). Both are torch.distributed.checkpoint.save of
 * {"args": Namespace, "model": model.state_dict(), ...}: the weights are DTensors under
 * "model.<key>" (fsdp_dtensor: "model.module.<key>") with per-layer, per-expert keys and global
 * shapes, the args a bytes item "args". fsdp_dtensor splits a gated fc1 into "<key>_w" (gate)
 * and "<key>_v" (up). Megatron's torch_dist keys have no "model." prefix. */
#ifndef MCOREFS_DCP_MODEL_H
#define MCOREFS_DCP_MODEL_H
#include <stddef.h>
#include "mcorefs/dcp.h"
#include "mcorefs/model.h"

typedef enum { MF_DCP_TORCH_DIST, MF_DCP_TORCH_DCP, MF_DCP_FSDP_DTENSOR } mf_dcp_layout;

/* Which save .metadata describes (from its tensor keys). */
mf_dcp_layout mf_dcp_layout_of(const mf_dcp *d);
const char *mf_dcp_layout_name(mf_dcp_layout l);

typedef struct {
    int skip;          /* not a model weight: optimizer state, _extra_state, other top-level items */
    int expert;        /* a routed expert's weight */
    int replica_copy;  /* a tied output layer's copy (stage_copy.*) */
    int half;          /* fsdp_dtensor gated fc1: 0 whole, 1 gate ("_w"), 2 up ("_v") */
} mf_dcp_model_key;

/* The canonical source name of one .metadata key of a torch_dcp / fsdp_dtensor save: global
 * layer and expert ids (keys already carry them: these saves need pp = 1). 0, or -1 when the
 * key does not fit the model (a layer or MTP index out of range, an unknown expert layout). */
int mf_dcp_model_canon(const char *fqn, const mf_model *m, char *out, size_t n, mf_dcp_model_key *k);

/* For a gated fc1 half (k->half != 0): the fqn of its other half, in out. */
void mf_dcp_model_partner(const char *fqn, char *out, size_t n);
#endif
