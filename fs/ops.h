#ifndef MCOREFS_FS_OPS_H
#define MCOREFS_FS_OPS_H
#define FUSE_USE_VERSION 312   /* fuse_loop_cfg_*: the max_threads/max_idle_threads options */
#include <fuse_lowlevel.h>
#include "tree.h"

/* libfuse low-level operations over a tree (userdata of the session: an fs_tree). */
extern const struct fuse_lowlevel_ops mcorefs_ll_ops;

/* What the kernel may cache, from -o entry_timeout=, attr_timeout=, negative_timeout=
 * (seconds; the view never changes, so an hour by default). */
typedef struct {
    double entry_timeout, attr_timeout, negative_timeout;
} fs_cache_opts;
#define FS_CACHE_OPTS_DEFAULT { 3600.0, 3600.0, 3600.0 }
void fs_set_cache_opts(const fs_cache_opts *o);

/* The mount point (absolute), for tuning the mount once it exists. */
void fs_set_mountpoint(const char *path);
/* Largest read request the kernel may send. 896 KiB splits a 1 MiB readahead window into two
 * requests that two threads gather at once: faster here than one 1 MiB request per window
 * (bench/NOTES.md §1); replies that could not be spliced go from memory (fs/read.c). */
#define FS_DEFAULT_MAX_READ (896u << 10)
void fs_set_max_read(unsigned bytes);
#endif
