/* The mounted tree (see tree.h): one view today, its folders and files by inode number. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "run_tree.h"
#include "tree.h"

mf_session *fs_tree_view(const fs_tree *t, uint32_t view)
{
    if (t->run)
        return fs_run_tree_view(t, view);
    return view == 0 ? t->view0 : NULL;
}

/* The file of inode ino, or NULL when ino is no file of a view. */
static const mf_vfile *file_of(const fs_tree *t, fs_ino ino)
{
    const mf_session *s = fs_tree_view(t, (uint32_t)FS_INO_VIEW(ino));
    uint64_t node = FS_INO_NODE(ino);
    if (!s || node < FS_NODE_FIRST_FILE || node - FS_NODE_FIRST_FILE >= s->n_files)
        return NULL;
    const mf_vfile *f = &s->files[node - FS_NODE_FIRST_FILE];
    /* The kernel may reach a file by inode with no lookup by name: in a run mount after its view
     * was evicted and rebuilt, a lazy file (the manifest) is unbuilt again. Build it here, or its
     * size would show as 0 and a read would end at once. */
    if (__atomic_load_n(&f->kind, __ATOMIC_ACQUIRE) == MF_VF_LAZY)
        return mf_session_lookup(s, f->name);
    return f;
}

static int is_folder(const fs_tree *t, fs_ino ino)
{
    uint64_t node = FS_INO_NODE(ino);
    return fs_tree_view(t, (uint32_t)FS_INO_VIEW(ino)) != NULL && (node == FS_NODE_ROOT || node == FS_NODE_META);
}

/* Owner and bits of the checkpoint's own files (core/permissions.c); the kernel enforces them
 * (default_permissions). Write bits may show: every modifying call still gets EROFS. */
int fs_tree_getattr(const fs_tree *t, fs_ino ino, struct stat *st)
{
    if (t->run)
        return fs_run_tree_getattr(t, ino, st);
    const mf_session *s = fs_tree_view(t, (uint32_t)FS_INO_VIEW(ino));
    memset(st, 0, sizeof(*st));
    if (!s)
        return -ENOENT;
    st->st_ino = ino;
    st->st_mtime = st->st_ctime = st->st_atime = (time_t)s->mtime;
    if (is_folder(t, ino)) {
        st->st_mode = S_IFDIR | s->dir_mode;
        st->st_uid = s->dir_uid;
        st->st_gid = s->dir_gid;
        st->st_nlink = 2;
        return 0;
    }
    const mf_vfile *f = file_of(t, ino);
    if (!f)
        return -ENOENT;
    st->st_uid = f->uid;
    st->st_gid = f->gid;
    st->st_mode = S_IFREG | f->mode;
    st->st_nlink = 1;
    st->st_size = (off_t)__atomic_load_n(&f->size, __ATOMIC_ACQUIRE);
    st->st_blocks = (blkcnt_t)((st->st_size + 511) / 512);
    return 0;
}

int fs_tree_lookup(const fs_tree *t, fs_ino parent, const char *name, fs_ino *ino, struct stat *st)
{
    if (t->run)
        return fs_run_tree_lookup(t, parent, name, ino, st);
    uint32_t view = (uint32_t)FS_INO_VIEW(parent);
    const mf_session *s = fs_tree_view(t, view);
    if (!is_folder(t, parent))
        return file_of(t, parent) ? -ENOTDIR : -ENOENT;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {   /* only NFS export asks */
        *ino = strcmp(name, ".") == 0 ? parent : FS_INO(view, FS_NODE_ROOT);
        return fs_tree_getattr(t, *ino, st);
    }
    if (FS_INO_NODE(parent) == FS_NODE_ROOT && strcmp(name, MF_META_DIR) == 0) {
        *ino = FS_INO(view, FS_NODE_META);
        return fs_tree_getattr(t, *ino, st);
    }
    char path[512];
    int n = snprintf(path, sizeof(path), "%s%s", FS_INO_NODE(parent) == FS_NODE_META ? MF_META_DIR "/" : "", name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENOENT;   /* no view file has a name that long */
    /* by name: also builds a lazy file (the manifest) on its first lookup, so its size is known */
    const mf_vfile *f = mf_session_lookup(s, path);
    if (!f)
        return -ENOENT;
    *ino = fs_tree_file_ino(view, (size_t)(f - s->files));
    return fs_tree_getattr(t, *ino, st);
}

/* A flat view. The .mcorefs/ folder is reachable by name but not listed, so that `cp -r` of the
 * mount is exactly the HF directory. */
int fs_tree_readdir(const fs_tree *t, fs_ino ino, size_t from, fs_dir_fill fill, void *ctx)
{
    if (t->run)
        return fs_run_tree_readdir(t, ino, from, fill, ctx);
    uint32_t view = (uint32_t)FS_INO_VIEW(ino);
    const mf_session *s = fs_tree_view(t, view);
    if (!is_folder(t, ino))
        return file_of(t, ino) ? -ENOTDIR : -ENOENT;
    int meta = FS_INO_NODE(ino) == FS_NODE_META;
    size_t plen = strlen(MF_META_DIR "/");
    /* positions: 0 ".", 1 "..", 2 + i file i (when it belongs to this folder) */
    if (from == 0 && fill(ctx, ".", ino, S_IFDIR, 1))
        return 0;
    if (from <= 1 && fill(ctx, "..", FS_INO(view, FS_NODE_ROOT), S_IFDIR, 2))
        return 0;
    for (size_t i = from > 2 ? from - 2 : 0; i < s->n_files; i++) {
        const char *n = s->files[i].name;
        const char *shown = NULL;
        if (!meta && strchr(n, '/') == NULL)
            shown = n;
        else if (meta && strncmp(n, MF_META_DIR "/", plen) == 0)
            shown = n + plen;
        if (shown && fill(ctx, shown, fs_tree_file_ino(view, i), S_IFREG, i + 3))
            return 0;
    }
    return 0;
}

int fs_tree_open(const fs_tree *t, fs_ino ino, int flags, fs_open_file *out)
{
    if (t->run)
        return fs_run_tree_open(t, ino, flags, out);
    const mf_vfile *f = file_of(t, ino);
    if (!f)
        return is_folder(t, ino) ? -EISDIR : -ENOENT;
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
        return -EROFS;
    mf_vfile_kind kind = __atomic_load_n(&f->kind, __ATOMIC_ACQUIRE);
    out->keep_cache = kind != MF_VF_STATS;
    out->direct_io = kind == MF_VF_STATS;
    out->fh = ino;
    return 0;
}

ssize_t fs_tree_read(const fs_tree *t, uint64_t fh, char *buf, size_t len, uint64_t off, mf_segment *segs,
                     size_t max_segs)
{
    if (t->run)
        return fs_run_tree_read(t, fh, buf, len, off, segs, max_segs);
    const mf_vfile *f = file_of(t, fh);
    if (!f)
        return mf_fail(MF_ERR_INVALID, "read of an unknown file handle %llu", (unsigned long long)fh);
    return mf_session_read_segments(fs_tree_view(t, (uint32_t)FS_INO_VIEW(fh)), f, buf, len, off, segs, max_segs);
}

void fs_tree_statfs(const fs_tree *t, struct statvfs *st)
{
    if (t->run) {
        fs_run_tree_statfs(t, st);
        return;
    }
    const mf_session *s = t->view0;
    uint64_t total = 0;
    memset(st, 0, sizeof(*st));
    for (size_t i = 0; i < s->n_files; i++)
        total += s->files[i].size;
    st->f_bsize = st->f_frsize = 4096;
    st->f_blocks = (total + 4095) / 4096;
    st->f_files = s->n_files + 1;
    st->f_namemax = 255;
    st->f_flag = ST_RDONLY;
}

int fs_tree_access(const fs_tree *t, fs_ino ino, int mask)
{
    if (t->run)
        return fs_run_tree_access(t, ino, mask);
    if (!is_folder(t, ino) && !file_of(t, ino))
        return -ENOENT;
    return (mask & W_OK) ? -EROFS : 0;
}

int fs_tree_readlink(const fs_tree *t, fs_ino ino, char *buf, size_t size)
{
    return t->run ? fs_run_tree_readlink(t, ino, buf, size) : -EINVAL;
}

mf_session *fs_tree_handle_view(const fs_tree *t, uint64_t fh)
{
    return t->run ? fs_run_tree_handle_view(t, fh) : fs_tree_view(t, (uint32_t)FS_INO_VIEW(fh));
}

void fs_tree_release(const fs_tree *t, uint64_t fh)
{
    if (t->run)
        fs_run_tree_release(t, fh);
}

void fs_tree_serving(const fs_tree *t)
{
    if (t->run)
        fs_run_tree_serving(t);
}

long long fs_tree_read_ahead_kb(const fs_tree *t)
{
    return t->run ? fs_run_tree_read_ahead_kb(t) : t->view0->opts.read_ahead_kb;
}
