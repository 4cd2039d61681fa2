/* Integrity checks that read every byte: replicas agree, and per-tensor hashes. */
#ifndef MCOREFS_VERIFY_H
#define MCOREFS_VERIFY_H

#include <stdint.h>
#include "mcorefs/view.h"

typedef struct {
    uint64_t copies_compared;   /* replica pairs hashed and compared */
    uint64_t mismatches;
    uint64_t bytes_hashed;
    char first_mismatch[512];
} mf_verify_report;

/* Locate every source shard: for torch_dist this reads each chunk's embedded archive (the mount
 * reads them only on first use) and checks it against .metadata. MF_OK or the first error. */
int mf_verify_sources(mf_session *s);
/* Compare every duplicate of a source tensor (replicated norms/routers over TP, dense weights
 * repeated in EP files, expert shards written twice, the MTP stage's embedding copy) with the
 * copy the view serves. Returns 0 when the walk completed (check r->mismatches). */
int mf_verify_replicas(mf_session *s, mf_verify_report *r);
/* XXH64 (seed 0) of the bytes an HF tensor shows. */
int mf_hash_tensor(const mf_session *s, const mf_hf_tensor *t, uint64_t *out);

#endif
