/* Reads of the FP8 view: a weight's bytes and its scale_inv, computed from the source rows of
 * the 128-row block rows a request touches. The source rows come from the one gather engine
 * (mf_gather on the weight's pieces in its source dtype) into a per-thread scratch of at most
 * one block row (128 x cols x source element size, <= MF_FP8_MAX_BLOCK_ROW_BYTES). A block row's
 * amaxes need all its rows: the first read of a block row reads all 128 and caches the amaxes;
 * later reads of it gather only the rows they ask for. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fp8_state.h"
#include "mcorefs/error.h"
#include "mcorefs/view.h"

typedef struct {
    uint8_t *raw;            /* source rows as gathered */
    size_t raw_cap;
    uint8_t *q;              /* one quantized block row */
    size_t q_cap;
    float *row;              /* one row as floats */
    float *amax, *mult;      /* per column block */
    size_t cols_cap;
} fp8_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    fp8_scratch *s = p;
    if (s) {
        free(s->raw);
        free(s->q);
        free(s->row);
        free(s->amax);
        free(s->mult);
        free(s);
    }
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

/* This thread's scratch, grown to hold raw_bytes of source rows, q_bytes of FP8 rows and cols
 * floats. */
static fp8_scratch *get_scratch(size_t raw_bytes, size_t q_bytes, size_t cols)
{
    pthread_once(&scratch_once, scratch_init);
    fp8_scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))) || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (raw_bytes > s->raw_cap) {
        free(s->raw);
        s->raw_cap = 0;
        if (!(s->raw = malloc(raw_bytes)))
            return NULL;
        s->raw_cap = raw_bytes;
    }
    if (q_bytes > s->q_cap) {
        free(s->q);
        s->q_cap = 0;
        if (!(s->q = malloc(q_bytes)))
            return NULL;
        s->q_cap = q_bytes;
    }
    if (cols > s->cols_cap) {
        free(s->row);
        free(s->amax);
        free(s->mult);
        s->cols_cap = 0;
        s->row = malloc(cols * sizeof(float));
        s->amax = malloc(cols * sizeof(float));
        s->mult = malloc(cols * sizeof(float));
        if (!s->row || !s->amax || !s->mult)
            return NULL;
        s->cols_cap = cols;
    }
    return s;
}

typedef struct {
    const mf_session *s;
    const mf_hf_tensor *w;   /* the FP8 weight */
    uint32_t wi;             /* its index in the mapping (the cache key) */
    mf_hf_tensor src;        /* the weight in its source dtype, for mf_gather */
    const mf_io *io;
    int64_t R, C;
    uint32_t nbc;            /* column blocks */
    size_t ss;               /* source element size */
    fp8_scratch *sc;
} weight_ctx;

static int weight_ctx_init(weight_ctx *x, const mf_session *s, uint32_t wi, const mf_io *io)
{
    const mf_hf_tensor *w = &s->map.tensors[wi];
    x->s = s;
    x->w = w;
    x->wi = wi;
    x->io = io;
    x->R = w->shape[0];
    x->C = w->shape[1];
    x->nbc = (uint32_t)((x->C + MF_FP8_BLOCK - 1) / MF_FP8_BLOCK);
    x->ss = mf_dtype_size(w->src_dtype);
    x->src = *w;
    x->src.dtype = w->src_dtype;
    x->src.nbytes = (uint64_t)x->R * (uint64_t)x->C * x->ss;
    x->src.quant = MF_TQ_NONE;
    x->sc = get_scratch((size_t)MF_FP8_BLOCK * (size_t)x->C * x->ss, (size_t)MF_FP8_BLOCK * (size_t)x->C, (size_t)x->C);
    return x->sc ? MF_OK : mf_fail(MF_ERR_NOMEM, "out of memory for the FP8 scratch (%s)", w->name);
}

/* Source rows [r0, r1) into the scratch (row r0 first). */
static int gather_rows(weight_ctx *x, int64_t r0, int64_t r1)
{
    uint64_t rb = (uint64_t)x->C * x->ss;
    return mf_gather(&x->src, x->io, (uint64_t)r0 * rb, (size_t)((uint64_t)(r1 - r0) * rb), x->sc->raw);
}

/* The amaxes of block row b (clamped), from the cache or from its rows. When computed, the
 * block row's source rows are left in the scratch (*rows_from = its first row); else *rows_from
 * is -1. */
static int block_amax(weight_ctx *x, uint32_t b, int64_t *rows_from)
{
    float *amax = x->sc->amax;
    *rows_from = -1;
    if (mf_fp8_cache_get(x->s->fp8->cache, x->wi, b, 0, amax, x->nbc * sizeof(float)))
        return MF_OK;
    int64_t br0 = (int64_t)b * MF_FP8_BLOCK, br1 = br0 + MF_FP8_BLOCK < x->R ? br0 + MF_FP8_BLOCK : x->R;
    int rc = gather_rows(x, br0, br1);
    if (rc)
        return rc;
    for (uint32_t cb = 0; cb < x->nbc; cb++)
        amax[cb] = 0.0f;
    for (int64_t r = br0; r < br1; r++) {
        const uint8_t *src = x->sc->raw + (size_t)(r - br0) * (size_t)x->C * x->ss;
        for (uint32_t cb = 0; cb < x->nbc; cb++) {
            int64_t c0 = (int64_t)cb * MF_FP8_BLOCK, n = x->C - c0 < MF_FP8_BLOCK ? x->C - c0 : MF_FP8_BLOCK;
            if (mf_fp8_amax_raw(x->w->src_dtype, src + (size_t)c0 * x->ss, (size_t)n, &amax[cb], x->sc->row) != 0)
                return mf_fail(MF_ERR_FORMAT, "%s: NaN or infinity in the source block at rows %lld-%lld, columns "
                               "%lld-%lld: it has no FP8 scale", x->w->name, (long long)br0, (long long)br1 - 1,
                               (long long)c0, (long long)(c0 + n - 1));
        }
    }
    for (uint32_t cb = 0; cb < x->nbc; cb++)
        amax[cb] = amax[cb] < MF_FP8_AMAX_MIN ? MF_FP8_AMAX_MIN : amax[cb];
    __atomic_fetch_add(&x->s->fp8->block_rows_computed, 1, __ATOMIC_RELAXED);
    *rows_from = br0;
    return mf_fp8_cache_put(x->s->fp8->cache, x->wi, b, amax, x->nbc * sizeof(float));
}

/* Quantize elements [c_lo, c_hi) of rows [r0, r1) (source rows from row `from` in the scratch)
 * into dst, element (r, c) at dst[(r - r0) * C + c - c_lo] (one row: c_lo..c_hi; several rows:
 * whole rows). */
static int quantize_rows(weight_ctx *x, int64_t r0, int64_t r1, int64_t from, uint64_t c_lo, uint64_t c_hi, uint8_t *dst)
{
    float scale_inv;
    uint64_t C = (uint64_t)x->C;
    for (uint32_t cb = 0; cb < x->nbc; cb++)
        mf_fp8_block_factors(x->sc->amax[cb], x->s->fp8->mode, &x->sc->mult[cb], &scale_inv);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *src = x->sc->raw + (size_t)(r - from) * (size_t)C * x->ss;
        for (uint64_t c = c_lo; c < c_hi;) {
            uint64_t cb = c / MF_FP8_BLOCK, stop = (cb + 1) * MF_FP8_BLOCK < c_hi ? (cb + 1) * MF_FP8_BLOCK : c_hi;
            if (mf_fp8_quantize_raw(x->w->src_dtype, src + (size_t)c * x->ss, (size_t)(stop - c), x->sc->mult[cb],
                                    dst + (uint64_t)(r - r0) * C + (c - c_lo), x->sc->row) != 0)
                return mf_fail(MF_ERR_INVALID, "%s: an FP8 value out of range at row %lld (cannot happen: "
                               "the block's amax covers it)", x->w->name, (long long)r);
            c = stop;
        }
    }
    return MF_OK;
}

/* FP8 bytes [off, off+len) of the weight, block row by block row: a block row quantized
 * lately is a copy; one whose amaxes must be computed is gathered whole, quantized whole and
 * kept (the next reads of a sequential reader ask for its other rows); one whose amaxes are
 * cached but whose bytes are not gathers and quantizes only the rows asked for. */
static int read_weight(weight_ctx *x, uint64_t off, size_t len, uint8_t *dst)
{
    uint64_t end = off + len, C = (uint64_t)x->C;
    int64_t r0 = (int64_t)(off / C), r1 = (int64_t)((end + C - 1) / C);
    for (uint32_t b = (uint32_t)(r0 / MF_FP8_BLOCK); (int64_t)b * MF_FP8_BLOCK < r1; b++) {
        int64_t br0 = (int64_t)b * MF_FP8_BLOCK, br1 = br0 + MF_FP8_BLOCK < x->R ? br0 + MF_FP8_BLOCK : x->R;
        uint64_t e0 = (uint64_t)br0 * C, e1 = (uint64_t)br1 * C;   /* the block row's bytes */
        uint64_t a = e0 > off ? e0 : off, z = e1 < end ? e1 : end;
        uint8_t *out = dst + (a - off);
        if (mf_fp8_cache_get(x->s->fp8->rows, x->wi, b, (size_t)(a - e0), out, (size_t)(z - a)))
            continue;
        int64_t from;
        int rc = block_amax(x, b, &from);
        if (rc)
            return rc;
        if (from >= 0) {               /* all its rows are in the scratch: quantize them all */
            if ((rc = quantize_rows(x, br0, br1, br0, 0, C, x->sc->q)) != 0)
                return rc;
            memcpy(out, x->sc->q + (a - e0), (size_t)(z - a));
            if ((rc = mf_fp8_cache_put(x->s->fp8->rows, x->wi, b, x->sc->q, (size_t)(e1 - e0))) != 0)
                return rc;
            continue;
        }
        int64_t q0 = (int64_t)(a / C), q1 = (int64_t)((z + C - 1) / C);
        if ((rc = gather_rows(x, q0, q1)) != 0)
            return rc;
        for (int64_t r = q0; r < q1; r++) {   /* row by row: the first and last may be partial */
            uint64_t ra = (uint64_t)r * C > a ? (uint64_t)r * C : a, rz = (uint64_t)(r + 1) * C < z ? (uint64_t)(r + 1) * C : z;
            if ((rc = quantize_rows(x, r, r + 1, q0, ra - (uint64_t)r * C, rz - (uint64_t)r * C, dst + (ra - off))) != 0)
                return rc;
        }
    }
    return MF_OK;
}

/* scale_inv bytes [off, off+len) (F32 [row blocks, column blocks]). */
static int read_scales(weight_ctx *x, uint64_t off, size_t len, uint8_t *dst)
{
    uint64_t end = off + len, e0 = off / 4, e1 = (end + 3) / 4;
    for (uint32_t b = (uint32_t)(e0 / x->nbc); (uint64_t)b * x->nbc < e1; b++) {
        int64_t from;
        int rc = block_amax(x, b, &from);
        if (rc)
            return rc;
        for (uint32_t cb = 0; cb < x->nbc; cb++) {
            uint64_t e = (uint64_t)b * x->nbc + cb, p0 = e * 4, p1 = p0 + 4;
            if (p1 <= off || p0 >= end)
                continue;
            float mult, scale_inv;
            mf_fp8_block_factors(x->sc->amax[cb], x->s->fp8->mode, &mult, &scale_inv);
            uint8_t bytes[4];
            memcpy(bytes, &scale_inv, 4);   /* little-endian hosts only, like the rest of the view */
            uint64_t a = p0 > off ? p0 : off, z = p1 < end ? p1 : end;
            memcpy(dst + (a - off), bytes + (a - p0), (size_t)(z - a));
        }
    }
    return MF_OK;
}

int mf_tensor_read(const mf_session *s, const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len, uint8_t *dst)
{
    if (t->quant == MF_TQ_NONE)
        return mf_gather(t, io, off, len, dst);
    if (off > t->nbytes || len > t->nbytes - off)
        return mf_fail(MF_ERR_INVALID, "%s: bytes %llu+%zu outside the tensor", t->name, (unsigned long long)off, len);
    if (!s->fp8)
        return mf_fail(MF_ERR_INVALID, "%s: an FP8 tensor in a view without FP8 state", t->name);
    if (len == 0)
        return MF_OK;
    uint32_t wi = t->quant == MF_TQ_FP8_WEIGHT ? s->map.tensors[t->quant_peer].quant_peer : t->quant_peer;
    weight_ctx x;
    int rc = weight_ctx_init(&x, s, wi, io);
    if (rc)
        return rc;
    return t->quant == MF_TQ_FP8_WEIGHT ? read_weight(&x, off, len, dst) : read_scales(&x, off, len, dst);
}

void mf_fp8_get_stats(const mf_session *s, uint64_t *block_rows_computed, mf_fp8_cache_stats *cache)
{
    *block_rows_computed = s->fp8 ? __atomic_load_n(&s->fp8->block_rows_computed, __ATOMIC_RELAXED) : 0;
    if (s->fp8)
        mf_fp8_cache_get_stats(s->fp8->cache, cache);
    else
        memset(cache, 0, sizeof(*cache));
}
