/* A source file's identity at mount time, and the check that it is still that file, unchanged.
 * Megatron re-saving an iteration rewrites rank files in place (same inode); bytes read after
 * that would be new values cut with the old layout, so every read compares the identity. */
#ifndef MCOREFS_FILEID_H
#define MCOREFS_FILEID_H

#include <stdint.h>
#include <sys/stat.h>

typedef struct {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
} mf_file_id;

void mf_file_id_from_stat(const struct stat *st, mf_file_id *id);
/* Record fd's identity. MF_OK or MF_ERR_IO naming path. */
int mf_file_id_get(int fd, const char *path, mf_file_id *id);
/* MF_OK if fd is still the file recorded in id (same device, inode, size, mtime and ctime, to
 * the nanosecond); otherwise MF_ERR_CHANGED (or MF_ERR_IO if fstat fails) with a message
 * naming path and what changed. One fstat. ctime also moves on chmod/chown/link: those count
 * as changes. Not once the file has no name left (renamed over or deleted: the unlink itself
 * sets ctime, and the old contents stay as they were); size and mtime are still compared. */
int mf_file_id_check(int fd, const mf_file_id *id, const char *path);

#endif
