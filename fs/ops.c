/* libfuse3 low-level operations: a thin, read-only adapter over the tree (tree.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "ops.h"
#include "read.h"
#include "readahead.h"
#include "stale.h"

static const char *mountpoint;
static unsigned max_read = FS_DEFAULT_MAX_READ;
static fs_cache_opts cache = FS_CACHE_OPTS_DEFAULT;
void fs_set_mountpoint(const char *path) { mountpoint = path; }
void fs_set_max_read(unsigned bytes) { max_read = bytes; }
void fs_set_cache_opts(const fs_cache_opts *o) { cache = *o; }

static const fs_tree *T(fuse_req_t req) { return fuse_req_userdata(req); }

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    const fs_tree *t = userdata;
    conn->max_readahead = 1u << 20;
    conn->max_read = max_read;   /* libfuse checks it equals the max_read mount option */
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
    fs_read_set_max(max_read);
    fs_tune_readahead(mountpoint, fs_tree_read_ahead_kb(t));
    fs_tree_serving(t);   /* after the fork: threads started before it would be gone */
}

/* A helper thread may still be invalidating pages: let it finish before the session goes. */
static void op_destroy(void *userdata)
{
    (void)userdata;
    fs_stale_wait();
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    int rc = fs_tree_lookup(T(req), parent, name, &e.ino, &e.attr);
    if (rc == -ENOENT) {   /* a negative entry the kernel may cache: the view never changes */
        memset(&e, 0, sizeof(e));
        e.entry_timeout = cache.negative_timeout;
        if (cache.negative_timeout > 0)
            fuse_reply_entry(req, &e);
        else
            fuse_reply_err(req, ENOENT);
        return;
    }
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    e.attr_timeout = cache.attr_timeout;
    e.entry_timeout = cache.entry_timeout;
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct stat st;
    (void)fi;
    int rc = fs_tree_getattr(T(req), ino, &st);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, cache.attr_timeout);
}

typedef struct {
    fuse_req_t req;
    char *buf;
    size_t size, used;
} dir_reply;

static int add_dirent(void *ctx, const char *name, fs_ino ino, mode_t mode, size_t next)
{
    dir_reply *d = ctx;
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = mode;
    size_t need = fuse_add_direntry(d->req, NULL, 0, name, NULL, 0);
    if (d->used + need > d->size)
        return 1;
    fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, &st, (off_t)next);
    d->used += need;
    return 0;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    dir_reply d = { req, malloc(size ? size : 1), size, 0 };
    if (!d.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int rc = fs_tree_readdir(T(req), ino, off > 0 ? (size_t)off : 0, add_dirent, &d);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_buf(req, d.buf, d.used);
    free(d.buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_open_file o;
    int rc = fs_tree_open(T(req), ino, fi->flags, &o);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fi->keep_cache = (unsigned)o.keep_cache;
    fi->direct_io = (unsigned)o.direct_io;
    fi->fh = o.fh;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    fs_read_reply(req, T(req), fi->fh, size, (uint64_t)off);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_tree_release(T(req), fi->fh);
    fuse_reply_err(req, 0);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    char target[256];
    int rc = fs_tree_readlink(T(req), ino, target, sizeof(target));
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_readlink(req, target);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs st;
    (void)ino;
    fs_tree_statfs(T(req), &st);
    fuse_reply_statfs(req, &st);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    fuse_reply_err(req, -fs_tree_access(T(req), ino, mask));
}

/* Everything that would modify the tree. */
static void ro_setattr(fuse_req_t r, fuse_ino_t i, struct stat *a, int s, struct fuse_file_info *f) { fuse_reply_err(r, EROFS); }
static void ro_mknod(fuse_req_t r, fuse_ino_t p, const char *n, mode_t m, dev_t d) { fuse_reply_err(r, EROFS); }
static void ro_mkdir(fuse_req_t r, fuse_ino_t p, const char *n, mode_t m) { fuse_reply_err(r, EROFS); }
static void ro_name(fuse_req_t r, fuse_ino_t p, const char *n) { fuse_reply_err(r, EROFS); }
static void ro_symlink(fuse_req_t r, const char *l, fuse_ino_t p, const char *n) { fuse_reply_err(r, EROFS); }
static void ro_rename(fuse_req_t r, fuse_ino_t p, const char *n, fuse_ino_t np, const char *nn, unsigned f) { fuse_reply_err(r, EROFS); }
static void ro_link(fuse_req_t r, fuse_ino_t i, fuse_ino_t np, const char *nn) { fuse_reply_err(r, EROFS); }
static void ro_write(fuse_req_t r, fuse_ino_t i, const char *b, size_t n, off_t o, struct fuse_file_info *f) { fuse_reply_err(r, EROFS); }
static void ro_create(fuse_req_t r, fuse_ino_t p, const char *n, mode_t m, struct fuse_file_info *f) { fuse_reply_err(r, EROFS); }
static void ro_setxattr(fuse_req_t r, fuse_ino_t i, const char *n, const char *v, size_t s, int f) { fuse_reply_err(r, EROFS); }
static void ro_removexattr(fuse_req_t r, fuse_ino_t i, const char *n) { fuse_reply_err(r, EROFS); }

const struct fuse_lowlevel_ops mcorefs_ll_ops = {
    .init = op_init,
    .destroy = op_destroy,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .readlink = op_readlink,
    .statfs = op_statfs,
    .access = op_access,
    .setattr = ro_setattr,
    .mknod = ro_mknod,
    .mkdir = ro_mkdir,
    .unlink = ro_name,
    .rmdir = ro_name,
    .symlink = ro_symlink,
    .rename = ro_rename,
    .link = ro_link,
    .write = ro_write,
    .create = ro_create,
    .setxattr = ro_setxattr,
    .removexattr = ro_removexattr,
};
