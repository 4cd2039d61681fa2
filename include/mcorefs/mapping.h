/* The HF tensors of the view, each with its recipe (pieces over source shards). */
#ifndef MCOREFS_MAPPING_H
#define MCOREFS_MAPPING_H

#include <stdint.h>
#include "mcorefs/checkpoint.h"
#include "mcorefs/recipe.h"

#define MF_HF_MAX_DIMS 4

typedef struct {
    char *name;
    mf_dtype dtype;        /* dtype shown in the view */
    mf_dtype src_dtype;    /* dtype of the source shards */
    int ndim;              /* 1 .. MF_HF_MAX_DIMS */
    int64_t shape[MF_HF_MAX_DIMS];
    uint64_t nbytes;       /* shown bytes */
    mf_piece *pieces;
    uint32_t n_pieces;
    int32_t layer;         /* HF layer index, -1 for embed / norm / head */
    uint8_t mtp;
    mf_split split;
    float add;             /* added to every value on read (norm conventions, MF_SPLIT_NORM_*); 0: none */
    const mf_source *source;  /* where it comes from (for inspect / manifest) */
    /* placement, filled by the view */
    uint32_t file;
    uint64_t offset;       /* from the start of the file's data section */
    /* -o quant=fp8 (core/fp8_view.c): MF_TQ_* kind, and the index of the weight's scale tensor
     * or of the scale's weight */
    uint8_t quant;
    uint32_t quant_peer;
} mf_hf_tensor;

typedef struct {
    mf_hf_tensor *tensors;
    size_t n;
    uint64_t total_bytes;
    uint64_t num_params;
} mf_mapping;

/* Expand the family's rules over the checkpoint. Fails when a needed source tensor is missing,
 * when shapes contradict the args, or when a source tensor is left that no rule explains. */
int mf_mapping_build(mf_mapping *mp, mf_checkpoint *c, const mf_options *o);
void mf_mapping_free(mf_mapping *mp);

/* An HF tensor of any rank as the gather engine sees it: a matrix whose columns are the last
 * dimension and whose rows are all the others (1 column for a 1-D tensor). */
static inline int64_t mf_hf_cols(const mf_hf_tensor *t)
{
    return t->ndim >= 2 ? t->shape[t->ndim - 1] : 1;
}
const char *mf_split_name(mf_split s);

/* The kind of layer l (HF numbering; MTP layers follow the decoder layers and are built like
 * the last decoder layer). */
mf_layer_kind mf_layer_kind_of(const mf_model *m, int64_t l);

#endif
