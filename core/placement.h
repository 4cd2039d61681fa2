/* Place, then cut. Every source is first seen as its global (unsharded) Megatron tensor, made of
 * placed parts: torch_dist chunks sit where .metadata puts them; legacy TP/ETP shards are put
 * where they sit in the global tensor (dim 0 or dim 1 offsets, the two halves of a fused
 * [gate_t; up_t] shard as two parts of the global [gate; up]). Then each split is one cut out of
 * global coordinates (core/cut.c), the same for both formats. */
#ifndef MCOREFS_PLACEMENT_H
#define MCOREFS_PLACEMENT_H

#include <stdint.h>
#include "mcorefs/checkpoint.h"
#include "mcorefs/recipe.h"

/* Global rows [row0, row0+rows) x cols [col0, col0+cols) are rows [src_row, ...) x cols
 * [src_col, ...) of shard sh seen as 2-D. */
typedef struct {
    const mf_shard *sh;
    int64_t row0, col0, src_row, src_col, rows, cols;
} mf_part;

typedef struct {
    mf_part *parts;
    int n;
    int64_t rows, cols;       /* the global tensor as a matrix */
    const mf_tensor *t0;      /* a present shard: dtype and rank of the source */
    const char *where;        /* file to name in messages */
} mf_placed;

/* How tensor parallelism divides the source a split reads (the split's own cut aside). */
typedef enum { MF_TP_REPL, MF_TP_DIM0, MF_TP_DIM1, MF_TP_GLU, MF_TP_AUTO0, MF_TP_SECTIONS } mf_tp_kind;
mf_tp_kind mf_split_tp(mf_split split);

/* MF_TP_SECTIONS: the global row count of each section of a sectioned tensor, in storage
 * order (each TP shard holds 1/tp of every section, in the same order); the count, at most
 * MF_MAX_SECTIONS. */
#define MF_MAX_SECTIONS 6
int mf_sections(const mf_model *m, mf_split split, int64_t *rows);

/* torch_dist stores a sectioned tensor as one key per section, `<name>.<section>` (Megatron's
 * _split_tensor_factory), each key's global tensor being that section of the global tensor:
 * the section names, in storage order (mf_sections gives how many). */
const char *const *mf_section_names(mf_split split);

/* Place the section keys (keys[i]: section i, positioned, its global shape checked) as one
 * global [s_0; s_1; ...] tensor, the same the legacy shards are placed in. MF_OK, or an error
 * naming .metadata (a key of another size or dtype). Free with mf_placed_free. */
int mf_place_section_keys(const mf_checkpoint *c, const mf_rule *r, const mf_source *const *keys, mf_placed *out);

/* Place the shards of s as rule r shards them (its split says which dimension TP divides).
 * MF_OK, or an error naming the file (missing shard, shards that disagree, a shard that is
 * not a matrix, an odd fused gate/up shard). Free with mf_placed_free. */
int mf_place(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, mf_placed *out);
void mf_placed_free(mf_placed *pl);

/* A growing list of pieces (a recipe under construction). */
typedef struct {
    mf_piece *p;
    uint32_t n, cap;
} mf_piece_vec;

int mf_piece_push(mf_piece_vec *v, const mf_piece *p);

/* Rectangle [gr0, gr0+nr) x [gc0, gc0+nc) of the global tensor, cut out of every part it
 * touches, placed at (dr0, dc0) of the HF tensor as copy pieces. */
int mf_cut_rect(mf_piece_vec *v, const mf_placed *pl, int64_t gr0, int64_t gc0, int64_t nr, int64_t nc,
                int64_t dr0, int64_t dc0);

/* The same rectangle shown transposed, its rows becoming every dst_step-th column from dc0:
 * global (r, c) lands at (dr0 + c - gc0, dc0 + (r - gr0) * dst_step) of the HF tensor. */
int mf_cut_rect_t(mf_piece_vec *v, const mf_placed *pl, int64_t gr0, int64_t gc0, int64_t nr, int64_t nc,
                  int64_t dr0, int64_t dc0, int dst_step);

/* The one cut of each split: the pieces of the HF tensor the split takes out of the global
 * tensor, and the HF matrix's rows and columns. MF_OK, or MF_ERR_INCONSISTENT naming
 * pl->where and `name` when the global shape does not fit the split and the args. */
int mf_cut(const mf_model *m, mf_split split, const mf_placed *pl, const char *name, mf_piece_vec *v,
           int64_t *rows, int64_t *cols);

#endif
