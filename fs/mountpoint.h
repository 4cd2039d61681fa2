#ifndef MCOREFS_FS_MOUNTPOINT_H
#define MCOREFS_FS_MOUNTPOINT_H
/* Checks before mounting, each failing with one line in mf_error() that says what to do. */

/* The mount point exists, is a directory (a file would be shadowed) and is not already an mcorefs
 * mount (mounts would stack). *abs: its absolute path (malloc'ed). */
int fs_check_mountpoint(const char *given, char **abs);
/* /dev/fuse exists and, for a non-root user, can be opened, and a setuid-root fusermount3 is there to
 * mount it (mount(2) needs root). */
int fs_check_fuse_device(void);
#endif
