/* Unit tests for the DCP reader (core/dcp*.c) on hand-made .metadata pickles and chunk archives:
 * good and irregular layouts, overlapping / gapped / out-of-shape chunks, many chunks, memory
 * amplification through the pickle memo, and broken embedded archives. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "dcp_test_support.h"
#include "unit_support.h"

/* --------------------------------------------- hand-made .metadata pickles */

static void glob(us_pickle *p, const char *mod, const char *name)
{
    us_pk_ops(p, "c"), us_pk_ops(p, mod), us_pk_ops(p, "\n"), us_pk_ops(p, name), us_pk_ops(p, "\n");
}
static void size_tuple(us_pickle *p, int nd, const int64_t *v) /* torch.Size((...)) */
{
    glob(p, "torch", "Size");
    us_pk_ops(p, "(");
    for (int i = 0; i < nd; i++)
        us_pk_long(p, v[i]);
    us_pk_ops(p, "t\x85R");
}
static void obj_begin(us_pickle *p, const char *mod, const char *cls)
{
    glob(p, mod, cls);
    us_pk_ops(p, ")\x81}(");
}
static void obj_end(us_pickle *p) { us_pk_ops(p, "ub"); }

#define META_MOD "torch.distributed.checkpoint.metadata"

typedef struct {
    int64_t off[MF_MAX_DIMS], size[MF_MAX_DIMS];
    const char *file;
    int64_t foff, flen;
    int no_storage;
    const char *transform; /* a transform_descriptors entry */
} schunk;

typedef struct {
    const char *fqn;
    const char *dtype; /* NULL: bytes item */
    int nd;
    int64_t size[MF_MAX_DIMS];
    schunk *chunks;
    size_t n;
    const char *file; /* bytes item */
    int64_t foff, flen;
} sitem;

static void storage_entry(us_pickle *p, const char *fqn, int nd, const int64_t *off, const char *file, int64_t foff,
                          int64_t flen, const char *transform)
{
    obj_begin(p, META_MOD, "MetadataIndex");
    us_pk_str(p, "fqn"), us_pk_str(p, fqn);
    if (nd >= 0)
        us_pk_str(p, "offset"), size_tuple(p, nd, off);
    us_pk_str(p, "index"), us_pk_ops(p, "N");
    obj_end(p);
    obj_begin(p, "torch.distributed.checkpoint.filesystem", "_StorageInfo");
    us_pk_str(p, "relative_path"), us_pk_str(p, file);
    us_pk_str(p, "offset"), us_pk_long(p, foff);
    us_pk_str(p, "length"), us_pk_long(p, flen);
    if (transform)
        us_pk_str(p, "transform_descriptors"), us_pk_ops(p, "]("), us_pk_str(p, transform), us_pk_ops(p, "e");
    obj_end(p);
}

static void metadata_pickle(us_pickle *p, const sitem *items, size_t n)
{
    us_pk_ops(p, "\x80\x04");
    obj_begin(p, META_MOD, "Metadata");
    us_pk_str(p, "state_dict_metadata");
    us_pk_ops(p, "}(");
    for (size_t i = 0; i < n; i++) {
        const sitem *it = &items[i];
        us_pk_str(p, it->fqn);
        if (!it->dtype) {
            glob(p, META_MOD, "BytesStorageMetadata");
            us_pk_ops(p, ")\x81");
            continue;
        }
        obj_begin(p, META_MOD, "TensorStorageMetadata");
        us_pk_str(p, "properties");
        glob(p, META_MOD, "TensorProperties");
        us_pk_ops(p, ")\x81(");
        glob(p, "torch", it->dtype);
        glob(p, "torch.serialization", "_get_layout");
        us_pk_str(p, "torch.strided");
        us_pk_ops(p, "\x85R\x89N\x89tb");
        us_pk_str(p, "size"), size_tuple(p, it->nd, it->size);
        us_pk_str(p, "chunks");
        us_pk_ops(p, "](");
        for (size_t j = 0; j < it->n; j++) {
            obj_begin(p, META_MOD, "ChunkStorageMetadata");
            us_pk_str(p, "offsets"), size_tuple(p, it->nd, it->chunks[j].off);
            us_pk_str(p, "sizes"), size_tuple(p, it->nd, it->chunks[j].size);
            obj_end(p);
        }
        us_pk_ops(p, "e");
        obj_end(p);
    }
    us_pk_ops(p, "u");
    us_pk_str(p, "planner_data"), us_pk_ops(p, "N");
    us_pk_str(p, "storage_data");
    us_pk_ops(p, "}");
    for (size_t i = 0; i < n; i++) {
        const sitem *it = &items[i];
        us_pk_ops(p, "(");
        if (!it->dtype) {
            storage_entry(p, it->fqn, -1, NULL, it->file, it->foff, it->flen, NULL);
        } else {
            for (size_t j = 0; j < it->n; j++) {
                const schunk *c = &it->chunks[j];
                if (!c->no_storage)
                    storage_entry(p, it->fqn, it->nd, c->off, c->file ? c->file : "__0_0.distcp", c->foff, c->flen,
                                  c->transform);
            }
        }
        us_pk_ops(p, "u"); /* one SETITEMS batch per item */
    }
    us_pk_str(p, "version"), us_pk_str(p, "1.0.0");
    obj_end(p);
    us_pk_ops(p, ".");
}

/* A fresh folder with .metadata for items and __0_0.distcp of fsize bytes. */
static const char *write_ckpt(const char *name, const sitem *items, size_t n, size_t fsize)
{
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s", us_tmp(name));
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    us_pickle p = {0};
    metadata_pickle(&p, items, n);
    assert_int_equal(us_write_file(path_in(dir, ".metadata"), p.b, p.n), 0);
    free(p.b);
    uint8_t *zeros = calloc(1, fsize + 1);
    assert_int_equal(us_write_file(path_in(dir, "__0_0.distcp"), zeros, fsize), 0);
    free(zeros);
    return dir;
}

/* A 2-D [rows, cols] float32 tensor cut into a grid of chunks; each chunk window 16 bytes. */
static sitem grid_item(const char *fqn, int64_t rows, int64_t cols, int64_t rstep, int64_t cstep, schunk *buf)
{
    sitem it = {.fqn = fqn, .dtype = "float32", .nd = 2, .size = {rows, cols}, .chunks = buf};
    for (int64_t r = 0; r < rows; r += rstep)
        for (int64_t c = 0; c < cols; c += cstep) {
            schunk *ch = &buf[it.n];
            *ch = (schunk){.off = {r, c}, .size = {rstep, cstep}, .foff = (int64_t)it.n * 16, .flen = 16};
            it.n++;
        }
    return it;
}

static void test_handmade_good(void **state)
{
    (void)state;
    schunk g[16], sc = {.foff = 256, .flen = 8}, em[2] = {{.off = {0, 0}, .size = {0, 4}, .foff = 0, .flen = 0}};
    sitem items[5];
    items[0] = grid_item("w", 4, 8, 2, 4, g);
    items[1] = (sitem){.fqn = "scalar", .dtype = "int64", .nd = 0, .chunks = &sc, .n = 1};
    items[2] = (sitem){.fqn = "empty", .dtype = "bfloat16", .nd = 2, .size = {0, 4}, .chunks = em, .n = 1};
    items[3] = (sitem){.fqn = "common_state/shard_0_1", .file = "__0_0.distcp", .foff = 300, .flen = 10};
    items[4] = (sitem){.fqn = "nochunks", .dtype = "float16", .nd = 1, .size = {0}, .n = 0};
    const char *dir = write_ckpt("good", items, 5, 512);
    mf_dcp d;
    open_ok(&d, dir);
    assert_int_equal(d.n_tensors, 4);
    assert_int_equal(d.n_bytes, 1);
    assert_int_equal(d.n_files, 1);
    assert_int_equal(d.file_sizes[0], 512);
    const mf_dcp_tensor *t = mf_dcp_find(&d, "w");
    assert_int_equal(t->n_chunks, 4);
    assert_int_equal(t->chunks[3].offsets[0], 2);
    assert_int_equal(t->chunks[3].offsets[1], 4);
    assert_int_equal(t->chunks[3].offset, 48);
    assert_int_equal(mf_dcp_find(&d, "scalar")->ndim, 0);
    assert_int_equal(mf_dcp_find(&d, "scalar")->chunks[0].offset, 256);
    assert_int_equal(mf_dcp_find(&d, "empty")->dtype, MF_DT_BF16);
    assert_int_equal(mf_dcp_find(&d, "nochunks")->n_chunks, 0);
    /* the common_state item exists but its bytes are zeros: a clear error */
    mf_pickle *pk;
    const mf_pv *args;
    expect_msg(mf_dcp_load_args(&d, &pk, &args), MF_ERR_FORMAT, "common_state/shard_0_1", "__0_0.distcp", NULL);
    assert_null(pk);
    mf_dcp_close(&d);
}

static void expect_bad(const char *name, const sitem *items, size_t n, size_t fsize, int code, const char *n1,
                       const char *n2)
{
    const char *dir = write_ckpt(name, items, n, fsize);
    mf_dcp d;
    int rc = mf_dcp_open(&d, dir);
    if (rc != code)
        fail_msg("%s: expected %s, got %d: %s", name, mf_status_name(code), rc, mf_error());
    assert_one_line();
    const char *m = mf_error();
    if (!strstr(m, dir) || (n1 && !strstr(m, n1)) || (n2 && !strstr(m, n2)))
        fail_msg("%s: message lacks the file or '%s'/'%s': %s", name, n1 ? n1 : "", n2 ? n2 : "", m);
    assert_null(d.tensors);
}

static void test_handmade_bad(void **state)
{
    (void)state;
    schunk g[64];
    sitem it;

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[3].off[0] = 1; /* (2,4) -> (1,4): overlaps (0,4) and leaves (3, 4..7) uncovered */
    expect_bad("overlap", &it, 1, 512, MF_ERR_INCONSISTENT, "tensor 'layer.w'", "overlap");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    it.n = 3; /* last chunk missing */
    expect_bad("gap", &it, 1, 512, MF_ERR_INCONSISTENT, "'layer.w'", "(2, 4)");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[1].size[1] = 5; /* (0,4)+(2,5) reaches column 9 of 8 */
    expect_bad("outside", &it, 1, 512, MF_ERR_INCONSISTENT, "'layer.w'", "outside the shape (4, 8)");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[2].no_storage = 1;
    expect_bad("nostorage", &it, 1, 512, MF_ERR_MISSING, "'layer.w' chunk (2, 0)", "storage_data");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[1].flen = 1000; /* window [16, +1000) of a 512-byte file */
    expect_bad("window", &it, 1, 512, MF_ERR_FORMAT, "__0_0.distcp", "'layer.w' chunk (0, 4)");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[0].file = "__9_0.distcp";
    expect_bad("nofile", &it, 1, 512, MF_ERR_MISSING, "__9_0.distcp", "'layer.w' chunk (0, 0)");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[0].file = "../../etc/passwd";
    expect_bad("unsafe", &it, 1, 512, MF_ERR_FORMAT, "unsafe", "'layer.w'");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    g[0].transform = "zstd";
    expect_bad("transform", &it, 1, 512, MF_ERR_UNSUPPORTED, "'layer.w'", "transforms");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    it.dtype = "float8_e4m3fn";
    expect_bad("dtype", &it, 1, 512, MF_ERR_UNSUPPORTED, "'layer.w'", "float8_e4m3fn");

    it = grid_item("layer.w", 4, 8, 2, 4, g);
    it.nd = 3; /* 3-D with every chunk empty on the last axis: nothing holds any element */
    it.size[2] = 1;
    {
        const char *dir = write_ckpt("dims", &it, 1, 512);
        mf_dcp d;
        int rc = mf_dcp_open(&d, dir);
        assert_true(rc < 0);
        assert_one_line();
        assert_non_null(strstr(mf_error(), "layer.w"));
    }

    it = grid_item("dup", 2, 2, 1, 2, g);
    sitem two[2] = {it, it};
    expect_bad("duplicate", two, 2, 512, MF_ERR_FORMAT, "'dup'", "twice");

    sitem b = {.fqn = "rng_state/shard_0.0_1.1", .file = "__0_0.distcp", .foff = 500, .flen = 100};
    expect_bad("byteswindow", &b, 1, 512, MF_ERR_FORMAT, "rng_state/shard_0.0_1.1", "exceeds");

    /* a scalar given two chunks: overlap; a scalar given none: not covered */
    schunk two_sc[2] = {{.foff = 0, .flen = 8}, {.foff = 8, .flen = 8}};
    sitem s = {.fqn = "s", .dtype = "float32", .nd = 0, .chunks = two_sc, .n = 2};
    expect_bad("scalar2", &s, 1, 512, MF_ERR_INCONSISTENT, "'s'", "overlap");
    s.n = 0;
    expect_bad("scalar0", &s, 1, 512, MF_ERR_INCONSISTENT, "'s'", "no chunk");
}

/* Grid too large for the cell map: the sorted sweep checks it instead. Rows split at a
 * different column each: N x N with 2N chunks spans an N*N grid. */
static void test_irregular_layout(void **state)
{
    (void)state;
    const int64_t N = 1100;
    schunk *c = calloc((size_t)(2 * N), sizeof *c);
    sitem it = {.fqn = "stairs", .dtype = "float32", .nd = 2, .size = {N, N}, .chunks = c};
    for (int64_t r = 0; r < N; r++) {
        if (r > 0)
            c[it.n++] = (schunk){.off = {r, 0}, .size = {1, r}, .flen = 4};
        c[it.n++] = (schunk){.off = {r, r}, .size = {1, N - r}, .flen = 4};
    }
    const char *dir = write_ckpt("stairs", &it, 1, 64);
    mf_dcp d;
    open_ok(&d, dir);
    assert_int_equal(mf_dcp_find(&d, "stairs")->n_chunks, 2 * N - 1);
    mf_dcp_close(&d);
    it.n--; /* drop the last row's piece */
    expect_bad("stairs_gap", &it, 1, 64, MF_ERR_INCONSISTENT, "'stairs'", "cover");
    it.n++;
    c[it.n - 1].size[1] = 1;
    c[it.n - 1].off[1] = 0; /* row N-1: [0, N-1) and [0, 1): overlap */
    expect_bad("stairs_overlap", &it, 1, 64, MF_ERR_INCONSISTENT, "'stairs'", "overlap");
    free(c);
}

/* 65536 chunks of one tensor plus 2000 small tensors: hashed lookups keep this fast. */
/* One tensor entry repeated two million times through the memo (4 pickle bytes per copy) would
 * make the chunk table 2M x 4 chunks (over 1 GB): refused from the fixed .metadata memory cap
 * before it is allocated, with the limit named. */
static void test_memo_amplified_tables(void **state)
{
    (void)state;
    schunk g[4];
    sitem w = grid_item("w", 4, 8, 2, 4, g);
    us_pickle p = {0};
    us_pk_ops(&p, "\x80\x04");
    obj_begin(&p, META_MOD, "Metadata");
    us_pk_str(&p, "state_dict_metadata");
    us_pk_ops(&p, "}(");
    us_pk_str(&p, "w"), us_pk_ops(&p, "q\x01");
    obj_begin(&p, META_MOD, "TensorStorageMetadata");
    us_pk_str(&p, "properties");
    glob(&p, META_MOD, "TensorProperties");
    us_pk_ops(&p, ")\x81(");
    glob(&p, "torch", "float32");
    glob(&p, "torch.serialization", "_get_layout");
    us_pk_str(&p, "torch.strided");
    us_pk_ops(&p, "\x85R\x89N\x89tb");
    us_pk_str(&p, "size"), size_tuple(&p, 2, w.size);
    us_pk_str(&p, "chunks");
    us_pk_ops(&p, "](");
    for (size_t j = 0; j < w.n; j++) {
        obj_begin(&p, META_MOD, "ChunkStorageMetadata");
        us_pk_str(&p, "offsets"), size_tuple(&p, 2, g[j].off);
        us_pk_str(&p, "sizes"), size_tuple(&p, 2, g[j].size);
        obj_end(&p);
    }
    us_pk_ops(&p, "e");
    obj_end(&p);
    us_pk_ops(&p, "q\x02u");
    for (int b = 0; b < 2000; b++) { /* the same key and value again, 1000 per SETITEMS */
        us_pk_ops(&p, "(");
        for (int k = 0; k < 1000; k++)
            us_pk_ops(&p, "h\x01h\x02");
        us_pk_ops(&p, "u");
    }
    us_pk_str(&p, "planner_data"), us_pk_ops(&p, "N");
    us_pk_str(&p, "storage_data");
    us_pk_ops(&p, "}(");
    for (size_t j = 0; j < w.n; j++)
        storage_entry(&p, "w", 2, g[j].off, "__0_0.distcp", g[j].foff, g[j].flen, NULL);
    us_pk_ops(&p, "u");
    us_pk_str(&p, "version"), us_pk_str(&p, "1.0.0");
    obj_end(&p);
    us_pk_ops(&p, ".");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", write_ckpt("amplified", NULL, 0, 64));
    assert_int_equal(us_write_file(path_in(dir, ".metadata"), p.b, p.n), 0);
    free(p.b);
    mf_dcp d;
    expect_msg(mf_dcp_open(&d, dir), MF_ERR_LIMIT, ".metadata", "refused", "512 MiB", "table of tensors and chunks",
               NULL);
}

static void test_many_chunks(void **state)
{
    (void)state;
    const int64_t R = 256, C = 256;
    schunk *g = calloc((size_t)(R * C), sizeof *g);
    size_t nsmall = 2000;
    sitem *items = calloc(nsmall + 1, sizeof *items);
    items[0] = grid_item("big", R, C, 1, 1, g);
    schunk *sm = calloc(nsmall * 2, sizeof *sm);
    char (*names)[32] = calloc(nsmall, 32);
    for (size_t i = 0; i < nsmall; i++) {
        snprintf(names[i], 32, "decoder.layers.%zu.w", i);
        sm[2 * i] = (schunk){.off = {0}, .size = {2}, .foff = 16, .flen = 8};
        sm[2 * i + 1] = (schunk){.off = {2}, .size = {3}, .foff = 24, .flen = 8};
        items[1 + i] = (sitem){.fqn = names[i], .dtype = "bfloat16", .nd = 1, .size = {5}, .chunks = &sm[2 * i], .n = 2};
    }
    const char *dir = write_ckpt("many", items, nsmall + 1, (size_t)(R * C * 16));
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    mf_dcp d;
    open_ok(&d, dir);
    for (size_t i = 0; i < nsmall; i++)
        assert_int_equal(mf_dcp_find(&d, names[i]), &d.tensors[1 + i]);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    print_message("open + %zu lookups, %lld + %zu chunks: %.3f s\n", nsmall, (long long)(R * C), 2 * nsmall, secs);
    const mf_dcp_tensor *t = mf_dcp_find(&d, "big");
    assert_int_equal(t->n_chunks, (size_t)(R * C));
    assert_int_equal(find_chunk(t, (int64_t[]){200, 17})->offset, (uint64_t)((200 * C + 17) * 16));
    mf_dcp_close(&d);
    free(names);
    free(sm);
    free(items);
    free(g);
}

/* A hand-made checkpoint with real chunk archives: chunk_tensor checks and offsets. */
static const char *write_archive(const char *name, int nd, const int64_t *shape, const char *storage, size_t esize,
                                 uint8_t fill)
{
    us_pickle p = {0};
    int64_t numel = 1;
    for (int i = 0; i < nd; i++)
        numel *= shape[i];
    us_pk_ops(&p, "\x80\x02");
    glob(&p, "torch._utils", "_rebuild_tensor_v2");
    us_pk_ops(&p, "((");
    us_pk_str(&p, "storage");
    glob(&p, "torch", storage);
    us_pk_str(&p, "0");
    us_pk_str(&p, "cpu");
    us_pk_long(&p, numel);
    us_pk_ops(&p, "tQ");
    us_pk_long(&p, 0);
    us_pk_ops(&p, "(");
    for (int i = 0; i < nd; i++)
        us_pk_long(&p, shape[i]);
    us_pk_ops(&p, "t(");
    int64_t st = 1;
    int64_t strides[MF_MAX_DIMS];
    for (int i = nd - 1; i >= 0; i--)
        strides[i] = st, st *= shape[i];
    for (int i = 0; i < nd; i++)
        us_pk_long(&p, strides[i]);
    us_pk_ops(&p, "t\x89");
    glob(&p, "collections", "OrderedDict");
    us_pk_ops(&p, ")RtR.");
    size_t bytes = (size_t)numel * esize;
    uint8_t *data = malloc(bytes + 1);
    for (size_t i = 0; i < bytes; i++)
        data[i] = (uint8_t)(fill + i);
    us_zip_item z[3] = {{"archive/data.pkl", p.b, p.n, 0, 0}, {"archive/data/0", data, bytes, 0, 0}, {"archive/version", "3\n", 2, 0, 0}};
    const char *path = us_tmp(name);
    assert_int_equal(us_write_zip(path, z, 3, 1), 0);
    free(p.b);
    free(data);
    return path;
}

static void test_handmade_archives(void **state)
{
    (void)state;
    /* __0_0.distcp = 100 junk bytes + chunk A (2x3 f32) + chunk B (2x3 f32) + C (wrong shape 3x2) */
    size_t la, lb, lc;
    uint8_t *a = us_read_file(write_archive("a.zip", 2, (int64_t[]){2, 3}, "FloatStorage", 4, 1), &la);
    uint8_t *b = us_read_file(write_archive("b.zip", 2, (int64_t[]){2, 3}, "FloatStorage", 4, 101), &lb);
    uint8_t *c = us_read_file(write_archive("c.zip", 2, (int64_t[]){3, 2}, "FloatStorage", 4, 7), &lc);
    schunk ch[3] = {
        {.off = {0, 0}, .size = {2, 3}, .foff = 100, .flen = (int64_t)la},
        {.off = {2, 0}, .size = {2, 3}, .foff = 100 + (int64_t)la, .flen = (int64_t)lb},
    };
    schunk wrong = {.off = {0}, .size = {6}, .foff = 100 + (int64_t)(la + lb), .flen = (int64_t)lc};
    sitem items[3] = {
        {.fqn = "t", .dtype = "float32", .nd = 2, .size = {4, 3}, .chunks = ch, .n = 2},
        {.fqn = "flat", .dtype = "float32", .nd = 1, .size = {6}, .chunks = &wrong, .n = 1},
        {.fqn = "half", .dtype = "float16", .nd = 2, .size = {2, 3}, .chunks = ch, .n = 1},
    };
    size_t total = 100 + la + lb + lc;
    const char *dir = write_ckpt("archives", items, 3, total);
    uint8_t *file = calloc(1, total);
    memset(file, 'J', 100);
    memcpy(file + 100, a, la);
    memcpy(file + 100 + la, b, lb);
    memcpy(file + 100 + la + lb, c, lc);
    assert_int_equal(us_write_file(path_in(dir, "__0_0.distcp"), file, total), 0);
    mf_dcp d;
    open_ok(&d, dir);
    int fd = open(path_in(dir, "__0_0.distcp"), O_RDONLY);
    const mf_dcp_tensor *t = mf_dcp_find(&d, "t");
    for (int k = 0; k < 2; k++) {
        mf_tensor mt;
        if (mf_dcp_chunk_tensor(&d, fd, &t->chunks[k], &mt) != MF_OK)
            fail_msg("%s", mf_error());
        assert_int_equal(mt.dtype, MF_DT_F32);
        assert_int_equal(mt.ndim, 2);
        assert_int_equal(mt.shape[0], 2);
        assert_int_equal(mt.shape[1], 3);
        assert_int_equal(mt.stride[0], 3);
        assert_true(mt.offset >= t->chunks[k].offset && mt.offset + 24 <= t->chunks[k].offset + t->chunks[k].length);
        uint8_t got[24];
        assert_int_equal(pread(fd, got, 24, (off_t)mt.offset), 24);
        for (int i = 0; i < 24; i++)
            assert_int_equal(got[i], (uint8_t)((k ? 101 : 1) + i));
    }
    mf_tensor mt;
    expect_msg(mf_dcp_chunk_tensor(&d, fd, &mf_dcp_find(&d, "flat")->chunks[0], &mt), MF_ERR_INCONSISTENT, "'flat'",
               "__0_0.distcp", "(3, 2)", NULL);
    expect_msg(mf_dcp_chunk_tensor(&d, fd, &mf_dcp_find(&d, "half")->chunks[0], &mt), MF_ERR_INCONSISTENT, "'half'",
               "float16", NULL);
    close(fd);
    mf_dcp_close(&d);
    free(file);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handmade_good),
        cmocka_unit_test(test_handmade_bad),
        cmocka_unit_test(test_irregular_layout),
        cmocka_unit_test(test_many_chunks),
        cmocka_unit_test(test_memo_amplified_tables),
        cmocka_unit_test(test_handmade_archives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
