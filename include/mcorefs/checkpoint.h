/* A legacy (--ckpt-format torch) checkpoint: iteration folder, rank files, args, and an index
 * of every source tensor under a canonical name (global layer and expert ids). */
#ifndef MCOREFS_CHECKPOINT_H
#define MCOREFS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include "mcorefs/dcp.h"
#include "mcorefs/fileid.h"
#include "mcorefs/model.h"
#include "mcorefs/options.h"
#include "mcorefs/recipe.h"

typedef struct {
    char *path;      /* .../mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt, or a torch_dist .distcp */
    char *name;      /* mp_rank_TT[_PPP][_EEE], or the .distcp file name */
    int tp, pp, ep, etp;
    int fd;          /* kept open for reads */
    uint64_t size;   /* file size at mount time */
    mf_file_id id;   /* identity at open; every read checks the file still is this */
} mf_rankfile;

/* One canonical source tensor and its shards.
 * torch format: shards[k] is TP rank k (expert-TP rank for experts); how they join depends on
 * the rule. torch_dist ("positioned"): shards are chunks placed at (row0, col0) of one global
 * grows x gcols tensor. */
typedef struct {
    char *name;
    mf_shard *shards;   /* [n_shards]; shards[k].file < 0 when absent */
    uint16_t n_shards;
    uint8_t expert;     /* sharded over expert-TP */
    uint8_t used;       /* consumed by a mapping rule */
    uint8_t positioned;
    uint32_t copies;    /* how many times it was found (replicas over tp/ep files) */
    int64_t grows, gcols;
} mf_source;

typedef enum { MF_FORMAT_TORCH, MF_FORMAT_TORCH_DIST } mf_format;

typedef struct {
    mf_format format;
    char *iter_dir;
    int64_t iteration;  /* -1 for release */
    int release;
    mf_rankfile *files;
    size_t n_files;
    mf_model model;
    mf_pickle *args_pk; /* keeps args alive */
    const mf_pv *args;
    mf_source *sources;
    size_t n_sources, cap_sources;
    uint32_t *slots;    /* open-addressing hash: index+1 into sources */
    size_t n_slots;
    struct mf_dist_reader *dist;  /* torch_dist only: .metadata and the lazy chunk table (reader-private) */
} mf_checkpoint;

/* Visit every weight tensor of rank file idx under its canonical name (used to index, and to
 * verify replicas). tf must be that file, open. */
typedef int (*mf_visit_fn)(mf_checkpoint *c, void *ctx, const char *name, int expert, int n_shards,
                           int shard, const mf_shard *sh);
int mf_checkpoint_walk_file(mf_checkpoint *c, int idx, mf_visit_fn fn, void *ctx, const mf_torchfile *tf);

int mf_checkpoint_open(mf_checkpoint *c, const char *path, const mf_options *o);
void mf_checkpoint_close(mf_checkpoint *c);
mf_source *mf_checkpoint_find(const mf_checkpoint *c, const char *name);

/* torch_dist: the global keys of .metadata and their chunks (0, 0 for torch). */
void mf_checkpoint_dist_counts(const mf_checkpoint *c, size_t *keys, size_t *chunks);
/* The save's format: "torch", "torch_dist", or a DCP save of the plain state dict: "torch_dcp",
 * "fsdp_dtensor". */
const char *mf_checkpoint_format_name(const mf_checkpoint *c);

/* First global layer of model chunk (pp, vp) and its layer count (mcore-format.md §5.6). */
int mf_layer_offset(const mf_model *m, int64_t pp, int64_t vp, int64_t *offset, int64_t *count);

#endif
