/* The read path: a request's bytes into a reused per-thread reply buffer (gathered pieces) or
 * handed to libfuse as file ranges to splice, then one reply. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mcorefs/error.h"
#include "read.h"
#include "stale.h"

#define MAX_SEGS 64
/* libfuse splices a reply through a pipe of at most fs.pipe-max-size (1 MiB = 256 pages by
 * default); unaligned file ranges need a page more each, and a reply that does not fit falls
 * back to a slow path. Larger requests (read_ahead_kb > 512) are gathered into memory. */
#define SPLICE_MAX (896u << 10)
#define SPLICE_MAX_PAGES 240

static size_t reply_capacity = 1u << 20;

void fs_read_set_max(size_t max_read)
{
    if (max_read > reply_capacity)
        reply_capacity = max_read;
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
    if (posix_memalign((void **)&mem, 4096, cap ? cap : 1) != 0)
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

/* Pipe buffers a reply of these segments needs (each starts on its own page). */
static size_t pipe_pages(const mf_segment *segs, ssize_t n)
{
    size_t pages = 0;
    for (ssize_t i = 0; i < n; i++)
        pages += ((segs[i].fd >= 0 ? segs[i].pos & 4095 : 0) + segs[i].len + 4095) / 4096 + 1;
    return pages;
}

static int has_file_ranges(const mf_segment *segs, ssize_t n)
{
    for (ssize_t i = 0; i < n; i++)
        if (segs[i].fd >= 0)
            return 1;
    return 0;
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

/* File ranges that need no gathering go to libfuse as fd buffers, which it splices from the rank
 * file's page cache into /dev/fuse (one copy fewer). The rank files' identity is checked (in the
 * core) just before we return those ranges; a write between that fstat and libfuse's splice is
 * not seen by this read (see README Safety). */
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
    if (n > 0 && has_file_ranges(segs, n) && (size > SPLICE_MAX || pipe_pages(segs, n) > SPLICE_MAX_PAGES))
        n = mf_session_fill_segments(fs_tree_view(t, (uint32_t)FS_INO_VIEW(fh)), buf, segs, (size_t)n);
    if (n < 0) {
        reply_error(req, t, (int)n);
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
    if (n == 0)
        fuse_reply_buf(req, NULL, 0);
    else
        fuse_reply_data(req, &reply.v, FUSE_BUF_SPLICE_MOVE);
}
