/* One range of a view file into the export's output file. The view says which bytes are plain
 * rank-file ranges (mf_session_read_segments): those are copied by the kernel, page cache to
 * page cache, in one copy per byte like `cp`; gathered bytes are written from the buffer, each
 * run of them with one pwrite. Without copy_file_range (another file system, an old kernel, or
 * the tests' MCOREFS_EXPORT_NO_KERNEL_COPY) the plain ranges are read into their place in the
 * buffer and the whole range is written with one pwrite. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "export_copy.h"
#include "mcorefs/error.h"
#include "mcorefs/fileid.h"

#define MAX_SEGMENTS 1024   /* per range; beyond that the view gathers instead (still correct) */

void export_copier_init(export_copier *c, const mf_session *s, int kernel_copy)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->kernel_copy = kernel_copy;
}

void export_scratch_free(export_scratch *sc)
{
    free(sc->buf);
    free(sc->segs);
    sc->buf = NULL;
    sc->segs = NULL;
}

int export_scratch_init(export_scratch *sc, size_t cap)
{
    sc->cap = cap;
    sc->max_segs = MAX_SEGMENTS;
    sc->buf = malloc(cap);
    sc->segs = malloc(sc->max_segs * sizeof *sc->segs);
    if (!sc->buf || !sc->segs) {
        export_scratch_free(sc);
        return mf_fail(MF_ERR_NOMEM, "out of memory for a %zu KiB export buffer", cap >> 10);
    }
    return MF_OK;
}

static const mf_rankfile *rank_file_of(const mf_session *s, int fd)
{
    for (size_t i = 0; i < s->ckpt.n_files; i++)
        if (s->fds[i] == fd)
            return &s->ckpt.files[i];
    return NULL;
}

int export_check_source(const mf_session *s, int fd)
{
    const mf_rankfile *f = rank_file_of(s, fd);
    if (!f)
        return mf_fail(MF_ERR_IO, "descriptor %d is no file of the checkpoint", fd);
    return mf_file_id_check(fd, &f->id, f->path);
}

enum { KERNEL_DONE = 1, KERNEL_REFUSED = 0, KERNEL_SHORT = 2 };

/* errno values that mean "not between these two files", not "the disk failed" */
static int refused(int e)
{
    return e == EXDEV || e == EOPNOTSUPP || e == ENOSYS || e == EINVAL || e == EBADF;
}

int export_kernel_copy(int src, uint64_t src_off, int dst, uint64_t dst_off, size_t len, size_t *done,
                       const volatile sig_atomic_t *stop)
{
    *done = 0;
    while (*done < len) {
        loff_t in = (loff_t)(src_off + *done), out = (loff_t)(dst_off + *done);
        ssize_t n = copy_file_range(src, &in, dst, &out, len - *done, 0);
        if (n < 0 && errno == EINTR) {
            if (*stop)
                return mf_fail(MF_ERR_IO, "interrupted");
            continue;
        }
        if (n < 0)
            return refused(errno) ? KERNEL_REFUSED : mf_fail(MF_ERR_IO, "copy_file_range: %s", strerror(errno));
        if (n == 0)
            return KERNEL_SHORT;   /* the source ends early: the pread that follows says where */
        *done += (size_t)n;
    }
    return KERNEL_DONE;
}

/* Exactly len bytes of rank file fd; a short file is MF_ERR_CHANGED when its identity moved. */
static int read_source(const mf_session *s, int fd, char *buf, size_t len, uint64_t off)
{
    const mf_rankfile *f = rank_file_of(s, fd);
    const char *path = f ? f->path : "(rank file)";
    for (size_t got = 0; got < len;) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : 0;
            if (export_check_source(s, fd) == MF_ERR_CHANGED)
                return MF_ERR_CHANGED;
            return e ? mf_fail(MF_ERR_IO, "%s: read at %llu: %s", path, (unsigned long long)(off + got), strerror(e))
                     : mf_fail(MF_ERR_IO, "%s: ends at %llu (needed %zu bytes at %llu)", path,
                               (unsigned long long)(off + got), len, (unsigned long long)off);
        }
        got += (size_t)n;
    }
    return MF_OK;
}

static int write_out(int fd, const char *name, const char *buf, size_t len, uint64_t off,
                     const volatile sig_atomic_t *stop)
{
    for (size_t put = 0; put < len;) {
        ssize_t n = pwrite(fd, buf + put, len - put, (off_t)(off + put));
        if (n < 0 && errno == EINTR && !*stop)
            continue;
        if (n <= 0)
            return mf_fail(MF_ERR_IO, "%s: %s", name, n < 0 ? strerror(errno) : "write returned 0");
        put += (size_t)n;
    }
    return MF_OK;
}

typedef struct {
    export_copier *c;
    int out;
    const char *name;
    uint64_t off;             /* the range's offset in the file */
    char *buf;
    size_t run_from, run_to;  /* bytes in buf, at their range offsets, not written yet */
    const volatile sig_atomic_t *stop;
} range_writer;

static int flush_run(range_writer *w)
{
    size_t n = w->run_to - w->run_from;
    if (n == 0)
        return MF_OK;
    int rc = write_out(w->out, w->name, w->buf + w->run_from, n, w->off + w->run_from, w->stop);
    __atomic_fetch_add(&w->c->user_bytes, n, __ATOMIC_RELAXED);
    w->run_from = w->run_to;
    return rc;
}

/* One plain rank-file range that belongs at range offset `at`. */
static int copy_segment(range_writer *w, const mf_segment *g, size_t at)
{
    size_t done = 0;
    if (__atomic_load_n(&w->c->kernel_copy, __ATOMIC_RELAXED)) {
        int rc = flush_run(w);
        if (rc)
            return rc;
        rc = export_kernel_copy(g->fd, g->pos, w->out, w->off + at, g->len, &done, w->stop);
        __atomic_fetch_add(&w->c->kernel_bytes, done, __ATOMIC_RELAXED);
        if (rc < 0)
            return mf_fail_ctx(rc, "%s", w->name);
        if (rc == KERNEL_DONE) {
            w->run_from = w->run_to = at + g->len;
            return MF_OK;
        }
        if (rc == KERNEL_REFUSED)   /* for this pair of files, so for every other pair too */
            __atomic_store_n(&w->c->kernel_copy, 0, __ATOMIC_RELAXED);
        w->run_from = w->run_to = at + done;
    }
    int rc = read_source(w->c->s, g->fd, w->buf + at + done, g->len - done, g->pos + done);
    w->run_to = at + g->len;
    return rc;
}

int export_copy_range(export_copier *c, const mf_vfile *f, int out_fd, const char *out_name, uint64_t off,
                      size_t len, export_scratch *sc, const volatile sig_atomic_t *stop)
{
    if (len > sc->cap)
        return mf_fail(MF_ERR_INVALID, "export range of %zu bytes exceeds its %zu-byte buffer", len, sc->cap);
    mf_error_clear();
    ssize_t n = mf_session_read_segments(c->s, f, sc->buf, len, off, sc->segs, sc->max_segs);
    if (n < 0)
        return (int)n;
    range_writer w = { c, out_fd, out_name, off, sc->buf, 0, 0, stop };
    size_t at = 0;
    int rc = MF_OK;
    for (ssize_t k = 0; k < n && rc == MF_OK; k++) {
        const mf_segment *g = &sc->segs[k];
        if (g->fd >= 0) {
            rc = copy_segment(&w, g, at);
        } else if (g->pos == at) {   /* gathered: already in buf at its range offset */
            w.run_to = at + g->len;
        } else {
            rc = mf_fail(MF_ERR_IO, "%s: gathered bytes out of place at %llu", f->name, (unsigned long long)(off + at));
        }
        at += g->len;
    }
    if (rc == MF_OK)
        rc = flush_run(&w);
    if (rc == MF_OK && at != len)
        rc = mf_fail(MF_ERR_IO, "%s: %zu bytes at %llu, expected %zu", f->name, at, (unsigned long long)off, len);
    if (c->after_copy)
        c->after_copy(c->after_copy_arg);
    /* The view checked the sources before handing out the ranges; the bytes were copied since:
     * check again, so that a rank file rewritten during the copy fails the export. */
    int checked[64];
    size_t n_checked = 0;
    for (ssize_t k = 0; k < n && rc == MF_OK; k++) {
        int fd = sc->segs[k].fd, seen = fd < 0;
        for (size_t j = 0; j < n_checked && !seen; j++)
            seen = checked[j] == fd;
        if (seen)
            continue;
        if ((rc = export_check_source(c->s, fd)) != MF_OK)
            mf_fail_ctx(rc, "export of %s (bytes %llu+%zu)", f->name, (unsigned long long)off, len);
        if (n_checked < sizeof checked / sizeof checked[0])
            checked[n_checked++] = fd;
    }
    return rc;
}
