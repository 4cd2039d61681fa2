/* One byte range of a view file into the export's output file: ranges that are plain rank-file
 * bytes are copied by the kernel (copy_file_range: no trip through user space; XFS and btrfs
 * share the blocks instead where the ranges are block-aligned), the rest is gathered into a
 * buffer and written with one pwrite per run. */
#ifndef MCOREFS_TOOLS_EXPORT_COPY_H
#define MCOREFS_TOOLS_EXPORT_COPY_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "mcorefs/view.h"

typedef struct {
    const mf_session *s;
    int kernel_copy;          /* 1 until copy_file_range is refused (EXDEV, EOPNOTSUPP, ...); atomic */
    uint64_t kernel_bytes;    /* bytes copied by copy_file_range; atomic */
    uint64_t user_bytes;      /* bytes written from the buffer (gathered, or read for the fallback); atomic */
    void (*after_copy)(void *arg);   /* tests only: runs between a range's copy and its source check */
    void *after_copy_arg;
} export_copier;

/* A worker's own memory: the gather buffer (one unit) and the segment list. */
typedef struct {
    char *buf;
    size_t cap;
    mf_segment *segs;
    size_t max_segs;
} export_scratch;

/* kernel_copy: 0 forces pread/pwrite everywhere (tests set MCOREFS_EXPORT_NO_KERNEL_COPY=1). */
void export_copier_init(export_copier *c, const mf_session *s, int kernel_copy);
int export_scratch_init(export_scratch *sc, size_t cap);
void export_scratch_free(export_scratch *sc);

/* Write bytes [off, off+len) of f (len <= sc->cap) to out_fd at the same offset. Every rank file
 * that bytes were copied from is checked against its identity at mount after the copy:
 * MF_ERR_CHANGED when it changed. *stop is polled on EINTR (a signal): MF_ERR_IO when set.
 * MF_OK or a negative mf_status, with mf_error() naming the file. */
int export_copy_range(export_copier *c, const mf_vfile *f, int out_fd, const char *out_name, uint64_t off,
                      size_t len, export_scratch *sc, const volatile sig_atomic_t *stop);

/* copy_file_range of len bytes from src at src_off to dst at dst_off, retried on short counts.
 * 1 when done; 0 when the kernel refuses this pair of files (copy nothing more this way: the
 * caller falls back, *done says how much was copied); a negative mf_status on I/O errors. */
int export_kernel_copy(int src, uint64_t src_off, int dst, uint64_t dst_off, size_t len, size_t *done,
                       const volatile sig_atomic_t *stop);

/* The rank file behind descriptor fd (an mf_segment's fd) still has its identity at mount:
 * MF_OK, or MF_ERR_CHANGED naming it. */
int export_check_source(const mf_session *s, int fd);

#endif
