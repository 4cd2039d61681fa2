/* libfuse3 operations of a mounted training run (-o iterations=all): the root holds one folder
 * per shown iteration (each the same view a single-iteration mount shows) and `latest`, a
 * symlink to the iteration the tracker names. A thin adapter over core/run_views.c. */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include "log.h"
#include "mcorefs/error.h"
#include "mcorefs/run.h"
#include "readahead.h"
#include "run_ops.h"

#define LATEST "latest"

static mf_run *R(void) { return fuse_get_context()->private_data; }

static const char *mountpoint;
static unsigned max_read = FS_DEFAULT_MAX_READ;
static long long read_ahead_kb = -1;
void fs_run_set_mount(const char *path, unsigned max_read_bytes, long long ra_kb)
{
    mountpoint = path;
    max_read = max_read_bytes;
    read_ahead_kb = ra_kb;
}

/* An open file: its view stays built (pinned) until release. */
typedef struct {
    int is_dir;            /* 0 */
    mf_run_view *v;
    const mf_vfile *f;
} open_file;

/* An open folder: its path, for readdir (with nullpath_ok libfuse may pass none). */
typedef struct {
    int is_dir;            /* 1 */
    char path[];
} open_dir;

/* An iteration deleted or replaced by a new generation: the kernel forgets what it cached of
 * its folder (called on the watcher's thread, never inside a request: no deadlock). */
static void drop_entry(void *fuse, const char *name)
{
    char path[MF_RUN_NAME_MAX + 2];
    snprintf(path, sizeof(path), "/%s", name);
    fuse_invalidate_path(fuse, path);   /* -ENOENT when never looked up: nothing cached */
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* The root changes as the run saves: short entry and attribute lifetimes, no negative
     * entries (a new iteration must be found by name at once). File contents are fixed per
     * generation, but a generation may replace another under the same name: the page cache is
     * dropped at each open (keep_cache = 0) and a new generation shows a new mtime. */
    cfg->kernel_cache = 0;
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 1.0;
    cfg->negative_timeout = 0;
    cfg->direct_io = 0;
    cfg->nullpath_ok = 1;   /* reads of an open file need no path: its iteration may be gone */
    conn->max_readahead = 1u << 20;
    conn->max_read = max_read;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    fs_tune_readahead(mountpoint, read_ahead_kb);
    mf_run_on_gone(fuse_get_context()->private_data, drop_entry, fuse_get_context()->fuse);
    mf_run_watch_begin(fuse_get_context()->private_data);   /* here: the daemon has forked */
    return fuse_get_context()->private_data;
}

/* "/iter_0000020/a/b" -> name "iter_0000020", rest "a/b" ("" for the folder itself). */
static int split_path(const char *path, char name[MF_RUN_NAME_MAX], const char **rest)
{
    const char *p = path + 1, *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= MF_RUN_NAME_MAX)
        return -1;
    memcpy(name, p, n);
    name[n] = 0;
    *rest = slash ? slash + 1 : "";
    return 0;
}

/* Log a failed view build once per message (lookups of a broken iteration repeat it). */
static void log_once(const char *msg)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char last[512];
    pthread_mutex_lock(&lock);
    if (strncmp(last, msg, sizeof(last) - 1) != 0) {
        snprintf(last, sizeof(last), "%s", msg);
        fs_log("%s", msg);
    }
    pthread_mutex_unlock(&lock);
}

/* The view of an iteration, pinned; -ENOENT when not shown, -EIO when it cannot be built. */
static int acquire(const char *name, mf_run_view **v)
{
    int rc = mf_run_acquire(R(), name, v);
    if (rc == MF_OK)
        return 0;
    if (rc == MF_ERR_MISSING)
        return -ENOENT;
    log_once(mf_error());
    return rc == MF_ERR_NOMEM ? -ENOMEM : -EIO;
}

static void fill_dir(struct stat *st, const struct stat *from)
{
    st->st_mode = S_IFDIR | (from->st_mode & 07777);
    st->st_uid = from->st_uid;
    st->st_gid = from->st_gid;
    st->st_nlink = 2;
    st->st_mtim = from->st_mtim;
    st->st_ctim = from->st_ctim;
    st->st_atim = from->st_mtim;
}

/* getattr inside one view (as fs/ops.c shows a single-iteration mount). */
static int view_getattr(const mf_run_view *v, const char *rest, struct stat *st)
{
    const mf_session *s = v->s;
    st->st_mtim.tv_sec = (time_t)(v->mtime_ns / 1000000000);
    st->st_mtim.tv_nsec = (long)(v->mtime_ns % 1000000000);
    st->st_ctim = st->st_atim = st->st_mtim;
    if (rest[0] == 0 || strcmp(rest, MF_META_DIR) == 0) {
        st->st_mode = S_IFDIR | s->dir_mode;
        st->st_uid = s->dir_uid;
        st->st_gid = s->dir_gid;
        st->st_nlink = 2;
        return 0;
    }
    const mf_vfile *f = mf_session_lookup(s, rest);
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

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    mf_run *r = R();
    char name[MF_RUN_NAME_MAX], latest[MF_RUN_NAME_MAX];
    const char *rest;
    struct stat dir;
    memset(st, 0, sizeof(*st));
    if (!path) {   /* fstat of an open file whose path is gone */
        const open_file *of = fi ? (const open_file *)(uintptr_t)fi->fh : NULL;
        if (!of || of->is_dir)
            return -ENOENT;
        return view_getattr(of->v, of->f->name, st);
    }
    if (strcmp(path, "/") == 0) {
        mf_run_refresh(r, 0);
        if (stat(mf_run_save_dir(r), &dir) != 0)
            return -EIO;
        fill_dir(st, &dir);
        return 0;
    }
    if (split_path(path, name, &rest) != 0)
        return -ENOENT;
    if (rest[0] == 0) {
        mf_run_refresh(r, 0);
        if (strcmp(name, LATEST) == 0) {
            char **names;
            size_t n;
            if (mf_run_list(r, &names, &n, latest) != 0)
                return -ENOMEM;
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            free(names);
            if (!latest[0] || stat(mf_run_save_dir(r), &dir) != 0)
                return -ENOENT;
            st->st_mode = S_IFLNK | 0777;
            st->st_uid = dir.st_uid;
            st->st_gid = dir.st_gid;
            st->st_nlink = 1;
            st->st_size = (off_t)strlen(latest);
            st->st_mtim = st->st_ctim = st->st_atim = dir.st_mtim;
            return 0;
        }
        if (!mf_run_visible(r, name, &dir))
            return -ENOENT;
        fill_dir(st, &dir);
        return 0;
    }
    mf_run_view *v;
    int rc = acquire(name, &v);
    if (rc)
        return rc;
    rc = view_getattr(v, rest, st);
    mf_run_release(r, v);
    return rc;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    char latest[MF_RUN_NAME_MAX], **names;
    size_t n;
    if (strcmp(path, "/" LATEST) != 0)
        return -EINVAL;
    mf_run_refresh(R(), 0);
    if (mf_run_list(R(), &names, &n, latest) != 0)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (!latest[0])
        return -ENOENT;
    snprintf(buf, size, "%s", latest);
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    mf_run *r = R();
    char name[MF_RUN_NAME_MAX], latest[MF_RUN_NAME_MAX];
    const char *rest;
    if (!path && fi && fi->fh)
        path = ((const open_dir *)(uintptr_t)fi->fh)->path;
    if (!path)
        return -ENOENT;
    if (strcmp(path, "/") == 0) {
        char **names;
        size_t n;
        mf_run_refresh(r, 0);
        if (mf_run_list(r, &names, &n, latest) != 0)
            return -ENOMEM;
        fill(buf, ".", NULL, 0, 0);
        fill(buf, "..", NULL, 0, 0);
        for (size_t i = 0; i < n; i++) {
            fill(buf, names[i], NULL, 0, 0);
            free(names[i]);
        }
        free(names);
        if (latest[0])
            fill(buf, LATEST, NULL, 0, 0);
        return 0;
    }
    if (split_path(path, name, &rest) != 0)
        return -ENOENT;
    mf_run_view *v;
    int rc = acquire(name, &v);
    if (rc)
        return rc;
    /* as fs/ops.c: a flat view; .mcorefs/ reachable by name, not listed */
    int meta = strcmp(rest, MF_META_DIR) == 0;
    size_t plen = strlen(MF_META_DIR "/");
    if (rest[0] != 0 && !meta) {
        rc = mf_session_lookup(v->s, rest) ? -ENOTDIR : -ENOENT;
    } else {
        fill(buf, ".", NULL, 0, 0);
        fill(buf, "..", NULL, 0, 0);
        for (size_t i = 0; i < v->s->n_files; i++) {
            const char *n = v->s->files[i].name;
            if (!meta && strchr(n, '/') == NULL)
                fill(buf, n, NULL, 0, 0);
            else if (meta && strncmp(n, MF_META_DIR "/", plen) == 0)
                fill(buf, n + plen, NULL, 0, 0);
        }
    }
    mf_run_release(r, v);
    return rc;
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    open_dir *d = malloc(sizeof(*d) + strlen(path) + 1);
    if (!d)
        return -ENOMEM;
    d->is_dir = 1;
    strcpy(d->path, path);
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    free((void *)(uintptr_t)fi->fh);
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    char name[MF_RUN_NAME_MAX];
    const char *rest;
    if (split_path(path, name, &rest) != 0 || rest[0] == 0)
        return -ENOENT;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    mf_run_refresh(R(), 0);
    mf_run_view *v;
    int rc = acquire(name, &v);
    if (rc)
        return rc;
    const mf_vfile *f = mf_session_lookup(v->s, rest);
    open_file *of = f ? malloc(sizeof(*of)) : NULL;
    if (!of) {
        mf_run_release(R(), v);
        return f ? -ENOMEM : -ENOENT;
    }
    of->is_dir = 0;
    of->v = v;
    of->f = f;
    fi->keep_cache = 0;   /* a new generation may have replaced the one the kernel cached */
    fi->direct_io = f->kind == MF_VF_STATS;
    fi->fh = (uint64_t)(uintptr_t)of;
    return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    open_file *of = (open_file *)(uintptr_t)fi->fh;
    if (of) {
        mf_run_release(R(), of->v);
        free(of);
    }
    return 0;
}

/* An iteration deleted, re-saved or being re-saved since the file was opened: its reads fail
 * (never bytes of a generation that is no longer the shown one). */
static int stale_error(const open_file *of, const char *path)
{
    fs_log("read of %s/%s failed: iteration %s was deleted or re-saved since the file was opened", of->v->name,
           of->f->name, of->v->name);
    return -EIO;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    open_file *of = (open_file *)(uintptr_t)fi->fh;
    if (!of)
        return -EBADF;
    mf_run_refresh(R(), 0);   /* without inotify (network file systems), a deletion is seen here */
    if (mf_run_view_stale(of->v))
        return stale_error(of, path);
    ssize_t n = mf_session_read(of->v->s, of->f, buf, size, (uint64_t)off);
    if (n < 0) {
        fs_log("%s", mf_error());
        return n == MF_ERR_NOMEM ? -ENOMEM : -EIO;
    }
    if (mf_run_view_stale(of->v))   /* went while we read: the bytes may be the old generation's */
        return stale_error(of, path);
    return (int)n;
}

static int op_statfs(const char *path, struct statvfs *st)
{
    memset(st, 0, sizeof(*st));
    st->f_bsize = st->f_frsize = 4096;
    st->f_namemax = 255;
    st->f_flag = ST_RDONLY;
    return 0;
}

static int op_access(const char *path, int mask)
{
    struct stat st;
    int rc = op_getattr(path, &st, NULL);
    if (rc)
        return rc;
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

const struct fuse_operations fs_run_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .open = op_open,
    .release = op_release,
    .read = op_read,
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
