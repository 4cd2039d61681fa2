/* The gather engine: the bytes of any HF tensor, from its recipe, on demand.
 * Hot path: no locks, no allocation after a thread's first call (per-thread scratch),
 * one pread (or preadv, for row-split pieces) per piece per request where the source rows are
 * contiguous, straight into the caller's buffer. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "file_io.h"

#define SCRATCH_BYTES (4u << 20)
#define CONV_ELEMS (256u << 10)

#define MAX_IOV 1024   /* Linux's UIO_MAXIOV */

typedef struct {
    uint8_t *rows;    /* source row blocks (and the sink of gaps between rows read with preadv) */
    uint8_t *conv;    /* raw source-dtype bytes before conversion */
    struct iovec iov[MAX_IOV];
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    scratch *s = p;
    if (s) {
        free(s->rows);
        free(s->conv);
        free(s);
    }
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

static scratch *get_scratch(void)
{
    pthread_once(&scratch_once, scratch_init);
    scratch *s = pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
        s->rows = malloc(SCRATCH_BYTES);
        s->conv = malloc((size_t)CONV_ELEMS * 8);
        if (s->rows == NULL || s->conv == NULL) {
            scratch_free(s);
            return NULL;
        }
        pthread_setspecific(scratch_key, s);
    }
    return s;
}

int mf_tensor_2d(const mf_tensor *t, int64_t *rows, int64_t *cols, int64_t *rs, int64_t *cs)
{
    if (t->ndim == 0) {
        *rows = *cols = *rs = *cs = 1;
        return 0;
    }
    *rows = t->shape[0];
    *rs = t->stride[0];
    if (t->ndim == 1) {
        *cols = 1;
        *cs = 1;
        return 0;
    }
    /* merge trailing dims when they are contiguous with each other */
    int64_t c = 1;
    for (int k = t->ndim - 1; k >= 1; k--) {
        if (k < t->ndim - 1 && t->shape[k] > 1 && t->stride[k] != t->stride[k + 1] * t->shape[k + 1])
            return -1;
        c *= t->shape[k];
    }
    *cols = c;
    *cs = t->stride[t->ndim - 1];
    return 0;
}

/* A rank file that changed since mount: MF_ERR_CHANGED, with a message naming it. */
static int check_unchanged(const mf_io *io, int file)
{
    if (io->files == NULL)
        return 0;
    const mf_rankfile *f = &io->files[file];
    return mf_file_id_check(io->fds[file], &f->id, f->path) == MF_OK ? MF_OK : MF_ERR_CHANGED;
}

/* Read exactly len bytes of rank file `file`. A failed read leaves a message naming the file;
 * one from a file that changed (e.g. shrank after mount) is MF_ERR_CHANGED. A successful read is
 * checked once per piece, after its last pread (gather_piece). */
static int pread_full(const mf_io *io, int file, void *buf, size_t len, uint64_t off)
{
    const char *path = io->files ? io->files[file].path : NULL;
    if (mf_pread_full(io->fds[file], path, buf, len, off) != MF_OK)
        return check_unchanged(io, file) ? MF_ERR_CHANGED : MF_ERR_IO;
    return MF_OK;
}

/* preadv until every buffer is full (it modifies iov). Errors as pread_full. */
static int preadv_full(const mf_io *io, int file, struct iovec *iov, int n, uint64_t off)
{
    const char *path = io->files ? io->files[file].path : "(file)";
    while (n > 0) {
        ssize_t got = preadv(io->fds[file], iov, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got < 0)
                mf_fail(MF_ERR_IO, "%s: read at %llu: %s", path, (unsigned long long)off, strerror(errno));
            else
                mf_fail(MF_ERR_IO, "%s: ends at %llu (needed more bytes)", path, (unsigned long long)off);
            return check_unchanged(io, file) ? MF_ERR_CHANGED : MF_ERR_IO;
        }
        off += (uint64_t)got;
        while (n > 0 && (size_t)got >= iov->iov_len) {
            got -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + got;
            iov->iov_len -= (size_t)got;
        }
    }
    return MF_OK;
}

/* Reads of source byte ranges in increasing order, each to its own place: gathered into one preadv
 * while they follow each other (a short gap between them is read into a sink and dropped). */
typedef struct {
    struct iovec *iov;
    int n;
    uint64_t start, next;   /* source offsets of the first byte and past the last */
} row_reads;

static int row_reads_flush(const mf_io *io, int file, row_reads *v)
{
    int n = v->n;
    v->n = 0;
    return n > 0 ? preadv_full(io, file, v->iov, n, v->start) : MF_OK;
}

static int row_reads_add(const mf_io *io, int file, row_reads *v, uint8_t *sink, uint8_t *dst, size_t len, uint64_t src)
{
    if (v->n > 0 && (src < v->next || src - v->next > SCRATCH_BYTES || v->n + 2 > MAX_IOV)) {
        int rc = row_reads_flush(io, file, v);
        if (rc)
            return rc;
    }
    if (v->n > 0 && src > v->next)
        v->iov[v->n++] = (struct iovec){ sink, (size_t)(src - v->next) };
    if (v->n == 0)
        v->start = src;
    v->iov[v->n++] = (struct iovec){ dst, len };
    v->next = src + len;
    return MF_OK;
}

typedef struct {
    uint64_t off, end;  /* requested byte range of the tensor (element size es) */
    uint8_t *dst;
    size_t es;
    int64_t C;          /* tensor columns */
} request;

/* General strides (e.g. legacy grouped experts, a transposed view): read windows of the
 * source span and pick the elements that fall in each. */
static int gather_strided(const request *q, const mf_piece *p, const mf_tensor *t, const mf_io *io, int64_t rs, int64_t cs,
                          int64_t r0, int64_t r1, scratch *sc)
{
    size_t es = q->es;
    int64_t lo = INT64_MAX, hi = -1;
    for (int64_t r = r0; r < r1; r++) {
        int64_t base = (int64_t)(p->src_row + (r - p->dst_row)) * rs + (int64_t)p->src_col * cs;
        int64_t last = base + (int64_t)(p->cols - 1) * cs;
        lo = base < lo ? base : lo;
        hi = last > hi ? last : hi;
    }
    int64_t win = (int64_t)(SCRATCH_BYTES / es);
    for (int64_t w = lo; w <= hi; w += win) {
        int64_t wend = w + win - 1 < hi ? w + win - 1 : hi;
        int rc = pread_full(io, p->src->file, sc->rows, (size_t)(wend - w + 1) * es, t->offset + (uint64_t)w * es);
        if (rc)
            return rc;
        for (int64_t r = r0; r < r1; r++) {
            for (int64_t j = 0; j < p->cols; j++) {
                uint64_t b = ((uint64_t)r * (uint64_t)q->C + p->dst_col + (uint64_t)j) * es;
                if (b + es <= q->off || b >= q->end)
                    continue;
                int64_t s = (int64_t)(p->src_row + (r - p->dst_row)) * rs + (int64_t)(p->src_col + j) * cs;
                if (s < w || s > wend)
                    continue;
                /* clip partial elements at the request edges */
                uint64_t a0 = b > q->off ? b : q->off, a1 = b + es < q->end ? b + es : q->end;
                memcpy(q->dst + (a0 - q->off), sc->rows + (size_t)(s - w) * es + (a0 - b), a1 - a0);
            }
        }
    }
    return 0;
}

/* Copy count elements, element t from src + t * sstep to tensor byte dst0 + t * dstep, clipped
 * to the request's byte range (partial elements only at its two ends). */
static void copy_line(const request *q, uint64_t dst0, uint64_t dstep, const uint8_t *src, size_t sstep, int64_t count)
{
    size_t es = q->es;
    if (count <= 0 || dst0 >= q->end || dst0 + (uint64_t)(count - 1) * dstep + es <= q->off)
        return;
    int64_t t0 = dst0 + es <= q->off ? (int64_t)((q->off - dst0 - es) / dstep) + 1 : 0;
    int64_t t1 = (int64_t)((q->end - dst0 - 1) / dstep) + 1;
    if (t1 > count)
        t1 = count;
    for (int64_t t = t0; t < t1; t++) {
        uint64_t b = dst0 + (uint64_t)t * dstep;
        const uint8_t *e = src + (size_t)t * sstep;
        uint8_t *d = q->dst + (b - q->off);
        if (b >= q->off && b + es <= q->end) {
            switch (es) {   /* constant sizes: the compiler emits plain loads and stores */
            case 2: memcpy(d, e, 2); break;
            case 4: memcpy(d, e, 4); break;
            case 8: memcpy(d, e, 8); break;
            default: memcpy(d, e, es); break;
            }
        } else {
            uint64_t a0 = b > q->off ? b : q->off, a1 = b + es < q->end ? b + es : q->end;
            memcpy(q->dst + (a0 - q->off), e + (a0 - b), (size_t)(a1 - a0));
        }
    }
}

/* Transposed or column-interleaved pieces: read blocks of source rows (only the columns the
 * request needs, in as few preads as the scratch allows), then copy with strides in memory,
 * one destination line at a time. Destination rows [r0, r1) are wanted. */
static int gather_reordered(const request *q, const mf_piece *p, const mf_tensor *t, const mf_io *io, int64_t rs,
                            int64_t cs, int64_t r0, int64_t r1, scratch *sc)
{
    size_t es = q->es;
    uint64_t step = p->dst_step > 1 ? p->dst_step : 1, rowbytes = (uint64_t)q->C * es;
    int64_t i0 = r0 - p->dst_row, i1 = r1 - p->dst_row;   /* piece-local destination rows */
    /* the source rectangle: rows [a0, a1) x cols [b0, b1) */
    int64_t a0, a1, b0, b1;
    if (p->transposed) {
        a0 = p->src_row; a1 = a0 + p->cols; b0 = p->src_col + i0; b1 = p->src_col + i1;
    } else {
        a0 = p->src_row + i0; a1 = p->src_row + i1; b0 = p->src_col; b1 = b0 + p->cols;
    }
    int64_t win = (int64_t)(SCRATCH_BYTES / es);
    int64_t wc = cs > 0 ? (win - 1) / cs + 1 : b1 - b0;   /* columns per window that fit */
    for (int64_t c = b0; c < b1; c += wc) {
        int64_t c1 = c + wc < b1 ? c + wc : b1;
        int64_t seg = (c1 - c - 1) * cs + 1;              /* elements one row's columns span */
        int64_t per = rs > 0 ? (win - seg) / rs + 1 : 1;   /* rows per pread */
        for (int64_t r = a0; r < a1; r += per) {
            int64_t n = a1 - r < per ? a1 - r : per;
            int rc = pread_full(io, p->src->file, sc->rows, (size_t)((n - 1) * rs + seg) * es,
                                t->offset + (uint64_t)(r * rs + c * cs) * es);
            if (rc)
                return rc;
            if (p->transposed) {   /* source column x is destination row x - src_col */
                for (int64_t x = c; x < c1; x++) {
                    uint64_t d0 = (uint64_t)(p->dst_row + x - p->src_col) * rowbytes +
                                  (p->dst_col + (uint64_t)(r - p->src_row) * step) * es;
                    copy_line(q, d0, step * es, sc->rows + (size_t)((x - c) * cs) * es, (size_t)rs * es, n);
                }
            } else {               /* source row r + k is destination row r + k - src_row */
                for (int64_t k = 0; k < n; k++) {
                    uint64_t d0 = (uint64_t)(p->dst_row + r + k - p->src_row) * rowbytes +
                                  (p->dst_col + (uint64_t)(c - p->src_col) * step) * es;
                    copy_line(q, d0, step * es, sc->rows + (size_t)(k * rs) * es, (size_t)cs * es, c1 - c);
                }
            }
        }
    }
    return 0;
}

/* The reads of one piece: MF_OK, 1 when the piece lies outside the request, or an error. */
static int read_piece(const request *q, const mf_piece *p, const mf_io *io, scratch *sc)
{
    mf_tensor located;
    int ready = mf_shard_locate(p->src, &located);
    if (ready != MF_OK)
        return ready == MF_ERR_CHANGED ? MF_ERR_CHANGED : MF_ERR_IO;
    const mf_tensor *t = &located;
    int file = p->src->file;
    size_t es = q->es;
    uint64_t rowbytes = (uint64_t)q->C * es;
    int64_t rows, cols, rs, cs;
    if (mf_tensor_2d(t, &rows, &cols, &rs, &cs) != 0)
        return mf_fail(MF_ERR_FORMAT, "a source tensor layout the gather engine cannot read (%d dims)", t->ndim);
    int64_t r0 = (int64_t)(q->off / rowbytes), r1 = (int64_t)((q->end + rowbytes - 1) / rowbytes);
    if (r0 < p->dst_row)
        r0 = p->dst_row;
    if (r1 > (int64_t)p->dst_row + p->rows)
        r1 = (int64_t)p->dst_row + p->rows;
    if (r0 >= r1)
        return 1;   /* outside the request: nothing read */
    if (io->file_bytes)
        __atomic_fetch_add(&io->file_bytes[p->src->file], (uint64_t)(r1 - r0) * p->cols * es, __ATOMIC_RELAXED);

    if (p->transposed || p->dst_step > 1)
        return gather_reordered(q, p, t, io, rs, cs, r0, r1, sc);
    if (cs != 1 && p->cols > 1)
        return gather_strided(q, p, t, io, rs, cs, r0, r1, sc);

    uint64_t src0 = t->offset + ((uint64_t)p->src_row * (uint64_t)rs + p->src_col) * es;
    if (p->dst_col == 0 && (int64_t)p->cols == q->C && (rs == (int64_t)p->cols || p->rows == 1)) {
        /* Contiguous on both sides: one pread straight into the caller's buffer. */
        uint64_t d0 = (uint64_t)p->dst_row * rowbytes, d1 = d0 + (uint64_t)p->rows * rowbytes;
        uint64_t a = q->off > d0 ? q->off : d0, b = q->end < d1 ? q->end : d1;
        return pread_full(io, file, q->dst + (a - q->off), (size_t)(b - a), src0 + (a - d0));
    }

    /* Rows are contiguous in the source but fill only some columns of the destination (row-split
     * tensors: o_proj, down_proj): each row's segment is read straight to its place in the
     * caller's buffer, many rows per preadv, no scratch copy. */
    uint64_t seg = (uint64_t)p->cols * es, stride = (uint64_t)rs * es;
    row_reads v = { sc->iov, 0, 0, 0 };
    for (int64_t r = r0; r < r1; r++) {
        uint64_t d0 = (uint64_t)r * rowbytes + (uint64_t)p->dst_col * es, d1 = d0 + seg;
        uint64_t a = q->off > d0 ? q->off : d0, b = q->end < d1 ? q->end : d1;
        if (a >= b)
            continue;
        uint64_t s = src0 + (uint64_t)(r - p->dst_row) * stride + (a - d0);
        int rc = row_reads_add(io, file, &v, sc->rows, q->dst + (a - q->off), (size_t)(b - a), s);
        if (rc)
            return rc;
    }
    return row_reads_flush(io, file, &v);
}

/* One piece of a request, then one fstat of its rank file: a file changes size, mtime or ctime
 * before any write lands in it, so a check after the piece's last pread sees every write that
 * could have reached the bytes it read (one syscall per piece, not per pread). */
static int gather_piece(const request *q, const mf_piece *p, const mf_io *io, scratch *sc)
{
    int rc = read_piece(q, p, io, sc);
    return rc == MF_OK ? check_unchanged(io, p->src->file) : rc > 0 ? MF_OK : rc;
}

/* A piece whose destination is whole rows and whose source rows are contiguous maps a byte
 * range of the HF tensor linearly onto a byte range of one file. */
static int piece_is_linear(const mf_hf_tensor *t, const mf_piece *p, const mf_tensor *src)
{
    int64_t rows, cols, rs, cs;
    if (p->transposed || p->dst_step > 1 || mf_tensor_2d(src, &rows, &cols, &rs, &cs) != 0)
        return 0;
    return p->dst_col == 0 && (int64_t)p->cols == mf_hf_cols(t) && (cs == 1 || p->cols == 1) &&
           (rs == (int64_t)p->cols || p->rows == 1);
}

int mf_gather_segments(const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len, mf_segment *segs, int max)
{
    size_t es = mf_dtype_size(t->src_dtype);
    uint64_t rowbytes = (uint64_t)mf_hf_cols(t) * es, end = off + len, next = off;
    int n = 0;
    if (t->dtype != t->src_dtype || t->add != 0.0f)
        return 0;
    for (uint32_t i = 0; i < t->n_pieces; i++) {
        const mf_piece *p = &t->pieces[i];
        uint64_t d0 = (uint64_t)p->dst_row * rowbytes, d1 = d0 + (uint64_t)p->rows * rowbytes;
        if (d1 <= off || d0 >= end)
            continue;
        mf_tensor src;
        if (mf_shard_locate(p->src, &src) != MF_OK)
            return 0;   /* the gather that follows reports it */
        if (!piece_is_linear(t, p, &src) || d0 > next || n == max)
            return 0;
        uint64_t a = off > d0 ? off : d0, b = end < d1 ? end : d1;
        if (a != next)
            return 0;   /* pieces out of order: gather instead */
        int64_t rows, cols, rs, cs;
        mf_tensor_2d(&src, &rows, &cols, &rs, &cs);
        uint64_t src0 = src.offset + ((uint64_t)p->src_row * (uint64_t)rs + p->src_col) * es;
        segs[n++] = (mf_segment){ p->src->file, src0 + (a - d0), (size_t)(b - a) };
        next = b;
    }
    if (next != end)
        return 0;
    for (int k = 0; k < n; k++)     /* each file once: consecutive segments of one file share it */
        if ((k == 0 || segs[k].fd != segs[k - 1].fd) && check_unchanged(io, segs[k].fd))
            return MF_ERR_CHANGED;
    for (int k = 0; k < n; k++) {   /* file index -> descriptor, and count the bytes */
        if (io->file_bytes)
            __atomic_fetch_add(&io->file_bytes[segs[k].fd], segs[k].len, __ATOMIC_RELAXED);
        segs[k].fd = io->fds[segs[k].fd];
    }
    return n;
}

static int gather_raw(const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len, uint8_t *dst, scratch *sc)
{
    request q = { off, off + len, dst, mf_dtype_size(t->src_dtype), mf_hf_cols(t) };
    for (uint32_t i = 0; i < t->n_pieces; i++) {
        int rc = gather_piece(&q, &t->pieces[i], io, sc);
        if (rc)
            return rc;
    }
    return 0;
}

int mf_gather(const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len, uint8_t *dst)
{
    scratch *sc = get_scratch();
    if (sc == NULL)
        return mf_fail(MF_ERR_NOMEM, "out of memory for the gather scratch");
    if (off > t->nbytes || len > t->nbytes - off)
        return mf_fail(MF_ERR_INVALID, "%s: bytes %llu+%zu outside the tensor", t->name, (unsigned long long)off, len);
    if (t->dtype == t->src_dtype && t->add == 0.0f)
        return gather_raw(t, io, off, len, dst, sc);

    /* Converting: gather whole source elements in chunks, convert, copy the asked bytes. */
    size_t ds = mf_dtype_size(t->dtype), ss = mf_dtype_size(t->src_dtype);
    uint64_t e = off / ds, e_end = (off + len + ds - 1) / ds;
    uint8_t tmp[CONV_ELEMS > 0 ? 64 : 1];
    while (e < e_end) {
        uint64_t n = e_end - e < CONV_ELEMS ? e_end - e : CONV_ELEMS;
        int rc = gather_raw(t, io, e * ss, (size_t)(n * ss), sc->conv, sc);
        if (rc)
            return rc;
        /* convert in place from the end would clobber; convert element by element into dst */
        for (uint64_t k = 0; k < n; k++) {
            uint64_t b = (e + k) * ds;
            mf_convert_add(t->src_dtype, sc->conv + k * ss, t->dtype, tmp, 1, t->add);
            uint64_t a0 = b > off ? b : off, a1 = b + ds < off + len ? b + ds : off + len;
            memcpy(dst + (a0 - off), tmp + (a0 - b), (size_t)(a1 - a0));
        }
        e += n;
    }
    return 0;
}
