/* Loading the small user files of the view once, at mount (see small_file.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "open_beneath.h"
#include "small_file.h"
#include "file_io.h"

/* Open name beneath dirfd (non-blocking: a FIFO put in place of a file must not hang the mount;
 * it is refused below). openat2 refuses any path, symlinks included, that resolves outside the
 * folder, atomically, so swapping a link cannot race the check. */
static int open_beneath(int dirfd, const char *name)
{
    int fd = mf_openat_beneath(dirfd, name);
    if (fd == -ENOSYS || fd == -EPERM)   /* no openat2 (kernel < 5.6): follow no symlink at all */
        return openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
    if (fd < 0)
        errno = -fd;
    return fd < 0 ? -1 : fd;
}

static int fail_errno(const char *shown, int e)
{
    if (e == ENOENT)
        return mf_fail(MF_ERR_MISSING, "%s: %s", shown, strerror(e));
    if (e == ELOOP)
        return mf_fail(MF_ERR_INVALID, "%s: a symlink (this kernel cannot check where it leads: refused)", shown);
    if (e == EXDEV)
        return mf_fail(MF_ERR_INVALID, "%s: a symlink leading outside its folder (refused: copy the file in instead)",
                       shown);
    return mf_fail(MF_ERR_IO, "%s: %s", shown, strerror(e));
}

static int read_all(int fd, const char *shown, size_t size, char **data, size_t *len)
{
    char *buf = malloc(size + 1);
    size_t n = 0;
    if (!buf)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", shown);
    int rc = mf_pread_upto(fd, shown, buf, size + 1, 0, &n);   /* one byte more: a file that grew is seen */
    if (rc == MF_OK && n > size)
        rc = mf_fail(MF_ERR_IO, "%s: changed while it was read at mount", shown);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return MF_OK;
}

int mf_small_file_load(int dirfd, const char *name, const char *shown, char **data, size_t *len, struct stat *st)
{
    *data = NULL;
    *len = 0;
    int fd = dirfd == AT_FDCWD ? open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY) : open_beneath(dirfd, name);
    if (fd < 0)
        return fail_errno(shown, errno);
    int rc;
    if (fstat(fd, st) != 0)
        rc = fail_errno(shown, errno);
    else if (!S_ISREG(st->st_mode))
        rc = mf_fail(MF_ERR_INVALID, "%s: not a regular file", shown);
    else if ((uint64_t)st->st_size > MF_SMALL_FILE_MAX)
        rc = mf_fail(MF_ERR_LIMIT, "%s: %lld bytes, larger than the %u MiB allowed for such files", shown,
                     (long long)st->st_size, MF_SMALL_FILE_MAX >> 20);
    else
        rc = read_all(fd, shown, (size_t)st->st_size, data, len);
    close(fd);
    return rc;
}
