/* torch_dist's lazy chunk table (reader-private, owned by the checkpoint): every chunk of
 * .metadata, and once its embedded torch.save archive has been parsed, where its data is.
 * The mapping and the gather engine see const shards only; mf_shard_locate completes a shard's
 * tensor from this table, reading each chunk's archive once, on first use. */
#ifndef MCOREFS_DIST_CHUNKS_H
#define MCOREFS_DIST_CHUNKS_H
#include <stddef.h>
#include "mcorefs/checkpoint.h"
#include "mcorefs/dcp.h"

typedef struct mf_dist_chunks mf_dist_chunks;

/* A table for up to cap chunks of dcp, read through files (both must outlive it). NULL when
 * out of memory. */
mf_dist_chunks *mf_dist_chunks_new(const mf_dcp *dcp, const mf_rankfile *files, size_t cap);
void mf_dist_chunks_free(mf_dist_chunks *all);
/* Registers chunk ch of tensor t, whose first np axes are stacked (layer, expert) axes; NULL
 * when the table is full. Shards point at the returned chunk. */
struct mf_dist_chunk *mf_dist_chunks_add(mf_dist_chunks *all, const mf_dcp_tensor *t, const mf_dcp_chunk *ch, int np);
/* How many chunks the table holds. */
size_t mf_dist_chunks_count(const mf_dist_chunks *all);
#endif
