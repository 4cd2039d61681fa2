/* Unit tests for the gather engine (core/gather.c) on synthetic sources: a temp file of known
 * float32 values, read through pieces of every kind (plain copy, transposed, column-interleaved,
 * both, a stacked 3-D tensor, dtype conversion), at every offset and odd lengths, compared with
 * a reference computed here element by element. No FUSE, no checkpoint. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/gather.h"
#include "unit_support.h"

#define SRC_OFFSET 24   /* the source matrix starts here in the file (not aligned to a row) */

typedef struct {
    int fd;
    float *vals;        /* the source matrix as written */
    int64_t rows, cols;
    mf_shard sh;
    mf_io io;
} source;

/* A rows x cols float32 matrix of distinct values at SRC_OFFSET of a new temp file. */
static void source_open(source *s, const char *name, int64_t rows, int64_t cols)
{
    memset(s, 0, sizeof(*s));
    s->rows = rows;
    s->cols = cols;
    size_t n = (size_t)(rows * cols);
    s->vals = malloc(n * sizeof(float));
    uint8_t *file = calloc(1, SRC_OFFSET + n * sizeof(float));
    assert_non_null(s->vals);
    assert_non_null(file);
    for (size_t k = 0; k < n; k++)
        s->vals[k] = (float)k + 0.5f;
    memcpy(file + SRC_OFFSET, s->vals, n * sizeof(float));
    const char *path = us_tmp(name);
    assert_int_equal(us_write_file(path, file, SRC_OFFSET + n * sizeof(float)), 0);
    free(file);
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(s->fd >= 0);
    s->sh.file = 0;
    s->sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { rows, cols }, .stride = { cols, 1 },
                           .offset = SRC_OFFSET };
    s->io.fds = &s->fd;
}

static void source_close(source *s)
{
    close(s->fd);
    free(s->vals);
}

static float at(const source *s, int64_t r, int64_t c)
{
    return s->vals[r * s->cols + c];
}

/* Every byte range [off, off+len) for a spread of offsets and odd lengths, against ref. */
static void check_all_ranges(const mf_hf_tensor *t, const mf_io *io, const uint8_t *ref)
{
    uint64_t n = t->nbytes;
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(mf_gather(t, io, 0, (size_t)n, buf), 0);
    assert_memory_equal(buf, ref, n);
    static const uint64_t lens[] = { 1, 3, 5, 7, 13, 61, 255, 1023 };
    uint64_t step = n / 97 ? n / 97 : 1;
    for (uint64_t off = 0; off < n; off += step + (off % 3)) {
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
            uint64_t len = lens[k] < n - off ? lens[k] : n - off;
            memset(buf, 0xAB, (size_t)len);
            assert_int_equal(mf_gather(t, io, off, (size_t)len, buf), 0);
            assert_memory_equal(buf, ref + off, (size_t)len);
        }
    }
    free(buf);
}

static mf_hf_tensor tensor2(int64_t rows, int64_t cols, mf_piece *p, uint32_t n)
{
    mf_hf_tensor t = { .name = "t", .dtype = MF_DT_F32, .src_dtype = MF_DT_F32, .ndim = 2,
                       .shape = { rows, cols }, .pieces = p, .n_pieces = n };
    t.nbytes = (uint64_t)rows * (uint64_t)cols * 4;
    return t;
}

/* A transposed piece: dst (i, j) = src (src_row + j, src_col + i), from a sub-block. */
static void test_transposed_piece(void **state)
{
    (void)state;
    source s;
    source_open(&s, "transposed", 9, 11);
    /* HF [7, 5] = transpose of source rows 2..6, cols 3..9 */
    mf_piece p = { .src = &s.sh, .src_row = 2, .src_col = 3, .rows = 7, .cols = 5, .transposed = 1 };
    mf_hf_tensor t = tensor2(7, 5, &p, 1);
    float ref[7 * 5];
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++)
            ref[i * 5 + j] = at(&s, 2 + j, 3 + i);
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    /* not plain file ranges: no zero-copy segments */
    mf_segment seg[4];
    assert_int_equal(mf_gather_segments(&t, &s.io, 0, (size_t)t.nbytes, seg, 4), 0);
    source_close(&s);
}

/* Column-interleaved: gate (cols 0..3) to even columns, up (cols 4..7) to odd ones. */
static void test_interleaved_pieces(void **state)
{
    (void)state;
    source s;
    source_open(&s, "interleaved", 6, 8);
    mf_piece p[2] = {
        { .src = &s.sh, .src_row = 1, .src_col = 0, .dst_col = 0, .rows = 5, .cols = 4, .dst_step = 2 },
        { .src = &s.sh, .src_row = 1, .src_col = 4, .dst_col = 1, .rows = 5, .cols = 4, .dst_step = 2 },
    };
    mf_hf_tensor t = tensor2(5, 8, p, 2);
    float ref[5 * 8];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) {
            ref[i * 8 + 2 * j] = at(&s, 1 + i, j);
            ref[i * 8 + 2 * j + 1] = at(&s, 1 + i, 4 + j);
        }
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    source_close(&s);
}

/* Both at once (gpt-oss gate_up_proj from Megatron's [gate; up] fc1): HF [H, 2F] with
 * HF (h, 2f) = gate (f, h) and HF (h, 2f+1) = up (f, h). */
static void test_transposed_interleaved(void **state)
{
    (void)state;
    const int F = 5, H = 6;
    source s;
    source_open(&s, "glu_t", 2 * F, H);
    mf_piece p[2] = {
        { .src = &s.sh, .src_row = 0, .dst_col = 0, .rows = (uint32_t)H, .cols = (uint32_t)F, .transposed = 1, .dst_step = 2 },
        { .src = &s.sh, .src_row = (uint32_t)F, .dst_col = 1, .rows = (uint32_t)H, .cols = (uint32_t)F, .transposed = 1, .dst_step = 2 },
    };
    mf_hf_tensor t = tensor2(H, 2 * F, p, 2);
    float ref[6 * 10];
    for (int h = 0; h < H; h++)
        for (int f = 0; f < F; f++) {
            ref[h * 2 * F + 2 * f] = at(&s, f, h);
            ref[h * 2 * F + 2 * f + 1] = at(&s, F + f, h);
        }
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    source_close(&s);
}

/* A stacked 3-D tensor [E, R, C]: expert e's rows come from its own source block; read at odd
 * offsets and lengths across expert boundaries. */
static void test_stacked_3d(void **state)
{
    (void)state;
    const int E = 3, R = 4, C = 7;
    source s;
    source_open(&s, "stacked", E * R + 2, C + 3);
    mf_piece p[3];
    for (int e = 0; e < E; e++)   /* expert e: source rows (E-1-e)*R + 1.., cols 2.. (out of order) */
        p[e] = (mf_piece){ .src = &s.sh, .dst_row = (uint32_t)(e * R), .src_row = (uint32_t)((E - 1 - e) * R + 1),
                           .src_col = 2, .rows = (uint32_t)R, .cols = (uint32_t)C };
    mf_hf_tensor t = { .name = "stacked", .dtype = MF_DT_F32, .src_dtype = MF_DT_F32, .ndim = 3,
                       .shape = { E, R, C }, .pieces = p, .n_pieces = 3 };
    t.nbytes = (uint64_t)E * R * C * 4;
    assert_int_equal(mf_hf_cols(&t), C);
    float ref[3 * 4 * 7];
    for (int e = 0; e < E; e++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                ref[(e * R + r) * C + c] = at(&s, (E - 1 - e) * R + 1 + r, 2 + c);
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    source_close(&s);
}

/* Sources that are strided views themselves (a column-major view, as a legacy grouped expert
 * or a transposed tensor can be): transposed and interleaved pieces over them. */
static void test_reordered_strided_source(void **state)
{
    (void)state;
    source s;
    source_open(&s, "strided", 6, 9);
    /* the view V is 9 x 6 with V(i, j) = stored (j, i): strides {1, 9} */
    s.sh.t.shape[0] = 9;
    s.sh.t.shape[1] = 6;
    s.sh.t.stride[0] = 1;
    s.sh.t.stride[1] = 9;
    mf_piece tp = { .src = &s.sh, .src_row = 1, .src_col = 2, .rows = 4, .cols = 7, .transposed = 1 };
    mf_hf_tensor t = tensor2(4, 7, &tp, 1);
    float ref[7 * 9];
    for (int i = 0; i < 4; i++)       /* HF (i, j) = V(1 + j, 2 + i) = stored (2 + i, 1 + j) */
        for (int j = 0; j < 7; j++)
            ref[i * 7 + j] = at(&s, 2 + i, 1 + j);
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    mf_piece il[2] = {
        { .src = &s.sh, .src_row = 0, .src_col = 0, .dst_col = 0, .rows = 9, .cols = 3, .dst_step = 2 },
        { .src = &s.sh, .src_row = 0, .src_col = 3, .dst_col = 1, .rows = 9, .cols = 3, .dst_step = 2 },
    };
    t = tensor2(9, 6, il, 2);
    for (int i = 0; i < 9; i++)       /* HF (i, 2j) = V(i, j), HF (i, 2j+1) = V(i, 3 + j) */
        for (int j = 0; j < 3; j++) {
            ref[i * 6 + 2 * j] = at(&s, j, i);
            ref[i * 6 + 2 * j + 1] = at(&s, 3 + j, i);
        }
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    source_close(&s);
}

/* A transposed piece larger than the engine's 4 MiB scratch: read in column windows. */
static void test_transposed_large(void **state)
{
    (void)state;
    const int R = 1300, C = 1100;   /* 5.7 MB of float32 */
    source s;
    source_open(&s, "transposed_large", R, C);
    mf_piece p = { .src = &s.sh, .rows = (uint32_t)C, .cols = (uint32_t)R, .transposed = 1 };
    mf_hf_tensor t = tensor2(C, R, &p, 1);
    float *ref = malloc((size_t)R * C * sizeof(float)), *buf = malloc((size_t)R * C * sizeof(float));
    assert_non_null(ref);
    assert_non_null(buf);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < R; j++)
            ref[(size_t)i * R + j] = at(&s, j, i);
    assert_int_equal(mf_gather(&t, &s.io, 0, (size_t)t.nbytes, (uint8_t *)buf), 0);
    assert_memory_equal(buf, ref, t.nbytes);
    uint64_t off = (uint64_t)517 * R * 4 + 6;   /* a middle range with partial elements */
    assert_int_equal(mf_gather(&t, &s.io, off, 3 * (size_t)R * 4 + 5, (uint8_t *)buf), 0);
    assert_memory_equal(buf, (uint8_t *)ref + off, 3 * (size_t)R * 4 + 5);
    free(ref);
    free(buf);
    source_close(&s);
}

/* Shown as bf16: the engine gathers float32 elements through the reordered path, then
 * converts (round to nearest even), here for values exact in bf16. */
static void test_transposed_converted(void **state)
{
    (void)state;
    source s;
    source_open(&s, "converted", 4, 3);
    for (int k = 0; k < 12; k++)
        s.vals[k] = (float)(k * 2);   /* exact in bf16 */
    uint8_t file[SRC_OFFSET + 48] = { 0 };
    memcpy(file + SRC_OFFSET, s.vals, 48);
    close(s.fd);
    const char *path = us_tmp("converted");
    assert_int_equal(us_write_file(path, file, sizeof(file)), 0);
    s.fd = open(path, O_RDONLY | O_CLOEXEC);
    mf_piece p = { .src = &s.sh, .rows = 3, .cols = 4, .transposed = 1 };
    mf_hf_tensor t = tensor2(3, 4, &p, 1);
    t.dtype = MF_DT_BF16;
    t.nbytes = 3 * 4 * 2;
    uint16_t ref[12];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            float v = at(&s, j, i);
            uint32_t bits;
            memcpy(&bits, &v, 4);
            ref[i * 4 + j] = (uint16_t)(bits >> 16);
        }
    check_all_ranges(&t, &s.io, (const uint8_t *)ref);
    source_close(&s);
}

/* Row-split pieces (a TP dim-1 split, as o_proj / down_proj): each HF row is [A row | B row],
 * where B's rows are cols 4..8 of a wider source (a gap between rows). 3000 rows: a whole-tensor
 * read needs more than one preadv per piece (at most 1024 buffers each). */
static void test_row_split_many_rows(void **state)
{
    (void)state;
    const int64_t R = 3000;
    source a, b;
    source_open(&a, "rowsplit_a", R, 3);
    source_open(&b, "rowsplit_b", R, 9);
    int fds[2] = { a.fd, b.fd };
    mf_io io = { .fds = fds };
    b.sh.file = 1;
    mf_piece p[2] = {
        { .src = &a.sh, .dst_col = 0, .rows = (uint32_t)R, .cols = 3 },
        { .src = &b.sh, .src_col = 4, .dst_col = 3, .rows = (uint32_t)R, .cols = 5 },
    };
    mf_hf_tensor t = tensor2(R, 8, p, 2);
    float *ref = malloc((size_t)R * 8 * sizeof(float));
    assert_non_null(ref);
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < 8; c++)
            ref[r * 8 + c] = c < 3 ? at(&a, r, c) : at(&b, r, 4 + c - 3);
    check_all_ranges(&t, &io, (const uint8_t *)ref);
    free(ref);
    source_close(&a);
    source_close(&b);
}

/* A row-split piece whose source rows lie further apart than the gather scratch (4 MiB): each
 * row is read on its own, the gap never read. */
static void test_row_split_wide_gaps(void **state)
{
    (void)state;
    const int64_t W = (int64_t)(1 << 20) + 4;   /* floats per source row: 4 MiB + 16 bytes */
    source a, b;
    source_open(&a, "widegap_a", 3, W);
    source_open(&b, "widegap_b", 3, 2);
    int fds[2] = { a.fd, b.fd };
    mf_io io = { .fds = fds };
    b.sh.file = 1;
    mf_piece p[2] = {
        { .src = &a.sh, .src_col = 1, .dst_col = 0, .rows = 3, .cols = 2 },
        { .src = &b.sh, .dst_col = 2, .rows = 3, .cols = 2 },
    };
    mf_hf_tensor t = tensor2(3, 4, p, 2);
    float ref[3 * 4];
    for (int64_t r = 0; r < 3; r++)
        for (int64_t c = 0; c < 4; c++)
            ref[r * 4 + c] = c < 2 ? at(&a, r, 1 + c) : at(&b, r, c - 2);
    check_all_ranges(&t, &io, (const uint8_t *)ref);
    source_close(&a);
    source_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transposed_piece),
        cmocka_unit_test(test_interleaved_pieces),
        cmocka_unit_test(test_transposed_interleaved),
        cmocka_unit_test(test_stacked_3d),
        cmocka_unit_test(test_reordered_strided_source),
        cmocka_unit_test(test_transposed_large),
        cmocka_unit_test(test_transposed_converted),
        cmocka_unit_test(test_row_split_many_rows),
        cmocka_unit_test(test_row_split_wide_gaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
