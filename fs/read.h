#ifndef MCOREFS_FS_READ_H
#define MCOREFS_FS_READ_H
#include "ops.h"

/* The largest request the kernel may send (sizes each thread's reply buffer). */
void fs_read_set_max(size_t max_read);
/* Answer a read of [off, off+size) of the file opened as fh: the bytes, or EIO/ENOMEM with one
 * log line. */
void fs_read_reply(fuse_req_t req, const fs_tree *t, uint64_t fh, size_t size, uint64_t off);

#endif
