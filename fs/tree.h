/* The mounted tree behind the FUSE low-level operations: entries by inode number.
 *
 * An inode number carries a view id in its high bits and a node of that view in its low bits,
 * so one mount can show several views (say one per training iteration, built on first use)
 * on this same code. Today the tree holds one view, id 0, whose root is FUSE's root inode 1.
 * Nodes of a view: 1 its root folder, 2 its hidden .mcorefs/ folder, 3 + i its file i.
 * Errors are negative errno values (fs/ is the errno boundary), except fs_tree_read. */
#ifndef MCOREFS_FS_TREE_H
#define MCOREFS_FS_TREE_H
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include "mcorefs/view.h"

typedef uint64_t fs_ino;

#define FS_INO_NODE_BITS 40
#define FS_INO(view, node) (((fs_ino)(view) << FS_INO_NODE_BITS) | (fs_ino)(node))
#define FS_INO_VIEW(ino) ((uint64_t)(ino) >> FS_INO_NODE_BITS)
#define FS_INO_NODE(ino) ((uint64_t)(ino) & ((1ull << FS_INO_NODE_BITS) - 1))
enum { FS_NODE_ROOT = 1, FS_NODE_META = 2, FS_NODE_FIRST_FILE = 3 };

struct mf_run;
typedef struct fs_tree {
    mf_session *view0;   /* the one view of a single-iteration mount */
    struct mf_run *run;  /* -o iterations=all (view0 NULL): root = the run, view id = an
                          * iteration's generation (fs/run_tree.c) */
} fs_tree;

/* One opened file: what fs_tree_read needs, fixed at open. */
typedef struct {
    int keep_cache;   /* contents never change: keep the page cache across opens */
    int direct_io;    /* live counters: bypass the page cache */
    uint64_t fh;
} fs_open_file;

/* The inode of file `index` of a view. */
static inline fs_ino fs_tree_file_ino(uint32_t view, size_t index) { return FS_INO(view, FS_NODE_FIRST_FILE + index); }

/* name in folder parent: its inode and attributes, or -ENOENT / -ENOTDIR. */
int fs_tree_lookup(const fs_tree *t, fs_ino parent, const char *name, fs_ino *ino, struct stat *st);
int fs_tree_getattr(const fs_tree *t, fs_ino ino, struct stat *st);
/* The entries of folder ino from position `from` on ("." and ".." first); fill returns non-zero
 * when its buffer is full, and the walk stops there. */
typedef int (*fs_dir_fill)(void *ctx, const char *name, fs_ino ino, mode_t mode, size_t next);
int fs_tree_readdir(const fs_tree *t, fs_ino ino, size_t from, fs_dir_fill fill, void *ctx);
/* A read-only open (anything else -EROFS) of file ino. */
int fs_tree_open(const fs_tree *t, fs_ino ino, int flags, fs_open_file *out);
/* Read [off, off+len) of an opened file as segments (see mf_session_read_segments): the count,
 * or a negative mf_status with mf_error() set (the caller turns it into an errno). */
ssize_t fs_tree_read(const fs_tree *t, uint64_t fh, char *buf, size_t len, uint64_t off, mf_segment *segs,
                     size_t max_segs);
void fs_tree_statfs(const fs_tree *t, struct statvfs *st);
/* Access check for ino: -EROFS for W_OK, -ENOENT for an unknown inode. */
int fs_tree_access(const fs_tree *t, fs_ino ino, int mask);
/* The session of the view a file handle or inode belongs to (for logging and invalidation). */
mf_session *fs_tree_view(const fs_tree *t, uint32_t view);
/* The session an opened file reads from, from its handle alone (no lock: the read path). */
mf_session *fs_tree_handle_view(const fs_tree *t, uint64_t fh);
/* The target of symlink ino (run mounts: `latest`), or -EINVAL. */
int fs_tree_readlink(const fs_tree *t, fs_ino ino, char *buf, size_t size);
/* An opened file is closed (run mounts: its view may go). */
void fs_tree_release(const fs_tree *t, uint64_t fh);
/* The mount serves from now on (the daemon has forked): run mounts start following the run. */
void fs_tree_serving(const fs_tree *t);
long long fs_tree_read_ahead_kb(const fs_tree *t);

#endif
