#ifndef MCOREFS_CHECKPOINT_DIST_H
#define MCOREFS_CHECKPOINT_DIST_H
#include "mcorefs/checkpoint.h"
/* c->iter_dir is set; fills files, args, model and the source index from a torch_dist folder. */
int mf_checkpoint_open_dist(mf_checkpoint *c, const mf_options *o);
#endif
