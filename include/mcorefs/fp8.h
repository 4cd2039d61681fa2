/* The FP8 view (-o quant=fp8 / fp8_ue8m0): DeepSeek-V3's release layout, quantized on read.
 * Every linear weight the rule picks is shown as F8_E4M3 with a companion "<name>_scale_inv"
 * (F32, [ceil(rows/128), ceil(cols/128)]); scales are computed per 128x128 block on demand and
 * kept in a bounded LRU cache (core/fp8_cache.c). */
#ifndef MCOREFS_FP8_H
#define MCOREFS_FP8_H

#include <stddef.h>
#include <stdint.h>
#include "mcorefs/gather.h"
#include "mcorefs/mapping.h"

typedef enum {
    MF_QUANT_NONE = 0,
    MF_QUANT_FP8,         /* scale_inv = amax / 448 */
    MF_QUANT_FP8_UE8M0,   /* scale_inv = amax / 448 rounded up to a power of two */
} mf_quant;

/* What an HF tensor of the view is (mf_hf_tensor.quant). */
enum { MF_TQ_NONE = 0, MF_TQ_FP8_WEIGHT, MF_TQ_FP8_SCALE };

#define MF_FP8_BLOCK 128
#define MF_FP8_MAX 448.0f
#define MF_FP8_AMAX_MIN 1e-4f
/* The caches' bounds per mount (bytes of entries, headers included): block amaxes, and
 * quantized block rows (so that the reads that follow within a block row are copies). */
#define MF_FP8_CACHE_BYTES (32u << 20)
#define MF_FP8_ROWS_CACHE_BYTES (32u << 20)
/* Largest source block row a read gathers at once (128 rows x cols x source element size):
 * wider weights are refused at mount. 64 MiB = 262144 bf16 columns. */
#define MF_FP8_MAX_BLOCK_ROW_BYTES (64u << 20)

/* --- the quantizer (core/fp8_quant.c) --- */
/* IEEE float -> e4m3fn, round to nearest even; magnitudes above 464 (beyond 448's rounding
 * range) and NaN give the NaN code 0x7f | sign, as torch's cast does (no saturation). */
uint8_t mf_e4m3_from_f32(float x);
float mf_e4m3_to_f32(uint8_t b);
/* The block's multiplier and scale_inv from its amax (already clamped to >= MF_FP8_AMAX_MIN). */
void mf_fp8_block_factors(float amax, mf_quant q, float *mult, float *scale_inv);
/* Largest |x| of n floats into *amax (kept if larger); -1 if one of them is NaN or infinite. */
int mf_fp8_amax_update(const float *x, size_t n, float *amax);
/* dst[i] = e4m3(x[i] * mult); -1 if a result is NaN (cannot happen when mult came from an amax
 * covering x: |x * mult| <= 448 up to one fp32 rounding). */
int mf_fp8_quantize(const float *x, size_t n, float mult, uint8_t *dst);
/* n source elements of dtype dt as floats (widening is exact for bf16 / f16). */
void mf_fp8_load_f32(mf_dtype dt, const uint8_t *src, size_t n, float *dst);
/* amax_update / quantize on n source elements of dtype dt (bf16 directly; others through tmp,
 * room for n floats). */
int mf_fp8_amax_raw(mf_dtype dt, const uint8_t *src, size_t n, float *amax, float *tmp);
int mf_fp8_quantize_raw(mf_dtype dt, const uint8_t *src, size_t n, float mult, uint8_t *dst, float *tmp);

/* --- the caches (core/fp8_cache.c): bytes per (tensor, block row), LRU, bounded by bytes,
 * thread-safe; one holds each block row's amaxes, one recently quantized block rows --- */
typedef struct mf_fp8_cache mf_fp8_cache;
mf_fp8_cache *mf_fp8_cache_new(size_t max_bytes);
void mf_fp8_cache_free(mf_fp8_cache *c);
/* Copy bytes [off, off+n) of the entry (tensor, block_row) into out: 1 if it is cached and
 * that long, 0 if not. */
int mf_fp8_cache_get(mf_fp8_cache *c, uint32_t tensor, uint32_t block_row, size_t off, void *out, size_t n);
/* Insert a copy of n bytes; the least recently used entries go while the bound is exceeded. An
 * entry larger than the bound alone is not kept. MF_OK or MF_ERR_NOMEM. */
int mf_fp8_cache_put(mf_fp8_cache *c, uint32_t tensor, uint32_t block_row, const void *data, size_t n);
typedef struct {
    uint64_t hits, misses, evictions, entries, bytes, max_bytes;
} mf_fp8_cache_stats;
void mf_fp8_cache_get_stats(mf_fp8_cache *c, mf_fp8_cache_stats *st);

/* --- the view (core/fp8_view.c) --- */
struct mf_session;
struct mf_fp8_state;
/* 1 if the rule quantizes the HF tensor of that name (a 2-D linear weight of attention or MLP). */
int mf_fp8_name_quantized(const char *name);
/* Turn the session's mapping into the FP8 view (weights -> F8_E4M3, scale tensors added right
 * after their weight) and create its cache. No-op when s->opts.quant is MF_QUANT_NONE. */
int mf_fp8_add_to_view(struct mf_session *s);
void mf_fp8_state_free(struct mf_fp8_state *st);
/* config.json's quantization_config for the mode (NULL for MF_QUANT_NONE). */
struct cJSON;
struct cJSON *mf_fp8_quantization_config(mf_quant q);

/* --- reads (core/fp8_read.c) --- */
/* Bytes [off, off+len) of any HF tensor of the view: the gather engine for plain tensors, the
 * FP8 path (which asks mf_gather for the source rows of the blocks it needs) for the others.
 * The session's read entry points and verify's hashes go through here. */
int mf_tensor_read(const struct mf_session *s, const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len,
                   uint8_t *dst);
/* Block rows whose scales were computed (cache misses), and the cache's figures. */
void mf_fp8_get_stats(const struct mf_session *s, uint64_t *block_rows_computed, mf_fp8_cache_stats *cache);

#endif
