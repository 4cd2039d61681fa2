/* The one way the library opens a file a checkpoint names (rank files, .distcp storage files,
 * .metadata, common.pt, metadata.json, the tracker file). */
#ifndef MCOREFS_OPEN_BENEATH_H
#define MCOREFS_OPEN_BENEATH_H

/* Open base/rel read-only and return MF_OK with *fd, or an error naming base/rel:
 * - beneath base: no absolute name, no "..", no symlink that leads out of base (openat2 with
 *   RESOLVE_BENEATH; where the kernel lacks it, a realpath prefix check);
 * - without blocking: a FIFO in place of a file cannot hang the caller (O_NONBLOCK, cleared
 *   after the open);
 * - a regular file only (not a FIFO, directory or device).
 * MF_ERR_MISSING when it does not exist. base itself is taken as given (resolve it first). */
int mf_open_beneath(const char *base, const char *rel, int *fd);
/* The primitive under both: openat2(dirfd, rel) with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
 * read-only, O_NONBLOCK (not cleared), close-on-exec. The fd, or -errno: -EXDEV for a name
 * leading out, -ENOSYS/-EPERM where the kernel (or seccomp) has no openat2. No type check. */
int mf_openat_beneath(int dirfd, const char *rel);
/* The same with the check used where openat2 is missing (exposed for tests). */
int mf_open_beneath_fallback(const char *base, const char *rel, int *fd);

#endif
