/* The read path: a request's bytes gathered straight into a reused per-thread reply buffer, or
 * handed to libfuse as file ranges to splice; then one reply. No allocation and no lock of ours
 * per request (the buffer is allocated on a thread's first read). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "mcorefs/error.h"
#include "read.h"
#include "stale.h"

#define MAX_SEGS 64
#define PAGE 4096u

static size_t reply_capacity = 1u << 20;
static size_t pipe_limit = 1u << 20;   /* bytes libfuse's per-thread splice pipe can grow to */

/* Largest pipe this process may have: pipe-max-size, or more with CAP_SYS_RESOURCE (root), which
 * F_SETPIPE_SZ tells by succeeding. libfuse grows its pipe to what a reply needs; a reply that
 * needs more than this would make it fall back to allocating and copying, so such replies are
 * sent from memory instead (see splice_whole_reply). */
static size_t probe_pipe_limit(size_t want)
{
    int fds[2];
    size_t limit = 1u << 20;
    FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
    if (f) {
        unsigned long v;
        if (fscanf(f, "%lu", &v) == 1 && v >= PAGE)
            limit = v;
        fclose(f);
    }
    if (want > limit && pipe2(fds, O_CLOEXEC) == 0) {
        int got = fcntl(fds[0], F_SETPIPE_SZ, (int)want);
        if (got > 0 && (size_t)got > limit)
            limit = (size_t)got;
        close(fds[0]);
        close(fds[1]);
    }
    return limit;
}

/* libfuse's own estimate of the pipe a reply needs (fuse_send_data_iov): it grows its pipe to
 * that, or gives up on splicing that reply when it cannot. */
static size_t libfuse_pipe_need(size_t nbufs, size_t len)
{
    return PAGE * (1 + nbufs + 1) + 16 + len;   /* 16: struct fuse_out_header */
}

void fs_read_set_max(size_t max_read)
{
    if (max_read > reply_capacity)
        reply_capacity = max_read;
    /* one reply of max_read bytes in one file range, in the worst alignment */
    pipe_limit = probe_pipe_limit(libfuse_pipe_need(1, max_read) + PAGE);
}

typedef struct {
    char *mem;
    size_t cap;
} reply_buffer;

static pthread_key_t buffer_key;
static pthread_once_t buffer_once = PTHREAD_ONCE_INIT;

static void buffer_free(void *p)
{
    reply_buffer *b = p;
    if (b) {
        free(b->mem);
        free(b);
    }
}

static void buffer_key_init(void) { pthread_key_create(&buffer_key, buffer_free); }

/* This thread's reply buffer, of at least size bytes: allocated on the thread's first read (or a
 * larger one than ever before), then reused. NULL when memory runs out. */
static char *thread_buffer(size_t size)
{
    pthread_once(&buffer_once, buffer_key_init);
    reply_buffer *b = pthread_getspecific(buffer_key);
    if (b && b->cap >= size)
        return b->mem;
    size_t cap = size > reply_capacity ? size : reply_capacity;
    char *mem = NULL;
    if (posix_memalign((void **)&mem, PAGE, cap ? cap : 1) != 0)
        return NULL;
    if (!b && (b = calloc(1, sizeof(*b))) == NULL) {
        free(mem);
        return NULL;
    }
    free(b->mem);
    b->mem = mem;
    b->cap = cap;
    pthread_setspecific(buffer_key, b);
    return mem;
}

/* Pipe buffers a reply of these segments needs: the header's, then each segment from its page. */
static size_t pipe_pages(const mf_segment *segs, ssize_t n)
{
    size_t pages = 1;
    for (ssize_t i = 0; i < n; i++)
        pages += ((segs[i].fd >= 0 ? segs[i].pos & (PAGE - 1) : 0) + segs[i].len + PAGE - 1) / PAGE;
    return pages;
}

/* Splice a reply only when every byte is a file range (one copy: the kernel's, from the rank
 * file's page cache into the mount's), the reply is two pages or more (libfuse's own threshold) and
 * the pipe can hold it. Bytes already in memory would
 * cost a copy into the pipe and another out of it: those replies, and the ones too big for the
 * pipe, go from memory with one writev (at most two copies per byte: the pread, the writev). */
static int splice_whole_reply(const mf_segment *segs, ssize_t n, size_t len)
{
    for (ssize_t i = 0; i < n; i++)
        if (segs[i].fd < 0)
            return 0;
    /* under two pages libfuse does not splice but allocates a buffer and copies into it */
    return len >= 2 * PAGE && libfuse_pipe_need((size_t)n, len) <= pipe_limit && pipe_pages(segs, n) * PAGE <= pipe_limit;
}

/* The errno boundary of the read path: log the core's one-line message, start dropping cached
 * pages when a rank file changed under the mount, and answer EIO (ENOMEM when memory ran out). */
static void reply_error(fuse_req_t req, const fs_tree *t, int status)
{
    fs_log("%s", mf_error());
    if (status == MF_ERR_CHANGED)
        fs_source_changed(t);
    fuse_reply_err(req, status == MF_ERR_NOMEM ? ENOMEM : EIO);
}

/* The rank files' identity is checked (in the core) just before file ranges are returned; a
 * write between that fstat and libfuse's splice is not seen by this read (see README Safety). */
void fs_read_reply(fuse_req_t req, const fs_tree *t, uint64_t fh, size_t size, uint64_t off)
{
    mf_segment segs[MAX_SEGS];
    struct {
        struct fuse_bufvec v;
        struct fuse_buf more[MAX_SEGS];   /* v.buf[1..]: fuse_bufvec ends in a one-element array */
    } reply;
    char *buf = thread_buffer(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ssize_t n = fs_tree_read(t, fh, buf, size, off, segs, MAX_SEGS);
    size_t len = 0;
    for (ssize_t i = 0; i < n; i++)
        len += segs[i].len;
    int splice = n > 0 && splice_whole_reply(segs, n, len);
    if (n > 0 && !splice)   /* file ranges read to their place in buf: one buffer */
        n = mf_session_fill_segments(fs_tree_handle_view(t, fh), buf, segs, (size_t)n);
    if (n < 0) {
        reply_error(req, t, (int)n);
        return;
    }
    if (n == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    memset(&reply.v, 0, sizeof(reply.v));
    reply.v.count = (size_t)n;
    struct fuse_buf *bufs = reply.v.buf;   /* continues into reply.more */
    for (ssize_t i = 0; i < n; i++) {
        struct fuse_buf *b = bufs + i;
        memset(b, 0, sizeof(*b));
        b->size = segs[i].len;
        if (segs[i].fd >= 0) {
            b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
            b->fd = segs[i].fd;
            b->pos = (off_t)segs[i].pos;
        } else {
            b->mem = buf + segs[i].pos;
        }
    }
    /* NO_SPLICE: libfuse sends the one in-memory buffer with one writev, without allocating */
    fuse_reply_data(req, &reply.v, splice ? FUSE_BUF_SPLICE_MOVE : FUSE_BUF_NO_SPLICE);
}
