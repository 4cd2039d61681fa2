#ifndef MCOREFS_FS_OPS_H
#define MCOREFS_FS_OPS_H
#define FUSE_USE_VERSION 31
#include <fuse.h>
#include "mcorefs/view.h"
extern const struct fuse_operations mcorefs_ops;
/* The mount point (absolute), for tuning the mount once it exists. */
void fs_set_mountpoint(const char *path);
#endif
