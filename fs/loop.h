/* The daemon's FUSE lifetime: what fuse_main does, with a step of ours between the end of the
 * request loop and libfuse tearing its tables down. */
#ifndef MCOREFS_FS_LOOP_H
#define MCOREFS_FS_LOOP_H
#include <fuse.h>

/* Parse the FUSE arguments, mount, daemonize (unless -f), serve until unmounted or fuse_exit,
 * stop our own helper threads, unmount and destroy. 0 on a clean end, 1 otherwise (libfuse
 * prints its own reason). */
int fs_run(struct fuse_args *args, const struct fuse_operations *ops, void *data);

#endif
