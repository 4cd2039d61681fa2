/* The one path join and the one pread loop of core. Errors name the file (mf_fail with its
 * path); no errno leaves core through them. */
#ifndef MCOREFS_FILE_IO_H
#define MCOREFS_FILE_IO_H
#include <stddef.h>
#include <stdint.h>

/* "dir/name", malloc'ed; NULL when out of memory. */
char *mf_path_join(const char *dir, const char *name);
/* Up to len bytes at off into buf, retrying short reads and EINTR; *got is how many were read
 * before end of file. MF_OK, or MF_ERR_IO "<path>: read at <off>: <reason>". */
int mf_pread_upto(int fd, const char *path, void *buf, size_t len, uint64_t off, size_t *got);
/* Exactly len bytes at off: as mf_pread_upto, and end of file first is MF_ERR_IO
 * "<path>: ends at <offset> (needed <len> bytes at <off>)". */
int mf_pread_full(int fd, const char *path, void *buf, size_t len, uint64_t off);
#endif
