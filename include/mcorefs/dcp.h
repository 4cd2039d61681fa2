/* PyTorch Distributed Checkpoint (Megatron --ckpt-format torch_dist): the .metadata index and
 * the torch.save items embedded in __R_K.distcp files (mcore-format.md §7). */
#ifndef MCOREFS_DCP_H
#define MCOREFS_DCP_H

#include <stddef.h>
#include <stdint.h>
#include "mcorefs/pickle.h"
#include "mcorefs/torchfile.h"

typedef struct {
    int64_t offsets[MF_MAX_DIMS];  /* global offsets of the chunk */
    int64_t sizes[MF_MAX_DIMS];
    int file;                      /* index into mf_dcp.files */
    uint64_t offset, length;       /* byte window of the embedded torch.save archive */
} mf_dcp_chunk;

typedef struct {
    char *fqn;                     /* e.g. "decoder.layers.self_attention.linear_qkv.weight" */
    mf_dtype dtype;
    int ndim;
    int64_t size[MF_MAX_DIMS];     /* global shape */
    mf_dcp_chunk *chunks;
    size_t n_chunks;
} mf_dcp_tensor;

typedef struct {
    char *fqn;                     /* e.g. "common_state/shard_0_1" */
    int file;
    uint64_t offset, length;
} mf_dcp_bytes;

typedef struct {
    char *dir;                     /* the iteration folder */
    char **files;                  /* relative paths named by .metadata, e.g. "__0_0.distcp" */
    uint64_t *file_sizes;
    size_t n_files;
    mf_dcp_tensor *tensors;        /* in .metadata order */
    size_t n_tensors;
    mf_dcp_bytes *bytes;
    size_t n_bytes;
    struct mf_dcp_index *index;    /* private: name index for mf_dcp_find, chunk owners */
} mf_dcp;

/* 1 if dir holds a torch_dist checkpoint (metadata.json with sharded_backend torch_dist, or a
 * .metadata file), else 0. */
int mf_dcp_detect(const char *dir);
/* Parse dir/.metadata. Checks: every chunk's window lies inside its file, chunks lie inside the
 * global shape, do not overlap and cover it completely; dtypes are supported. Errors name the
 * file and tensor. */
int mf_dcp_open(mf_dcp *d, const char *dir);
void mf_dcp_close(mf_dcp *d);
const mf_dcp_tensor *mf_dcp_find(const mf_dcp *d, const char *fqn);
/* The training args: from dir/common.pt (core <= 0.18), the bytes item "common_state/..."
 * (a torch.save of [common_state_dict], core >= 0.19) or the bytes item "args" (torch_dcp and
 * fsdp_dtensor saves: a torch.save of the Namespace). *pk owns the tree. MF_ERR_MISSING when
 * the save carries none. */
int mf_dcp_load_args(const mf_dcp *d, mf_pickle **pk, const mf_pv **args);
/* Locate the bytes of one chunk: parse the embedded archive at [offset, offset+length) of the
 * open file fd and resolve its single tensor (absolute file offsets in *out). */
int mf_dcp_chunk_tensor(const mf_dcp *d, int fd, const mf_dcp_chunk *c, mf_tensor *out);

#endif
