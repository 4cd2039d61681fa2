/* The tree of a mounted training run (-o iterations=all), behind fs/tree.h: the root lists one
 * folder per shown iteration and `latest`; inside a folder, the single-iteration tree of that
 * iteration's view. An inode's view id is the iteration's generation (unique for the mount's
 * life): a re-saved iteration comes back under new inode numbers, so the kernel never serves
 * pages of one generation for another. */
#ifndef MCOREFS_FS_RUN_TREE_H
#define MCOREFS_FS_RUN_TREE_H
#include "tree.h"

struct fuse_session;

enum { FS_RUN_NODE_LATEST = 2 };   /* in view 0, the run's root */

int fs_run_tree_lookup(const fs_tree *t, fs_ino parent, const char *name, fs_ino *ino, struct stat *st);
int fs_run_tree_getattr(const fs_tree *t, fs_ino ino, struct stat *st);
int fs_run_tree_readdir(const fs_tree *t, fs_ino ino, size_t from, fs_dir_fill fill, void *ctx);
int fs_run_tree_open(const fs_tree *t, fs_ino ino, int flags, fs_open_file *out);
void fs_run_tree_release(const fs_tree *t, uint64_t fh);
ssize_t fs_run_tree_read(const fs_tree *t, uint64_t fh, char *buf, size_t len, uint64_t off, mf_segment *segs,
                         size_t max_segs);
int fs_run_tree_readlink(const fs_tree *t, fs_ino ino, char *buf, size_t size);
void fs_run_tree_statfs(const fs_tree *t, struct statvfs *st);
int fs_run_tree_access(const fs_tree *t, fs_ino ino, int mask);
mf_session *fs_run_tree_view(const fs_tree *t, uint32_t view);
mf_session *fs_run_tree_handle_view(const fs_tree *t, uint64_t fh);
long long fs_run_tree_read_ahead_kb(const fs_tree *t);
/* Start the watcher (after the daemon forked). */
void fs_run_tree_serving(const fs_tree *t);
/* The session whose kernel entries are dropped when an iteration goes or is re-saved. */
void fs_run_tree_attach(const fs_tree *t, struct fuse_session *se);
/* The session is about to go: stop the watcher thread that notifies it. */
void fs_run_tree_detach(const fs_tree *t);
#endif
