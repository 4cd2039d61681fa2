#ifndef MCOREFS_FS_STALE_H
#define MCOREFS_FS_STALE_H
#include "tree.h"

struct fuse_session;

/* A read found a rank file changed since mount. Drop the kernel's cached pages of every
 * safetensors file of the mount (a zero-copy reply spliced after our last check may have put
 * new bytes there), on a helper thread: invalidating from inside a read would deadlock on the
 * page that read holds locked. Callable from any operation; cheap when an invalidation is
 * already under way (it runs once more). */
void fs_source_changed(const fs_tree *t);
/* The session whose kernel cache fs_source_changed drops (set before the loop starts). */
void fs_stale_attach(struct fuse_session *se);
/* Wait for a running invalidation to finish (before the session goes away). */
void fs_stale_wait(void);
/* The request loop has ended: start no new invalidation, cut a running one short, and wait
 * for it, before the session it notifies is destroyed (fs/loop.c). */
void fs_stale_shutdown(void);

#endif
