/* Unit tests for place-then-cut (core/placement.c, core/cut.c): a synthetic global Megatron
 * tensor G is sharded the way Megatron shards it for each split's TP kind (legacy torch: TP
 * ranks; torch_dist: chunks on a grid), placed, cut, and gathered from a temp file; the HF
 * bytes must equal the split's definition applied to G directly, for both formats alike. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "placement.h"
#include "unit_support.h"

/* heads 4, groups 2, head_dim 3: fused QKV has (4 + 2*2) * 3 = 24 rows */
#define R 24
#define C 5
#define MAXSH 8

static float g(int64_t r, int64_t c) { return (float)(r * 1000 + c); }

static mf_model model(void)
{
    mf_model m;
    memset(&m, 0, sizeof(m));
    m.heads = 4;
    m.groups = 2;
    m.head_dim = 3;
    m.padded_vocab = R;
    m.vocab = 21;
    m.hidden = C;
    return m;
}

typedef struct {
    mf_checkpoint c;
    mf_rankfile file;
    mf_shard shards[MAXSH];
    mf_source src;
    int fd;
    float data[4 * R * C];  /* the file's elements */
    size_t n;
} fixture;

/* Append a rows x cols block of G starting at (r0, c0) as shard k. */
static void add_block(fixture *f, int k, int64_t r0, int64_t c0, int64_t rows, int64_t cols)
{
    mf_shard *sh = &f->shards[k];
    memset(sh, 0, sizeof(*sh));
    sh->file = 0;
    sh->t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { rows, cols }, .stride = { cols, 1 },
                         .offset = f->n * sizeof(float) };
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            f->data[f->n++] = g(r0 + i, c0 + j);
}

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->c.model = model();
    f->c.iter_dir = "iter_0000001";
    f->c.files = &f->file;
    f->c.n_files = 1;
    f->file.path = (char *)us_tmp("placement.bin");
    f->src.name = "decoder.layers.0.w";
    f->src.shards = f->shards;
    f->fd = -1;
}

static void fixture_write(fixture *f)
{
    assert_int_equal(us_write_file(f->file.path, f->data, f->n * sizeof(float)), 0);
    f->fd = open(f->file.path, O_RDONLY | O_CLOEXEC);
    assert_true(f->fd >= 0);
}

/* Legacy torch: n TP ranks of G as Megatron writes them for the split's TP kind. */
static void shard_legacy(fixture *f, mf_split split, int n)
{
    mf_tp_kind tp = mf_split_tp(split);
    f->src.n_shards = (uint16_t)n;
    for (int k = 0; k < n; k++) {
        if (tp == MF_TP_REPL) {
            add_block(f, k, 0, 0, R, C);
        } else if (tp == MF_TP_DIM1) {
            add_block(f, k, 0, k * (C / n), R, C / n + (k == n - 1 ? C % n : 0));
        } else if (tp == MF_TP_GLU) {   /* rank k: [gate_k; up_k] in one tensor */
            int64_t h = R / 2 / n;
            size_t start = f->n;
            add_block(f, k, k * h, 0, h, C);
            add_block(f, MAXSH - 1, R / 2 + k * h, 0, h, C);
            f->shards[k].t.shape[0] = 2 * h;
            f->shards[k].t.offset = start * sizeof(float);
        } else {
            add_block(f, k, k * (R / n), 0, R / n, C);
        }
    }
    fixture_write(f);
}

/* torch_dist: chunks of the global tensor on an uneven 2 x 2 grid. */
static void shard_dist(fixture *f)
{
    static const int64_t rs[] = { 0, 7, R }, cs[] = { 0, 2, C };
    int k = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++, k++) {
            add_block(f, k, rs[i], cs[j], rs[i + 1] - rs[i], cs[j + 1] - cs[j]);
            f->shards[k].row0 = rs[i];
            f->shards[k].col0 = cs[j];
        }
    f->src.n_shards = 4;
    f->src.positioned = 1;
    f->src.grows = R;
    f->src.gcols = C;
    fixture_write(f);
}

/* The split's definition applied to G: the HF matrix (rows x cols) into out. */
static void expected(const mf_model *m, mf_split split, float *out, int64_t *rows, int64_t *cols)
{
    int64_t d = m->head_dim, rq = m->heads / m->groups, F = R / 2, n = 0;
    *cols = C;
    switch (split) {
    case MF_SPLIT_VOCAB:
        *rows = m->vocab;
        break;
    case MF_SPLIT_QKV_Q:
    case MF_SPLIT_QKV_K:
    case MF_SPLIT_QKV_V:
        for (int64_t grp = 0; grp < m->groups; grp++) {
            int64_t blk = grp * (rq + 2) * d;
            int64_t r0 = split == MF_SPLIT_QKV_Q ? blk : split == MF_SPLIT_QKV_K ? blk + rq * d : blk + (rq + 1) * d;
            int64_t cnt = split == MF_SPLIT_QKV_Q ? rq * d : d;
            for (int64_t r = r0; r < r0 + cnt; r++)
                for (int64_t c = 0; c < C; c++)
                    out[n++] = g(r, c);
        }
        *rows = n / C;
        return;
    case MF_SPLIT_GLU_GATE:
    case MF_SPLIT_GLU_UP:
        for (int64_t r = 0; r < F; r++)
            for (int64_t c = 0; c < C; c++)
                out[n++] = g(r + (split == MF_SPLIT_GLU_UP ? F : 0), c);
        *rows = F;
        return;
    case MF_SPLIT_DIM1_T:
        for (int64_t c = 0; c < C; c++)
            for (int64_t r = 0; r < R; r++)
                out[n++] = g(r, c);
        *rows = C;
        *cols = R;
        return;
    case MF_SPLIT_GLU_INTERLEAVE_T:
        for (int64_t c = 0; c < C; c++)
            for (int64_t f = 0; f < F; f++) {
                out[n++] = g(f, c);
                out[n++] = g(F + f, c);
            }
        *rows = C;
        *cols = R;
        return;
    default:
        *rows = R;
        break;
    }
    for (int64_t r = 0; r < *rows; r++)
        for (int64_t c = 0; c < C; c++)
            out[n++] = g(r, c);
}

/* Place, cut, gather; compare with expected(). */
static void check_split(fixture *f, mf_split split)
{
    /* AUTO0 reads the rule's row dim: padded_vocab_size = R, so a shard of R rows is a replica */
    mf_rule rule = { "hf", { "src" }, split, MF_WHEN_ALWAYS, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN };
    mf_placed pl;
    assert_int_equal(mf_place(&f->c, &rule, &f->src, &pl), MF_OK);
    assert_int_equal(pl.rows, R);
    assert_int_equal(pl.cols, C);
    mf_piece_vec v = { 0 };
    int64_t rows, cols, er, ec;
    assert_int_equal(mf_cut(&f->c.model, split, &pl, f->src.name, &v, &rows, &cols), MF_OK);
    mf_placed_free(&pl);
    float want[R * C], got[R * C];
    expected(&f->c.model, split, want, &er, &ec);
    assert_int_equal(rows, er);
    assert_int_equal(cols, ec);
    mf_hf_tensor t = { .name = "hf", .dtype = MF_DT_F32, .src_dtype = MF_DT_F32, .ndim = 2,
                       .shape = { rows, cols }, .pieces = v.p, .n_pieces = v.n };
    t.nbytes = (uint64_t)rows * (uint64_t)cols * sizeof(float);
    mf_io io = { .fds = &f->fd };
    memset(got, 0, sizeof(got));
    assert_int_equal(mf_gather(&t, &io, 0, (size_t)t.nbytes, (uint8_t *)got), 0);
    assert_memory_equal(got, want, (size_t)t.nbytes);
    free(v.p);
    close(f->fd);
}

static const mf_split all_splits[] = {
    MF_SPLIT_REPL, MF_SPLIT_DIM0, MF_SPLIT_DIM1, MF_SPLIT_QKV_Q, MF_SPLIT_QKV_K, MF_SPLIT_QKV_V,
    MF_SPLIT_GLU_GATE, MF_SPLIT_GLU_UP, MF_SPLIT_VOCAB, MF_SPLIT_AUTO0, MF_SPLIT_DIM1_T,
    MF_SPLIT_GLU_INTERLEAVE_T,
};

static void test_every_split_legacy(void **state)
{
    (void)state;
    static const int tps[] = { 1, 2, 3, 4 };
    for (size_t i = 0; i < sizeof(all_splits) / sizeof(all_splits[0]); i++)
        for (size_t k = 0; k < sizeof(tps) / sizeof(tps[0]); k++) {
            if (mf_split_tp(all_splits[i]) == MF_TP_GLU && (R / 2) % tps[k])
                continue;
            fixture f;
            fixture_init(&f);
            shard_legacy(&f, all_splits[i], tps[k]);
            check_split(&f, all_splits[i]);
        }
}

static void test_every_split_dist(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(all_splits) / sizeof(all_splits[0]); i++) {
        fixture f;
        fixture_init(&f);
        shard_dist(&f);
        check_split(&f, all_splits[i]);
    }
}

/* Legacy placement puts the halves of fused gate/up shards in the global [gate; up]. */
static void test_glu_halves_placed(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    shard_legacy(&f, MF_SPLIT_GLU_GATE, 2);
    mf_rule rule = { "hf", { "src" }, MF_SPLIT_GLU_GATE, MF_WHEN_ALWAYS, MF_D_FC1, MF_D_HIDDEN, MF_DTYPE_SHOWN };
    mf_placed pl;
    assert_int_equal(mf_place(&f.c, &rule, &f.src, &pl), MF_OK);
    assert_int_equal(pl.n, 4);
    static const int64_t row0[] = { 0, 12, 6, 18 }, src_row[] = { 0, 6, 0, 6 };
    for (int k = 0; k < 4; k++) {
        assert_ptr_equal(pl.parts[k].sh, &f.shards[k / 2]);
        assert_int_equal(pl.parts[k].row0, row0[k]);
        assert_int_equal(pl.parts[k].src_row, src_row[k]);
        assert_int_equal(pl.parts[k].rows, 6);
    }
    mf_placed_free(&pl);
    close(f.fd);
}

/* One check per problem, one message naming the file, for both formats. */
static void test_cut_refusals(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    shard_legacy(&f, MF_SPLIT_VOCAB, 2);
    f.c.model.padded_vocab = R + 8;
    mf_rule rule = { "hf", { "src" }, MF_SPLIT_VOCAB, MF_WHEN_ALWAYS, MF_D_VOCAB, MF_D_HIDDEN, MF_DTYPE_SHOWN };
    mf_placed pl;
    mf_piece_vec v = { 0 };
    int64_t rows, cols;
    assert_int_equal(mf_place(&f.c, &rule, &f.src, &pl), MF_OK);
    assert_int_equal(mf_cut(&f.c.model, MF_SPLIT_VOCAB, &pl, f.src.name, &v, &rows, &cols), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), f.file.path));
    assert_non_null(strstr(mf_error(), "padded_vocab_size=32"));
    mf_placed_free(&pl);
    f.c.model = model();
    f.c.model.heads = 6;   /* (6 + 4) x 3 = 30 rows expected */
    assert_int_equal(mf_place(&f.c, &rule, &f.src, &pl), MF_OK);
    assert_int_equal(mf_cut(&f.c.model, MF_SPLIT_QKV_K, &pl, f.src.name, &v, &rows, &cols), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "= 30"));
    mf_placed_free(&pl);
    free(v.p);
    /* a missing TP rank of a split tensor */
    f.shards[1].file = -1;
    assert_int_equal(mf_place(&f.c, &rule, &f.src, &pl), MF_ERR_MISSING);
    assert_non_null(strstr(mf_error(), "shard 1 of 2"));
    close(f.fd);

    fixture_init(&f);
    shard_legacy(&f, MF_SPLIT_GLU_UP, 2);
    f.shards[1].t.shape[0] = 11;   /* an odd fused gate/up shard */
    rule.split = MF_SPLIT_GLU_UP;
    assert_int_equal(mf_place(&f.c, &rule, &f.src, &pl), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "odd row count 11"));
    close(f.fd);
}

/* A 1-D source shown transposed is one row (an expert's bias in a stacked [E, N] tensor): one
 * transposed piece, destination row 0, its values along the columns. */
static void test_cut_transposed_1d_is_a_row(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    add_block(&f, 0, 0, 0, R, 1);
    f.shards[0].t.ndim = 1;
    f.src.n_shards = 1;
    fixture_write(&f);
    mf_rule rule = { "hf", { "src" }, MF_SPLIT_DIM1_T, MF_WHEN_ALWAYS, MF_D_HIDDEN, MF_D_NONE, MF_DTYPE_SHOWN };
    mf_placed pl;
    mf_piece_vec v = { 0 };
    int64_t rows, cols;
    assert_int_equal(mf_place(&f.c, &rule, &f.src, &pl), MF_OK);
    assert_int_equal(mf_cut(&f.c.model, MF_SPLIT_DIM1_T, &pl, f.src.name, &v, &rows, &cols), MF_OK);
    assert_int_equal(rows, 1);
    assert_int_equal(cols, R);
    assert_int_equal(v.n, 1);
    assert_int_equal(v.p[0].transposed, 1);
    assert_int_equal(v.p[0].dst_row, 0);
    assert_int_equal(v.p[0].dst_col, 0);
    assert_int_equal(v.p[0].rows, 1);
    assert_int_equal(v.p[0].cols, R);
    mf_placed_free(&pl);
    free(v.p);
    close(f.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split_legacy),
        cmocka_unit_test(test_every_split_dist),
        cmocka_unit_test(test_glu_halves_placed),
        cmocka_unit_test(test_cut_refusals),
        cmocka_unit_test(test_cut_transposed_1d_is_a_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
