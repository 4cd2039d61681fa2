/* Opening checkpoint files: beneath the checkpoint folder, non-blocking, regular files only. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "open_beneath.h"

#define OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

static int escapes(const char *base, const char *rel)
{
    return mf_fail(MF_ERR_INCONSISTENT, "%s/%s: leads outside the checkpoint folder %s (absolute name, '..' or a symlink out of it); refused",
                   base, rel, base);
}

/* Kernels without openat2 (< 5.6) or where seccomp hides it: resolve the whole name and
 * require it to stay under the resolved base. */
static int open_fallback(const char *base, const char *rel)
{
    char rbase[PATH_MAX], rfile[PATH_MAX], joined[PATH_MAX];
    if (rel[0] == '/')
        return -EXDEV;
    for (const char *p = rel; (p = strstr(p, "..")) != NULL; p += 2)   /* stricter: no ".." at all */
        if ((p == rel || p[-1] == '/') && (p[2] == '/' || p[2] == 0))
            return -EXDEV;
    if (snprintf(joined, sizeof joined, "%s/%s", base, rel) >= (int)sizeof joined)
        return -ENAMETOOLONG;
    if (!realpath(base, rbase))
        return -errno;
    if (!realpath(joined, rfile))
        return -errno;
    size_t n = strlen(rbase);
    if (strncmp(rfile, rbase, n) != 0 || (rfile[n] != '/' && strcmp(rbase, "/") != 0))
        return -EXDEV;
    int fd = open(rfile, OPEN_FLAGS | O_NOFOLLOW);
    return fd < 0 ? -errno : fd;
}

/* Set once openat2 answered ENOSYS: the kernel (or valgrind) lacks it; later opens skip the call. */
static int no_openat2;

int mf_openat_beneath(int dirfd, const char *rel)
{
    if (__atomic_load_n(&no_openat2, __ATOMIC_RELAXED))
        return -ENOSYS;
    struct open_how how = { .flags = OPEN_FLAGS, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        __atomic_store_n(&no_openat2, 1, __ATOMIC_RELAXED);
    return fd >= 0 ? (int)fd : -errno;
}

static int open_rel(const char *base, const char *rel)
{
    int dfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int fd = mf_openat_beneath(dfd, rel);
    close(dfd);
    if (fd == -ENOSYS || fd == -EPERM)
        return open_fallback(base, rel);
    return fd;
}

static const char *kind_name(mode_t m)
{
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "a device";
    if (S_ISSOCK(m))
        return "a socket";
    return "not a regular file";
}

static int open_checked(const char *base, const char *rel, int *out, int fallback_only)
{
    *out = -1;
    int fd = fallback_only ? open_fallback(base, rel) : open_rel(base, rel);
    if (fd == -EXDEV || fd == -ELOOP)
        return escapes(base, rel);
    if (fd < 0)
        return mf_fail(fd == -ENOENT ? MF_ERR_MISSING : MF_ERR_IO, "%s/%s: %s", base, rel, strerror(-fd));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = mf_fail(MF_ERR_IO, "%s/%s: fstat: %s", base, rel, strerror(errno));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mf_fail(MF_ERR_FORMAT, "%s/%s: is %s, not a regular file; refused", base, rel, kind_name(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int rc = mf_fail(MF_ERR_IO, "%s/%s: fcntl: %s", base, rel, strerror(errno));
        close(fd);
        return rc;
    }
    *out = fd;
    return MF_OK;
}

int mf_open_beneath(const char *base, const char *rel, int *fd) { return open_checked(base, rel, fd, 0); }

int mf_open_beneath_fallback(const char *base, const char *rel, int *fd) { return open_checked(base, rel, fd, 1); }
