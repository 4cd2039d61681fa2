#ifndef MCOREFS_CHECKPOINT_DIST_H
#define MCOREFS_CHECKPOINT_DIST_H
#include "mcorefs/checkpoint.h"
/* c->iter_dir is set; fills files, args, model and the source index from a torch_dist folder. */
int mf_checkpoint_open_dist(mf_checkpoint *c, const mf_options *o);
/* Frees what open_dist added beyond the common fields (safe when there is nothing). */
void mf_checkpoint_dist_free(mf_checkpoint *c);
#endif
