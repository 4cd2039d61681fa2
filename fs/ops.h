#ifndef MCOREFS_FS_OPS_H
#define MCOREFS_FS_OPS_H
#define FUSE_USE_VERSION 31
#include <fuse.h>
#include "mcorefs/view.h"
extern const struct fuse_operations mcorefs_ops;
/* The mount point (absolute), for tuning the mount once it exists. */
void fs_set_mountpoint(const char *path);
/* Largest read request the kernel may send. The default keeps a request's reply inside the
 * splice pipe (1 MiB = 256 pages, and unaligned file ranges need an extra page each). */
#define FS_DEFAULT_MAX_READ (896u << 10)
void fs_set_max_read(unsigned bytes);
#endif
