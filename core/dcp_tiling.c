/* Chunk tiling of one tensor (inside the global shape, no overlap, full cover), checked on the
 * grid spanned by the chunk boundaries, with a sorted sweep as fallback for layouts whose grid
 * would be too large. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "dcp_parse.h"

typedef struct {
    int64_t key;
    uint32_t idx;
} keyed;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return (x->key > y->key) - (x->key < y->key);
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static size_t find_bound(const int64_t *b, size_t n, int64_t v)
{
    size_t lo = 0, hi = n; /* first index with b[i] >= v */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int chunk_empty(const mf_dcp_chunk *c, int nd)
{
    for (int i = 0; i < nd; i++)
        if (c->sizes[i] == 0)
            return 1;
    return 0;
}

static int boxes_overlap(const mf_dcp_chunk *a, const mf_dcp_chunk *b, int nd)
{
    for (int i = 0; i < nd; i++)
        if (a->offsets[i] >= b->offsets[i] + b->sizes[i] || b->offsets[i] >= a->offsets[i] + a->sizes[i])
            return 0;
    return 1;
}

static int overlap_error(const ctx *x, const mf_dcp_tensor *t, const mf_dcp_chunk *a, const mf_dcp_chunk *b)
{
    char s1[200], s2[200];
    return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunks at %s (sizes %s) and %s overlap", x->mpath, t->fqn,
                   dcp_fmt_dims(s1, sizeof s1, a->offsets, t->ndim), dcp_fmt_dims(s2, sizeof s2, a->sizes, t->ndim),
                   dcp_fmt_dims((char[200]){0}, 200, b->offsets, t->ndim));
}

/* Fallback: sort by the start on dimension `dim`, compare each chunk with the chunks that start
 * inside its extent on that dimension, then compare covered volume with the global volume. */
static int check_sweep(const ctx *x, const mf_dcp_tensor *t, const uint32_t *ne, size_t k, int dim, uint64_t total)
{
    keyed *s = malloc((k + 1) * sizeof *s);
    if (!s)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    for (size_t i = 0; i < k; i++)
        s[i] = (keyed){t->chunks[ne[i]].offsets[dim], ne[i]};
    qsort(s, k, sizeof *s, cmp_keyed);
    uint64_t work = 0, covered = 0;
    int rc = MF_OK;
    for (size_t i = 0; i < k && !rc; i++) {
        const mf_dcp_chunk *a = &t->chunks[s[i].idx];
        int64_t end = a->offsets[dim] + a->sizes[dim];
        for (size_t j = i + 1; j < k && s[j].key < end; j++) {
            if (++work > SWEEP_MAX_PAIRS) {
                rc = mf_fail(MF_ERR_LIMIT, "%s: tensor '%s': %zu chunks in a layout too irregular to verify", x->mpath,
                             t->fqn, k);
                break;
            }
            if (boxes_overlap(a, &t->chunks[s[j].idx], t->ndim)) {
                rc = overlap_error(x, t, a, &t->chunks[s[j].idx]);
                break;
            }
        }
        uint64_t v = 1;
        for (int dd = 0; dd < t->ndim; dd++)
            v *= (uint64_t)a->sizes[dd]; /* <= total (inside the shape), no overflow */
        covered += v;                     /* disjoint boxes inside the shape: <= total */
    }
    free(s);
    if (!rc && covered != total) {
        char sh[200];
        rc = mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunks cover %llu of the %llu elements of shape %s", x->mpath,
                     t->fqn, (unsigned long long)covered, (unsigned long long)total, dcp_fmt_dims(sh, sizeof sh, t->size, t->ndim));
    }
    return rc;
}

/* Chunks (already known to lie inside the shape) must not overlap and must cover it. */
int dcp_check_tiling(const ctx *x, const mf_dcp_tensor *t)
{
    int nd = t->ndim;
    uint64_t total = 1;
    for (int i = 0; i < nd; i++)
        if (__builtin_mul_overflow(total, (uint64_t)t->size[i], &total) || total > (uint64_t)INT64_MAX)
            return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': global shape is too large", x->mpath, t->fqn);
    if (total == 0)
        return MF_OK; /* every chunk inside an empty shape is empty */
    if (t->n_chunks >= UINT32_MAX / 4)
        return mf_fail(MF_ERR_LIMIT, "%s: tensor '%s': too many chunks", x->mpath, t->fqn);
    char sh[200], at[200];
    uint32_t *ne = malloc((t->n_chunks + 1) * sizeof *ne); /* the non-empty chunks */
    size_t k = 0;
    if (!ne)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    for (size_t i = 0; i < t->n_chunks; i++)
        if (!chunk_empty(&t->chunks[i], nd))
            ne[k++] = (uint32_t)i;
    if (k == 0) {
        free(ne);
        return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': no chunk holds any of its %llu elements (shape %s)", x->mpath,
                       t->fqn, (unsigned long long)total, dcp_fmt_dims(sh, sizeof sh, t->size, nd));
    }

    /* Per-dimension sorted, unique chunk boundaries: the grid. */
    size_t per = 2 * k + 2, m[MF_MAX_DIMS];
    int64_t *bd = malloc((size_t)(nd ? nd : 1) * per * sizeof *bd);
    if (!bd) {
        free(ne);
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    }
    uint64_t cells = 1;
    int cells_ok = 1, best = 0, rc = MF_OK;
    for (int dd = 0; dd < nd; dd++) {
        int64_t *b = bd + (size_t)dd * per;
        size_t n = 0;
        b[n++] = 0;
        b[n++] = t->size[dd];
        for (size_t i = 0; i < k; i++) {
            b[n++] = t->chunks[ne[i]].offsets[dd];
            b[n++] = t->chunks[ne[i]].offsets[dd] + t->chunks[ne[i]].sizes[dd];
        }
        qsort(b, n, sizeof *b, cmp_i64);
        size_t u = 0;
        for (size_t i = 0; i < n; i++)
            if (u == 0 || b[i] != b[u - 1])
                b[u++] = b[i];
        m[dd] = u; /* boundaries; u - 1 intervals */
        if (cells_ok && __builtin_mul_overflow(cells, (uint64_t)(u - 1), &cells))
            cells_ok = 0;
        if (u > m[best])
            best = dd;
    }
    uint64_t limit = 8 * (uint64_t)k > GRID_MIN_CELLS ? 8 * (uint64_t)k : GRID_MIN_CELLS;
    if (!cells_ok || cells > limit) {
        rc = check_sweep(x, t, ne, k, best, total);
        free(bd);
        free(ne);
        return rc;
    }

    uint32_t *grid = calloc((size_t)cells, sizeof *grid); /* chunk index + 1 owning each cell */
    if (!grid) {
        free(bd);
        free(ne);
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    }
    uint64_t stride[MF_MAX_DIMS];
    for (int dd = nd - 1; dd >= 0; dd--)
        stride[dd] = dd == nd - 1 ? 1 : stride[dd + 1] * (uint64_t)(m[dd + 1] - 1);
    for (size_t i = 0; i < k && !rc; i++) {
        const mf_dcp_chunk *c = &t->chunks[ne[i]];
        size_t lo[MF_MAX_DIMS], hi[MF_MAX_DIMS], cur[MF_MAX_DIMS];
        for (int dd = 0; dd < nd; dd++) {
            const int64_t *b = bd + (size_t)dd * per;
            lo[dd] = cur[dd] = find_bound(b, m[dd], c->offsets[dd]);
            hi[dd] = find_bound(b, m[dd], c->offsets[dd] + c->sizes[dd]);
        }
        for (;;) {
            uint64_t cell = 0;
            for (int dd = 0; dd < nd; dd++)
                cell += (uint64_t)cur[dd] * stride[dd];
            if (grid[cell]) {
                rc = overlap_error(x, t, &t->chunks[grid[cell] - 1], c);
                break;
            }
            grid[cell] = ne[i] + 1;
            int dd = nd - 1;
            for (; dd >= 0; dd--) {
                if (++cur[dd] < hi[dd])
                    break;
                cur[dd] = lo[dd];
            }
            if (dd < 0)
                break;
        }
    }
    for (uint64_t cell = 0; !rc && cell < cells; cell++) {
        if (grid[cell])
            continue;
        int64_t coord[MF_MAX_DIMS];
        uint64_t r = cell;
        for (int dd = 0; dd < nd; dd++) {
            coord[dd] = bd[(size_t)dd * per + r / stride[dd]];
            r %= stride[dd];
        }
        rc = mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunks do not cover shape %s (no chunk holds element %s)",
                     x->mpath, t->fqn, dcp_fmt_dims(sh, sizeof sh, t->size, nd), dcp_fmt_dims(at, sizeof at, coord, nd));
    }
    free(grid);
    free(bd);
    free(ne);
    return rc;
}

size_t dcp_tiling_scratch(const mf_dcp_tensor *t)
{
    /* non-empty list, boundaries, grid or sweep keys */
    size_t n = t->n_chunks + 1, grid = 8 * n > GRID_MIN_CELLS ? 8 * n : GRID_MIN_CELLS;
    return n * (sizeof(uint32_t) + sizeof(keyed)) + (size_t)t->ndim * (2 * n) * sizeof(int64_t) + grid * sizeof(uint32_t);
}
