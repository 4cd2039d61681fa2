/* torch.save archives: the zip + data.pkl, and tensors found in the value tree. */
#ifndef MCOREFS_TORCHFILE_H
#define MCOREFS_TORCHFILE_H

#include <stdint.h>
#include "mcorefs/dtype.h"
#include "mcorefs/pickle.h"
#include "mcorefs/zip.h"

#define MF_MAX_DIMS 8

/* Where a tensor's bytes are: a strided view into one storage record of one file. */
typedef struct {
    mf_dtype dtype;
    int ndim;
    int64_t shape[MF_MAX_DIMS];
    int64_t stride[MF_MAX_DIMS];   /* in elements */
    uint64_t offset;               /* absolute file offset of element [0,...,0] */
    uint64_t storage_begin;        /* absolute file offset of the storage record */
    uint64_t storage_bytes;        /* record size (view is checked to lie inside it) */
} mf_tensor;

typedef struct {
    int fd;              /* opened O_RDONLY|O_CLOEXEC, or borrowed (open_window) */
    int borrowed_fd;     /* 1: not closed by mf_torchfile_close */
    char *path;
    mf_zip zip;
    mf_pickle *pk;       /* owns root */
    mf_pv *root;         /* unpickled data.pkl */
} mf_torchfile;

/* Open a whole file written by torch.save and unpickle data.pkl (max_pkl bytes, 0 = 1 GiB). */
int mf_torchfile_open(mf_torchfile *tf, const char *path, size_t max_pkl);
/* Same over a window [base, base+len) of an already-open fd, which is borrowed: it must stay
 * open until mf_torchfile_close. */
int mf_torchfile_open_window(mf_torchfile *tf, int fd, const char *path, uint64_t base, uint64_t len, size_t max_pkl);
void mf_torchfile_close(mf_torchfile *tf);

/* 1 if v is a tensor object (_rebuild_tensor_v2/_v3 or _rebuild_parameter[_with_state] of one). */
int mf_torchfile_is_tensor(const mf_pv *v);
/* Resolve a tensor value to its location; checks dtype, dims, that the storage record exists,
 * numel*elem_size fits the record, and that every element of the strided view is inside it.
 * Errors name tf->path and `what` (e.g. the state-dict key). */
int mf_torchfile_tensor(const mf_torchfile *tf, const mf_pv *v, const char *what, mf_tensor *out);

#endif
