#ifndef MCOREFS_SOURCE_INDEX_H
#define MCOREFS_SOURCE_INDEX_H
#include "mcorefs/checkpoint.h"
/* Add one shard of a canonical source tensor; duplicates (replicas) only bump `copies`. */
int mf_source_add(mf_checkpoint *c, const char *name, int expert, int n_shards, int shard, const mf_shard *sh);
/* torch_dist: append one chunk of a global grows x gcols tensor. */
int mf_source_add_chunk(mf_checkpoint *c, const char *name, int expert, int64_t grows, int64_t gcols, const mf_shard *sh);
/* Room for n sources at least, so a known count is indexed without regrowing. */
int mf_source_reserve(mf_checkpoint *c, size_t n);
void mf_source_index_free(mf_checkpoint *c);
#endif
