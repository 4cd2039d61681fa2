/* The daemon's FUSE lifetime: parse, mount, serve, and our own step between the end of the
 * request loop and libfuse tearing the session down. */
#ifndef MCOREFS_FS_LOOP_H
#define MCOREFS_FS_LOOP_H
#include "ops.h"

/* Parse the FUSE arguments, create the low-level session over data (an fs_tree), mount,
 * daemonize (unless -f), serve until unmounted or fuse_session_exit, stop our own helper threads,
 * unmount and destroy. serving(se) is called once the session exists (before the loop) and
 * serving(NULL) once the loop has ended, so a signal handler knows what to stop. 0 on a clean
 * end, 1 otherwise (libfuse prints its own reason). */
int fs_run(struct fuse_args *args, const struct fuse_lowlevel_ops *ops, void *data,
           void (*serving)(struct fuse_session *se));

#endif
