/* The one gather engine: bytes of an HF tensor from its pieces, lazily, with few large preads. */
#ifndef MCOREFS_GATHER_H
#define MCOREFS_GATHER_H

#include <stddef.h>
#include <stdint.h>
#include "mcorefs/mapping.h"

/* A source tensor seen as 2-D rows x cols with element strides. 0, or -1 if not expressible. */
int mf_tensor_2d(const mf_tensor *t, int64_t *rows, int64_t *cols, int64_t *rstride, int64_t *cstride);

/* Where reads go: the rank files' descriptors (indexed like the checkpoint's files),
 * optional per-file byte counters, bumped atomically, and the rank files themselves, whose
 * recorded identity every pread is checked against. */
typedef struct {
    const int *fds;
    uint64_t *file_bytes;       /* may be NULL */
    const mf_rankfile *files;   /* may be NULL: no identity check (tests only) */
} mf_io;

/* Fill dst with bytes [off, off+len) of tensor t (in its shown dtype). Returns MF_OK or a negative
 * mf_status: MF_ERR_IO on short reads (e.g. a rank file truncated after mount), MF_ERR_CHANGED
 * when a rank file changed since mount (checked by fstat after each pread); mf_error() names
 * the file.
 * Thread-safe; no locks. */
int mf_gather(const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len, uint8_t *dst);

/* A part of a read: a byte range of a rank file that can be sent as it is (fd >= 0, for
 * zero-copy splicing), or bytes already gathered into the caller's buffer (fd < 0). */
typedef struct {
    int fd;
    uint64_t pos;      /* fd: file offset; buffer: offset into the caller's buffer */
    size_t len;
} mf_segment;

/* If bytes [off, off+len) of t are plain file ranges (no dtype conversion, every piece contiguous
 * on both sides), append them to segs (at most max) and return how many; 0 when they are not
 * (the caller gathers instead). The caller sends the ranges after this returns, so the files'
 * identity is checked here, just before: MF_ERR_CHANGED when one changed since mount. */
int mf_gather_segments(const mf_hf_tensor *t, const mf_io *io, uint64_t off, size_t len, mf_segment *segs, int max);

/* Dtype conversion of n elements (round to nearest even when narrowing). */
void mf_convert(mf_dtype from, const void *src, mf_dtype to, void *dst, size_t n);
/* mf_convert with `add` added to every value (float arithmetic, one rounding to `to`); add 0:
 * mf_convert. Only float dtypes. */
void mf_convert_add(mf_dtype from, const void *src, mf_dtype to, void *dst, size_t n, float add);

#endif
