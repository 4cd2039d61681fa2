/* The .metadata parser's private state and helpers, shared by the files of the torch_dist
 * reader: dcp.c (.metadata: open, tensors, names), dcp_fields.c (dataclass fields),
 * dcp_storage.c (storage_data index, items to files), dcp_tiling.c (chunk tiling check). */
#ifndef MCOREFS_DCP_PARSE_H
#define MCOREFS_DCP_PARSE_H
#include <stddef.h>
#include <stdint.h>
#include "mcorefs/dcp.h"
#include "mcorefs/pickle.h"

/* Everything reading a .metadata holds at once (the file, its pickle values, the index tables)
 * stays under this fixed cap, so a crafted file of any size cannot take the process much past
 * it. A Kimi-K2-sized .metadata (61 layers x 384 experts, 35 MB) needs about 100 MiB (the
 * file is charged whole, though it is read a window at a time). */
#define METADATA_MEMORY_CAP ((size_t)512 << 20)
#define MAX_METADATA_BYTES ((uint64_t)METADATA_MEMORY_CAP - ((uint64_t)1 << 20)) /* leaves the pickle >= 1 MiB */
#define MAX_CHUNK_PKL ((size_t)1 << 20)         /* data.pkl of one chunk: a single tensor record */
#define MAX_ARGS_PKL ((size_t)256 << 20)        /* data.pkl of common.pt / the common_state item */
#define MAX_JSON_BYTES 65536
#define MAX_REL_PATH 4096
#define GRID_MIN_CELLS ((uint64_t)1 << 20)      /* grid check allowed up to max(this, 8 x chunks) */
#define SWEEP_MAX_PAIRS ((uint64_t)1 << 28)     /* fallback overlap sweep work limit per tensor */

struct mf_dcp_index {
    mf_dcp_chunk *chunks;  /* all chunks, tensor after tensor; tensors[i].chunks points inside */
    size_t n_chunks;
    uint32_t *owner;       /* owner[j]: tensor index of chunks[j] */
    size_t *by_name;       /* tensor indices sorted by fqn */
};

typedef struct {
    mf_dcp *d;
    const char *mpath;       /* dir/.metadata */
    size_t n_sd;
    const char **sd_fqn;
    const mf_pv **sd_off;    /* offset tuple, NULL for None/absent */
    const mf_pv **sd_info;
    uint64_t *sd_hash;
    uint32_t *sd_tab;        /* open addressing: entry index + 1, 0 = empty */
    size_t n_sd_slots;
    uint32_t *f_tab;         /* file name interning: file index + 1 */
    uint64_t *f_hash;
    size_t n_f_slots;
    size_t files_alloc;      /* capacity of d->files / d->file_sizes */
    size_t mem_used;         /* bytes held for this .metadata, against METADATA_MEMORY_CAP */
} ctx;

/* What an item is, for messages; formatted only when one is needed. */
typedef struct {
    const char *fqn;
    const int64_t *offsets;  /* a tensor chunk's offsets, NULL for a bytes item */
    int ndim;
} item_ref;

/* dcp_fields.c */
/* "(0, 64, 0)", "(5,)" or "()" like Python prints a tuple. */
const char *dcp_fmt_dims(char *buf, size_t n, const int64_t *v, int nd);
const char *dcp_class_name(const mf_pv *v);
int dcp_is_class(const mf_pv *v, const char *name);
const mf_pv *dcp_field(const mf_pv *obj, const char *key);
int dcp_get_dims(const mf_pv *t, int64_t *out, int *nd);
const char *dcp_dims_problem(int rc);
/* dcp_storage.c */
int dcp_charge(ctx *x, size_t bytes, const char *what);
void dcp_release(ctx *x, size_t bytes);
void dcp_ctx_free(ctx *x);
const mf_pv *dcp_sd_find(const ctx *x, const char *fqn, int has_off, int nd, const int64_t *off);
int dcp_skipped(const char *fqn);
int dcp_build_storage_index(ctx *x, const mf_pv *sd);
const char *dcp_item_name(const item_ref *it, char *buf, size_t n);
int dcp_resolve_info(ctx *x, const mf_pv *info, const item_ref *it, int *file, uint64_t *off, uint64_t *len);
/* dcp_tiling.c */
int dcp_check_tiling(const ctx *x, const mf_dcp_tensor *t);
/* The most scratch memory dcp_check_tiling takes for t (charged against the cap first). */
size_t dcp_tiling_scratch(const mf_dcp_tensor *t);
#endif
