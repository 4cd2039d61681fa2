/* The tree of a mounted training run (see run_tree.h). Inside an iteration folder every call
 * pins that generation's view (built on first use), runs the single-view code of tree.c on it
 * with inode numbers mapped to view 0 and back, and unpins it; an open file keeps its pin until
 * release. */
#include "ops.h"   /* FUSE_USE_VERSION, fuse_lowlevel.h */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mcorefs/error.h"
#include "mcorefs/run.h"
#include "run_tree.h"

/* An opened file of a run mount: its inode and the view it pinned at open (released at release). */
typedef struct {
    fs_ino ino;
    mf_run_view *v;
} run_open;

#define LATEST "latest"
#define RUN_ROOT FS_INO(0, FS_NODE_ROOT)

static struct fuse_session *notify_session;

/* Log a failed view build once per message (every lookup in a broken iteration repeats it). */
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

/* Pin the view of inode ino's generation; `one` becomes a single-view tree over it. */
static int pin(const fs_tree *t, fs_ino ino, mf_run_view **v, fs_tree *one)
{
    int rc = mf_run_acquire_gen(t->run, FS_INO_VIEW(ino), v);
    if (rc == MF_ERR_MISSING && (*v = mf_run_pin_again(t->run, FS_INO_VIEW(ino))) != NULL)
        rc = MF_OK;   /* no longer shown, but a file of it is open: its attributes stay (reads fail) */
    if (rc == MF_ERR_MISSING)
        return -ENOENT;   /* deleted or re-saved: that generation's inodes are gone */
    if (rc != MF_OK) {
        log_once(mf_error());
        return rc == MF_ERR_NOMEM ? -ENOMEM : -EIO;
    }
    one->view0 = (*v)->s;
    one->run = NULL;
    return 0;
}

static fs_ino in_view(fs_ino ino) { return FS_INO(0, FS_INO_NODE(ino)); }
static fs_ino in_run(uint64_t gen, fs_ino ino0) { return FS_INO(gen, FS_INO_NODE(ino0)); }

static void folder_attr(struct stat *st, const struct stat *from, fs_ino ino)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = S_IFDIR | (from->st_mode & 07777);
    st->st_uid = from->st_uid;
    st->st_gid = from->st_gid;
    st->st_nlink = 2;
    st->st_mtim = from->st_mtim;
    st->st_ctim = from->st_ctim;
    st->st_atim = from->st_mtim;
}

/* The `latest` target ("" when the tracker names nothing shown). */
static void latest_of(const fs_tree *t, char latest[MF_RUN_NAME_MAX])
{
    char **names;
    size_t n;
    latest[0] = 0;
    if (mf_run_list(t->run, &names, &n, latest) != MF_OK)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int root_getattr(const fs_tree *t, fs_ino ino, struct stat *st)
{
    struct stat dir;
    if (stat(mf_run_save_dir(t->run), &dir) != 0)
        return -EIO;
    if (FS_INO_NODE(ino) == FS_NODE_ROOT) {
        folder_attr(st, &dir, ino);
        return 0;
    }
    char latest[MF_RUN_NAME_MAX];
    latest_of(t, latest);
    if (FS_INO_NODE(ino) != FS_RUN_NODE_LATEST || !latest[0])
        return -ENOENT;
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = S_IFLNK | 0777;
    st->st_uid = dir.st_uid;
    st->st_gid = dir.st_gid;
    st->st_nlink = 1;
    st->st_size = (off_t)strlen(latest);
    st->st_mtim = st->st_ctim = st->st_atim = dir.st_mtim;
    return 0;
}

int fs_run_tree_getattr(const fs_tree *t, fs_ino ino, struct stat *st)
{
    if (FS_INO_VIEW(ino) == 0)
        return root_getattr(t, ino, st);
    mf_run_view *v;
    fs_tree one;
    int rc = pin(t, ino, &v, &one);
    if (rc)
        return rc;
    rc = fs_tree_getattr(&one, in_view(ino), st);
    st->st_ino = ino;
    mf_run_release(t->run, v);
    return rc;
}

int fs_run_tree_lookup(const fs_tree *t, fs_ino parent, const char *name, fs_ino *ino, struct stat *st)
{
    if (FS_INO_VIEW(parent) == 0) {
        if (FS_INO_NODE(parent) != FS_NODE_ROOT)
            return -ENOTDIR;
        mf_run_refresh(t->run, 0);   /* without inotify (network file systems) changes show here */
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
            *ino = RUN_ROOT;
            return root_getattr(t, *ino, st);
        }
        if (strcmp(name, LATEST) == 0) {
            *ino = FS_INO(0, FS_RUN_NODE_LATEST);
            return root_getattr(t, *ino, st);
        }
        struct stat dir;
        uint64_t gen = mf_run_generation(t->run, name, &dir);
        if (!gen)
            return -ENOENT;
        *ino = FS_INO(gen, FS_NODE_ROOT);
        folder_attr(st, &dir, *ino);
        return 0;
    }
    if (FS_INO_NODE(parent) == FS_NODE_ROOT && strcmp(name, "..") == 0) {
        *ino = RUN_ROOT;
        return root_getattr(t, *ino, st);
    }
    mf_run_view *v;
    fs_tree one;
    fs_ino ino0;
    int rc = pin(t, parent, &v, &one);
    if (rc)
        return rc;
    rc = fs_tree_lookup(&one, in_view(parent), name, &ino0, st);
    if (rc == 0) {
        *ino = in_run(FS_INO_VIEW(parent), ino0);
        st->st_ino = *ino;
    }
    mf_run_release(t->run, v);
    return rc;
}

typedef struct {
    fs_dir_fill fill;
    void *ctx;
    uint64_t gen;
} remap_ctx;

static int fill_remapped(void *ctx, const char *name, fs_ino ino, mode_t mode, size_t next)
{
    const remap_ctx *r = ctx;
    fs_ino to = strcmp(name, "..") == 0 && FS_INO_NODE(ino) == FS_NODE_ROOT ? RUN_ROOT : in_run(r->gen, ino);
    return r->fill(r->ctx, name, to, mode, next);
}

/* The run's root: 0 ".", 1 "..", 2 "latest" (when it points somewhere), 3 + i iteration i. */
static int root_readdir(const fs_tree *t, size_t from, fs_dir_fill fill, void *ctx)
{
    char **names, latest[MF_RUN_NAME_MAX];
    uint64_t *gens;
    size_t n;
    mf_run_refresh(t->run, 0);
    if (mf_run_list_gens(t->run, &names, &gens, &n, latest) != MF_OK)
        return -ENOMEM;
    int full = 0;
    if (from == 0)
        full = fill(ctx, ".", RUN_ROOT, S_IFDIR, 1);
    if (!full && from <= 1)
        full = fill(ctx, "..", RUN_ROOT, S_IFDIR, 2);
    if (!full && from <= 2 && latest[0])
        full = fill(ctx, LATEST, FS_INO(0, FS_RUN_NODE_LATEST), S_IFLNK, 3);
    for (size_t i = from > 3 ? from - 3 : 0; !full && i < n; i++)
        full = fill(ctx, names[i], FS_INO(gens[i], FS_NODE_ROOT), S_IFDIR, i + 4);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(gens);
    return 0;
}

int fs_run_tree_readdir(const fs_tree *t, fs_ino ino, size_t from, fs_dir_fill fill, void *ctx)
{
    if (FS_INO_VIEW(ino) == 0)
        return FS_INO_NODE(ino) == FS_NODE_ROOT ? root_readdir(t, from, fill, ctx) : -ENOTDIR;
    mf_run_view *v;
    fs_tree one;
    int rc = pin(t, ino, &v, &one);
    if (rc)
        return rc;
    remap_ctx r = { fill, ctx, FS_INO_VIEW(ino) };
    rc = fs_tree_readdir(&one, in_view(ino), from, fill_remapped, &r);
    mf_run_release(t->run, v);
    return rc;
}

int fs_run_tree_open(const fs_tree *t, fs_ino ino, int flags, fs_open_file *out)
{
    if (FS_INO_VIEW(ino) == 0)
        return FS_INO_NODE(ino) == FS_NODE_ROOT ? -EISDIR : -ENOENT;
    mf_run_view *v;
    fs_tree one;
    int rc = pin(t, ino, &v, &one);
    if (rc)
        return rc;
    rc = fs_tree_open(&one, in_view(ino), flags, out);
    run_open *h = rc ? NULL : malloc(sizeof(*h));
    if (!h) {
        mf_run_release(t->run, v);
        return rc ? rc : -ENOMEM;
    }
    *h = (run_open){ ino, v };
    out->fh = (uint64_t)(uintptr_t)h;   /* the pin stays until release */
    return 0;
}

void fs_run_tree_release(const fs_tree *t, uint64_t fh)
{
    run_open *h = (run_open *)(uintptr_t)fh;
    mf_run_release(t->run, h->v);
    free(h);
}

mf_session *fs_run_tree_handle_view(const fs_tree *t, uint64_t fh)
{
    (void)t;
    return ((const run_open *)(uintptr_t)fh)->v->s;
}

mf_session *fs_run_tree_view(const fs_tree *t, uint32_t view)
{
    mf_run_view *v = view ? mf_run_pinned(t->run, view) : NULL;
    return v ? v->s : NULL;
}

/* Reads of an iteration deleted, re-saved or being re-saved since the file was opened fail:
 * never bytes of a generation that is no longer the shown one. */
static int stale_read(const mf_run_view *v, uint64_t fh)
{
    uint64_t node = FS_INO_NODE(fh);
    const char *file = node >= FS_NODE_FIRST_FILE && node - FS_NODE_FIRST_FILE < v->s->n_files
                       ? v->s->files[node - FS_NODE_FIRST_FILE].name : "?";
    return mf_fail(MF_ERR_IO, "read of %s/%s refused: iteration %s was deleted or re-saved since the file was opened",
                   v->name, file, v->name);
}

/* The handle holds the pinned view: no lookup and no lock per read. */
ssize_t fs_run_tree_read(const fs_tree *t, uint64_t fh, char *buf, size_t len, uint64_t off, mf_segment *segs,
                         size_t max_segs)
{
    const run_open *h = (const run_open *)(uintptr_t)fh;
    mf_run_view *v = h->v;
    mf_run_refresh(t->run, 0);   /* without inotify a deletion is seen here, within recheck_ms */
    if (mf_run_view_stale(v))
        return stale_read(v, h->ino);
    fs_tree one = { v->s, NULL };
    ssize_t n = fs_tree_read(&one, in_view(h->ino), buf, len, off, segs, max_segs);
    if (n >= 0 && mf_run_view_stale(v))   /* went while we read */
        return stale_read(v, h->ino);
    return n;
}

int fs_run_tree_readlink(const fs_tree *t, fs_ino ino, char *buf, size_t size)
{
    if (ino != FS_INO(0, FS_RUN_NODE_LATEST))
        return -EINVAL;
    char latest[MF_RUN_NAME_MAX];
    mf_run_refresh(t->run, 0);
    latest_of(t, latest);
    if (!latest[0])
        return -ENOENT;
    snprintf(buf, size, "%s", latest);
    return 0;
}

void fs_run_tree_statfs(const fs_tree *t, struct statvfs *st)
{
    (void)t;
    memset(st, 0, sizeof(*st));
    st->f_bsize = st->f_frsize = 4096;
    st->f_namemax = 255;
    st->f_flag = ST_RDONLY;
}

int fs_run_tree_access(const fs_tree *t, fs_ino ino, int mask)
{
    struct stat st;
    int rc = fs_run_tree_getattr(t, ino, &st);
    if (rc)
        return rc;
    return (mask & W_OK) ? -EROFS : 0;
}

long long fs_run_tree_read_ahead_kb(const fs_tree *t) { return mf_run_options(t->run)->read_ahead_kb; }

/* An iteration deleted or re-saved: the kernel forgets its cached entry in the root (the name
 * is looked up again) and the pages it cached of that generation's files (reads of files still
 * open come to us, and fail). Called on the watcher's thread, never inside a request: a read
 * holding a page lock gets its answer from another thread meanwhile. */
static void drop_entry(void *arg, const char *name, uint64_t gen, size_t n_files)
{
    struct fuse_session *se = arg;
    fuse_lowlevel_notify_inval_entry(se, FUSE_ROOT_ID, name, strlen(name));   /* -ENOENT: nothing cached */
    for (size_t i = 0; i < n_files; i++)
        fuse_lowlevel_notify_inval_inode(se, fs_tree_file_ino((uint32_t)gen, i), 0, 0);
}

void fs_run_tree_attach(const fs_tree *t, struct fuse_session *se)
{
    notify_session = se;
}

void fs_run_tree_detach(const fs_tree *t)
{
    mf_run_watch_end(t->run);
    notify_session = NULL;
}

void fs_run_tree_serving(const fs_tree *t)
{
    if (notify_session)
        mf_run_on_gone(t->run, drop_entry, notify_session);
    mf_run_watch_begin(t->run);
}
