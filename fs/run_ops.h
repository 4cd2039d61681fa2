#ifndef MCOREFS_FS_RUN_OPS_H
#define MCOREFS_FS_RUN_OPS_H
/* The FUSE operations of a mounted training run (-o iterations=all); private data: an mf_run. */
#include "ops.h"
extern const struct fuse_operations fs_run_ops;
/* The mount point (absolute), the largest read request and the readahead to set (-1: leave). */
void fs_run_set_mount(const char *path, unsigned max_read_bytes, long long read_ahead_kb);
#endif
