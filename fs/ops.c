/* libfuse3 operations: a thin, read-only adapter over the core session. */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include "log.h"
#include "mcorefs/error.h"
#include "ops.h"
#include "readahead.h"
#include "stale.h"

static mf_session *S(void) { return fuse_get_context()->private_data; }

static const char *mountpoint;
static unsigned max_read = FS_DEFAULT_MAX_READ;
void fs_set_mountpoint(const char *path) { mountpoint = path; }
void fs_set_max_read(unsigned bytes) { max_read = bytes; }

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    cfg->kernel_cache = 1;          /* contents never change: keep the page cache (mmap works) */
    cfg->entry_timeout = 3600.0;
    cfg->attr_timeout = 3600.0;
    cfg->negative_timeout = 3600.0;
    cfg->direct_io = 0;
    conn->max_readahead = 1u << 20;
    conn->max_read = max_read;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
    fs_tune_readahead(mountpoint, ((mf_session *)fuse_get_context()->private_data)->opts.read_ahead_kb);
    return fuse_get_context()->private_data;
}

static const mf_vfile *lookup(const char *path)
{
    return path[0] == '/' ? mf_session_lookup(S(), path + 1) : NULL;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    /* Owner and bits of the checkpoint's own files (core/permissions.c); the kernel enforces them
     * (default_permissions). Write bits may show: every modifying call still gets EROFS. */
    memset(st, 0, sizeof(*st));
    st->st_mtime = st->st_ctime = st->st_atime = (time_t)S()->mtime;
    if (strcmp(path, "/") == 0 || strcmp(path, "/" MF_META_DIR) == 0) {
        st->st_mode = S_IFDIR | S()->dir_mode;
        st->st_uid = S()->dir_uid;
        st->st_gid = S()->dir_gid;
        st->st_nlink = 2;
        return 0;
    }
    const mf_vfile *f = lookup(path);
    if (!f)
        return -ENOENT;
    st->st_uid = f->uid;
    st->st_gid = f->gid;
    st->st_mode = S_IFREG | f->mode;
    st->st_nlink = 1;
    st->st_size = (off_t)f->size;
    st->st_blocks = (blkcnt_t)((f->size + 511) / 512);
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    /* A flat view. The .mcorefs/ folder is reachable by name but not listed, so that
     * `cp -r` of the mount is exactly the HF directory. */
    int meta = strcmp(path, "/" MF_META_DIR) == 0;
    size_t plen = strlen(MF_META_DIR "/");
    if (strcmp(path, "/") != 0 && !meta)
        return lookup(path) ? -ENOTDIR : -ENOENT;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    for (size_t i = 0; i < S()->n_files; i++) {
        const char *n = S()->files[i].name;
        if (!meta && strchr(n, '/') == NULL)
            fill(buf, n, NULL, 0, 0);
        else if (meta && strncmp(n, MF_META_DIR "/", plen) == 0)
            fill(buf, n + plen, NULL, 0, 0);
    }
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    const mf_vfile *f = lookup(path);
    if (!f)
        return -ENOENT;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    fi->keep_cache = f->kind != MF_VF_STATS;
    fi->direct_io = f->kind == MF_VF_STATS;   /* live counters: bypass the page cache */
    fi->fh = (uint64_t)(f - S()->files);
    return 0;
}

/* The errno boundary of the read path: log the core's one-line message, start dropping cached
 * pages when a rank file changed under the mount, and answer EIO (ENOMEM when memory ran out). */
static int read_error(mf_session *s, int status)
{
    fs_log("%s", mf_error());
    if (status == MF_ERR_CHANGED)
        fs_source_changed(fuse_get_context()->fuse, s);
    return status == MF_ERR_NOMEM ? -ENOMEM : -EIO;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    mf_session *s = S();
    const mf_vfile *f = fi && fi->fh < s->n_files ? &s->files[fi->fh] : lookup(path);
    if (!f)
        return -ENOENT;
    ssize_t n = mf_session_read(s, f, buf, size, (uint64_t)off);
    return n < 0 ? read_error(s, (int)n) : (int)n;
}

#define MAX_SEGS 64
/* libfuse splices a reply through a pipe of at most fs.pipe-max-size (1 MiB = 256 pages by
 * default); unaligned file ranges need a page more each, and a reply that does not fit falls
 * back to a slow path. Larger requests (read_ahead_kb > 512) are gathered into memory. */
#define SPLICE_MAX FS_DEFAULT_MAX_READ

/* Pipe buffers a reply of these segments needs (each starts on its own page). */
static size_t pipe_pages(const mf_segment *segs, ssize_t n)
{
    size_t pages = 0;
    for (ssize_t i = 0; i < n; i++)
        pages += ((segs[i].fd >= 0 ? segs[i].pos & 4095 : 0) + segs[i].len + 4095) / 4096 + 1;
    return pages;
}

/* The reply's buffers: fd ranges for libfuse to splice, memory for gathered bytes (a single
 * gathered segment hands over buf itself; several get copies). NULL when memory runs out:
 * the caller fails the whole read rather than send a short reply with later bytes shifted. */
static struct fuse_bufvec *make_bufvec(const mf_segment *segs, ssize_t n, char **buf)
{
    struct fuse_bufvec *bv = calloc(1, sizeof(*bv) + (size_t)(n ? n : 1) * sizeof(struct fuse_buf));
    if (!bv)
        return NULL;
    bv->count = (size_t)n;
    for (ssize_t i = 0; i < n; i++) {
        struct fuse_buf *b = &bv->buf[i];
        b->size = segs[i].len;
        if (segs[i].fd >= 0) {
            b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
            b->fd = segs[i].fd;
            b->pos = (off_t)segs[i].pos;
        } else if (n == 1) {
            b->mem = *buf;          /* libfuse frees it */
            *buf = NULL;
        } else if ((b->mem = malloc(segs[i].len)) != NULL) {
            memcpy(b->mem, *buf + segs[i].pos, segs[i].len);
        } else {
            for (ssize_t k = 0; k < i; k++)
                if (!(bv->buf[k].flags & FUSE_BUF_IS_FD))
                    free(bv->buf[k].mem);
            free(bv);
            return NULL;
        }
    }
    return bv;
}

/* Reads as buffer vectors: file ranges that need no gathering are handed to libfuse as fd
 * buffers, which it splices from the rank file's page cache into /dev/fuse (one copy fewer).
 * The rank files' identity is checked (in the core) just before we return those ranges; a
 * write between that fstat and libfuse's splice is not seen by this read (see README Safety). */
static int op_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off, struct fuse_file_info *fi)
{
    mf_session *s = S();
    const mf_vfile *f = fi && fi->fh < s->n_files ? &s->files[fi->fh] : lookup(path);
    mf_segment segs[MAX_SEGS];
    if (!f)
        return -ENOENT;
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    ssize_t n = -1;
    if (size <= SPLICE_MAX) {
        n = mf_session_read_segments(s, f, buf, size, (uint64_t)off, segs, MAX_SEGS);
        if (n > 0 && pipe_pages(segs, n) > 240)
            n = -1;   /* would not fit the splice pipe: gather instead */
        else if (n < 0)
            goto failed;
    }
    if (n < 0) {
        n = mf_session_read(s, f, buf, size, (uint64_t)off);
        if (n > 0)
            segs[0] = (mf_segment){ -1, 0, (size_t)n };
        n = n > 0 ? 1 : n;
    }
failed:
    if (n < 0) {
        free(buf);
        return read_error(s, (int)n);
    }
    struct fuse_bufvec *bv = make_bufvec(segs, n, &buf);
    free(buf);
    if (!bv)
        return -ENOMEM;
    *bufp = bv;
    return 0;
}

/* A helper thread may still be invalidating pages: let it finish before the session goes. */
static void op_destroy(void *private_data)
{
    (void)private_data;
    fs_stale_wait();
}

static int op_statfs(const char *path, struct statvfs *st)
{
    uint64_t total = 0;
    memset(st, 0, sizeof(*st));
    for (size_t i = 0; i < S()->n_files; i++)
        total += S()->files[i].size;
    st->f_bsize = st->f_frsize = 4096;
    st->f_blocks = (total + 4095) / 4096;
    st->f_files = S()->n_files + 1;
    st->f_namemax = 255;
    st->f_flag = ST_RDONLY;
    return 0;
}

static int op_access(const char *path, int mask)
{
    if (strcmp(path, "/") != 0 && strcmp(path, "/" MF_META_DIR) != 0 && !lookup(path))
        return -ENOENT;
    return (mask & W_OK) ? -EROFS : 0;
}

/* Everything that would modify the tree. */
static int ro_path(const char *p) { return -EROFS; }
static int ro_path_mode(const char *p, mode_t m) { return -EROFS; }
static int ro_two(const char *a, const char *b) { return -EROFS; }
static int ro_rename(const char *a, const char *b, unsigned int f) { return -EROFS; }
static int ro_chmod(const char *p, mode_t m, struct fuse_file_info *fi) { return -EROFS; }
static int ro_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi) { return -EROFS; }
static int ro_truncate(const char *p, off_t o, struct fuse_file_info *fi) { return -EROFS; }
static int ro_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi) { return -EROFS; }
static int ro_create(const char *p, mode_t m, struct fuse_file_info *fi) { return -EROFS; }
static int ro_write(const char *p, const char *b, size_t n, off_t o, struct fuse_file_info *fi) { return -EROFS; }
static int ro_mknod(const char *p, mode_t m, dev_t d) { return -EROFS; }
static int ro_setxattr(const char *p, const char *n, const char *v, size_t s, int f) { return -EROFS; }
static int ro_removexattr(const char *p, const char *n) { return -EROFS; }

const struct fuse_operations mcorefs_ops = {
    .init = op_init,
    .destroy = op_destroy,
    .getattr = op_getattr,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .read_buf = op_read_buf,
    .statfs = op_statfs,
    .access = op_access,
    .mkdir = ro_path_mode,
    .mknod = ro_mknod,
    .unlink = ro_path,
    .rmdir = ro_path,
    .symlink = ro_two,
    .link = ro_two,
    .rename = ro_rename,
    .chmod = ro_chmod,
    .chown = ro_chown,
    .truncate = ro_truncate,
    .utimens = ro_utimens,
    .create = ro_create,
    .write = ro_write,
    .setxattr = ro_setxattr,
    .removexattr = ro_removexattr,
};
