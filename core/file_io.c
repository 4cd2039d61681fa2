/* Path join and pread loop shared by every reader in core. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "file_io.h"
#include "mcorefs/error.h"

char *mf_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

int mf_pread_upto(int fd, const char *path, void *buf, size_t len, uint64_t off, size_t *got)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *got = done;
            return mf_fail(MF_ERR_IO, "%s: read at %llu: %s", path ? path : "(file)", (unsigned long long)(off + done),
                           strerror(errno));
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return MF_OK;
}

int mf_pread_full(int fd, const char *path, void *buf, size_t len, uint64_t off)
{
    size_t got;
    int rc = mf_pread_upto(fd, path, buf, len, off, &got);
    if (rc == MF_OK && got < len)
        rc = mf_fail(MF_ERR_IO, "%s: ends at %llu (needed %zu bytes at %llu)", path ? path : "(file)",
                     (unsigned long long)(off + got), len, (unsigned long long)off);
    return rc;
}
