/* Every source tensor must have exactly the shape the args imply for its rank: one place that
 * computes the expected global and per-rank shapes (by rule dims and split kind) and checks
 * a source's shards (torch) or its .metadata global shape (torch_dist) against them. */
#ifndef MCOREFS_SHAPE_CHECK_H
#define MCOREFS_SHAPE_CHECK_H

#include <stdint.h>
#include "mcorefs/checkpoint.h"
#include "mcorefs/recipe.h"

typedef struct {
    int ndim;          /* 1 or 2 (3: conv1d [channels, 1, kernel]) */
    int64_t d[3];
} mf_shape;

/* Size of one dimension from the args (0 for MF_D_NONE). */
int64_t mf_dim_size(const mf_model *m, mf_dim dim);

/* The global (unsharded) shape of the source tensor a rule reads. */
mf_shape mf_shape_global(const mf_model *m, const mf_rule *r);

/* The shape each of n shards must have under split (MF_SPLIT_AUTO0: the split case). MF_OK, or
 * MF_ERR_INCONSISTENT (message set, naming `name`) when the args do not divide evenly over n. */
int mf_shape_shard(const mf_model *m, mf_split split, const mf_shape *global, int n, const char *name,
                   mf_shape *out);

/* Check every present shard of s (torch) or its global shape (torch_dist) for rule r. MF_OK, or
 * MF_ERR_INCONSISTENT with one message: file, tensor, shape seen, shape expected. */
int mf_shape_check_source(const mf_checkpoint *c, const mf_rule *r, const mf_source *s);

/* torch_dist: one section key of a sectioned tensor (MF_TP_SECTIONS) must have the rule's
 * global shape with `rows` (the section's global rows) in place of the first dim. */
int mf_shape_check_section_key(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, int64_t rows);

#endif
