/* Source-file identity: recorded at mount, compared after every read that takes bytes. */
#include <errno.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/fileid.h"

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

void mf_file_id_from_stat(const struct stat *st, mf_file_id *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_ns = ns(st->st_mtim);
    id->ctime_ns = ns(st->st_ctim);
}

int mf_file_id_get(int fd, const char *path, mf_file_id *id)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return mf_fail(MF_ERR_IO, "%s: fstat: %s", path, strerror(errno));
    mf_file_id_from_stat(&st, id);
    return MF_OK;
}

int mf_file_id_check(int fd, const mf_file_id *id, const char *path)
{
    struct stat st;
    mf_file_id now;
    if (fstat(fd, &st) != 0)
        return mf_fail(MF_ERR_IO, "%s: fstat: %s", path, strerror(errno));
    mf_file_id_from_stat(&st, &now);
    if (st.st_nlink == 0)
        now.ctime_ns = id->ctime_ns;   /* replaced by rename or deleted: the unlink set ctime */
    if (now.dev != id->dev || now.ino != id->ino)
        return mf_fail(MF_ERR_CHANGED, "%s: not the file opened at mount (device/inode differ)", path);
    if (now.size != id->size)
        return mf_fail(MF_ERR_CHANGED, "%s: changed since mount (size %llu, was %llu); remount to read the new contents",
                       path, (unsigned long long)now.size, (unsigned long long)id->size);
    if (now.mtime_ns != id->mtime_ns || now.ctime_ns != id->ctime_ns)
        return mf_fail(MF_ERR_CHANGED, "%s: changed since mount (modified in place); remount to read the new contents",
                       path);
    return MF_OK;
}
