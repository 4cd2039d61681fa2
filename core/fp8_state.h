/* The FP8 view's per-mount state, shared by core/fp8_view.c (creates it) and core/fp8_read.c. */
#ifndef MCOREFS_FP8_STATE_H
#define MCOREFS_FP8_STATE_H

#include <stdint.h>
#include "mcorefs/fp8.h"

struct mf_fp8_state {
    mf_quant mode;
    mf_fp8_cache *cache;            /* amaxes per block row */
    mf_fp8_cache *rows;             /* FP8 bytes of recently quantized block rows */
    uint64_t block_rows_computed;   /* atomic: block rows whose amaxes were computed */
};

#endif
