/* Unit tests for the PyTorch Distributed Checkpoint reader (core/dcp.c):
 *  - real checkpoints: torch 2.6 DCP sample (layout.txt) and three Megatron torch_dist
 *    checkpoints (KEYS.txt): every tensor, chunk and bytes item compared with the listings;
 *  - chunk bytes: every chunk resolved with mf_dcp_chunk_tensor and compared with what torch
 *    itself loads from the same window, and with the legacy twin checkpoint's rank files;
 *  - args from common_state (core >= 0.19) and common.pt (core 0.14);
 *  - broken checkpoints: missing / truncated .distcp, truncated / corrupted .metadata, and
 *    hand-made .metadata pickles with overlapping, gapped, out-of-shape chunks etc. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "unit_support.h"

#define SAMPLE "torch/dcp_sample"
#define GPT_DIST "megatron/head_gpt_tp2pp2_torch_dist"
#define MOE_DIST "megatron/head_moe_tp2ep2_torch_dist"
#define V014_DIST "megatron/v014_gpt_tp2pp2_torch_dist"
#define GPT_LEGACY "megatron/head_gpt_tp2pp2_torch"
#define ITER "/iter_0000010"

/* ---------------------------------------------------------------- helpers */

static void open_ok(mf_dcp *d, const char *dir)
{
    if (mf_dcp_open(d, dir) != MF_OK)
        fail_msg("open %s: %s", dir, mf_error());
}

static void assert_one_line(void)
{
    const char *m = mf_error();
    assert_true(m[0] != '\0');
    assert_null(strchr(m, '\n'));
}

/* Expect code and a message containing every needle (NULL-terminated list). */
static void expect_msg(int rc, int code, ...)
{
    if (rc != code)
        fail_msg("expected %s, got %s: %s", mf_status_name(code), mf_status_name(rc), mf_error());
    assert_one_line();
    va_list ap;
    va_start(ap, code);
    for (const char *n; (n = va_arg(ap, const char *));)
        if (!strstr(mf_error(), n))
            fail_msg("message lacks '%s': %s", n, mf_error());
    va_end(ap);
}

/* "(0, 64, 0)" / "(5,)" / "()" -> dims; "None" -> -1. Sets *end after the text. */
static int parse_tuple(const char *s, int64_t *v, const char **end)
{
    if (strncmp(s, "None", 4) == 0) {
        *end = s + 4;
        return -1;
    }
    assert_true(*s == '(');
    s++;
    int n = 0;
    while (*s != ')') {
        char *e;
        v[n++] = strtoll(s, &e, 10);
        assert_true(e != s);
        s = e;
        if (*s == ',')
            s++;
        while (*s == ' ')
            s++;
    }
    *end = s + 1;
    return n;
}

static const mf_dcp_chunk *find_chunk(const mf_dcp_tensor *t, const int64_t *off)
{
    for (size_t i = 0; i < t->n_chunks; i++)
        if (memcmp(t->chunks[i].offsets, off, (size_t)t->ndim * sizeof *off) == 0)
            return &t->chunks[i];
    return NULL;
}

static int file_index(const mf_dcp *d, const char *name)
{
    for (size_t i = 0; i < d->n_files; i++)
        if (strcmp(d->files[i], name) == 0)
            return (int)i;
    return -1;
}

static const mf_dcp_bytes *find_bytes(const mf_dcp *d, const char *fqn)
{
    for (size_t i = 0; i < d->n_bytes; i++)
        if (strcmp(d->bytes[i].fqn, fqn) == 0)
            return &d->bytes[i];
    return NULL;
}

static void check_storage(const mf_dcp *d, const char *fqn, int nd, const int64_t *off, const char *file, uint64_t o,
                          uint64_t len)
{
    if (strncmp(fqn, "optimizer.", 10) == 0 || strstr(fqn, "._extra_state")) {
        /* never shown, so neither indexed nor validated (dcp.c) */
        if ((nd < 0 ? (const void *)find_bytes(d, fqn) : (const void *)mf_dcp_find(d, fqn)) != NULL)
            fail_msg("%s is indexed although the view never uses it", fqn);
        return;
    }
    int fi = file_index(d, file);
    if (fi < 0)
        fail_msg("file %s not listed", file);
    if (nd < 0) {
        const mf_dcp_bytes *b = find_bytes(d, fqn);
        if (!b)
            fail_msg("bytes item %s missing", fqn);
        assert_int_equal(b->file, fi);
        assert_int_equal(b->offset, o);
        assert_int_equal(b->length, len);
        return;
    }
    const mf_dcp_tensor *t = mf_dcp_find(d, fqn);
    if (!t)
        fail_msg("tensor %s missing", fqn);
    assert_int_equal(t->ndim, nd);
    const mf_dcp_chunk *c = find_chunk(t, off);
    if (!c)
        fail_msg("%s: chunk not found", fqn);
    assert_int_equal(c->file, fi);
    assert_int_equal(c->offset, o);
    assert_int_equal(c->length, len);
}

static mf_dtype dtype_of(const char *name)
{
    if (strncmp(name, "torch.", 6) == 0)
        name += 6;
    return mf_dtype_from_torch(name);
}

/* The listing's "(d0, d1, ...)" shape and dtype word at q must match t; *rest = after the shape. */
static void check_shape_dtype(const mf_dcp_tensor *t, const char *q, const char *dtype_fmt, const char **rest)
{
    int64_t v[MF_MAX_DIMS + 1];
    char dt[64];
    int nd = parse_tuple(q, v, rest);
    assert_int_equal(t->ndim, nd);
    for (int k = 0; k < nd; k++)
        assert_int_equal(t->size[k], v[k]);
    assert_int_equal(sscanf(*rest, dtype_fmt, dt), 1);
    assert_int_equal(t->dtype, dtype_of(dt));
}

static uint8_t *gather(int fd, const mf_tensor *t, size_t *len)
{
    uint8_t *b = us_gather_strided(fd, t, len);
    assert_non_null(b);
    return b;
}

static int64_t ns_int(const mf_pv *args, const char *key)
{
    const mf_pv *ns = args->kind == MF_PV_DICT ? args : mf_pv_obj_state(args);
    int64_t v = -1;
    assert_non_null(ns);
    assert_int_equal(mf_pv_get_int(mf_pv_dict_get(ns, key), &v), MF_OK);
    return v;
}

/* Copy every regular file of src into a fresh dst, except `skip`. */
static const char *copy_dir(const char *src, const char *name, const char *skip)
{
    static char dst[4096];
    snprintf(dst, sizeof dst, "%s", us_tmp(name));
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dst, dst);
    assert_int_equal(system(cmd), 0);
    DIR *dir = opendir(src);
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir));) {
        if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0')))
            continue;
        if (skip && strcmp(e->d_name, skip) == 0)
            continue;
        char a[4400], b[4400];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
        size_t len;
        uint8_t *data = us_read_file(a, &len);
        assert_non_null(data);
        assert_int_equal(us_write_file(b, data, len), 0);
        free(data);
    }
    closedir(dir);
    return dst;
}

static char *path_in(const char *dir, const char *name)
{
    static char buf[4][4400];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 4400, "%s/%s", dir, name);
    return b;
}

/* ------------------------------------------- every chunk's bytes vs torch */

static const char *py_chunks =
    "import sys, io, torch\n"
    "lst, out = sys.argv[1], sys.argv[2]\n"
    "with open(out, 'wb') as o:\n"
    "    for line in open(lst):\n"
    "        p, off, ln = line.rstrip('\\n').rsplit(' ', 2)\n"
    "        with open(p, 'rb') as f:\n"
    "            f.seek(int(off)); b = f.read(int(ln))\n"
    "        t = torch.load(io.BytesIO(b)).detach().contiguous()\n"
    "        if t.dtype == torch.bfloat16: t = t.view(torch.int16)\n"
    "        o.write(t.numpy().tobytes())\n";

/* Resolve every chunk: shape == chunk sizes, dtype, data inside the window; then compare the
 * bytes of all chunks with torch.load of the same windows. Returns the number of chunks. */
static size_t check_all_chunks(const mf_dcp *d, const char *tag)
{
    int *fds = calloc(d->n_files + 1, sizeof *fds);
    for (size_t i = 0; i < d->n_files; i++) {
        fds[i] = open(path_in(d->dir, d->files[i]), O_RDONLY);
        assert_true(fds[i] >= 0);
    }
    char lst[4096];
    snprintf(lst, sizeof lst, "%s", us_tmp(tag));
    strcat(lst, ".list");
    FILE *lf = fopen(lst, "w");
    assert_non_null(lf);
    uint8_t *all = NULL;
    size_t all_len = 0, n = 0;
    for (size_t i = 0; i < d->n_tensors; i++) {
        const mf_dcp_tensor *t = &d->tensors[i];
        for (size_t j = 0; j < t->n_chunks; j++) {
            const mf_dcp_chunk *c = &t->chunks[j];
            mf_tensor mt;
            if (mf_dcp_chunk_tensor(d, fds[c->file], c, &mt) != MF_OK)
                fail_msg("%s: %s", t->fqn, mf_error());
            assert_int_equal(mt.dtype, t->dtype);
            assert_int_equal(mt.ndim, t->ndim);
            for (int k = 0; k < t->ndim; k++)
                assert_int_equal(mt.shape[k], c->sizes[k]);
            assert_true(mt.storage_begin >= c->offset && mt.storage_begin + mt.storage_bytes <= c->offset + c->length);
            size_t len;
            uint8_t *b = gather(fds[c->file], &mt, &len);
            all = realloc(all, all_len + len + 1);
            memcpy(all + all_len, b, len);
            all_len += len;
            free(b);
            fprintf(lf, "%s/%s %llu %llu\n", d->dir, d->files[c->file], (unsigned long long)c->offset,
                    (unsigned long long)c->length);
            n++;
        }
    }
    fclose(lf);
    if (us_have_torch()) {
        char out[4096];
        snprintf(out, sizeof out, "%s", us_tmp(tag));
        strcat(out, ".bin");
        const char *args[] = {lst, out, NULL};
        assert_int_equal(us_run_python(py_chunks, args), 0);
        size_t want_len;
        uint8_t *want = us_read_file(out, &want_len);
        assert_non_null(want);
        assert_int_equal(want_len, all_len);
        assert_memory_equal(want, all, all_len);
        free(want);
    } else {
        print_message("torch not available: chunk bytes checked for shape/placement only (%s)\n", tag);
    }
    free(all);
    for (size_t i = 0; i < d->n_files; i++)
        close(fds[i]);
    free(fds);
    return n;
}

/* ------------------------------------------------ the torch 2.6 DCP sample */

static void test_detect(void **state)
{
    (void)state;
    assert_int_equal(mf_dcp_detect(us_data(SAMPLE)), 1);
    assert_int_equal(mf_dcp_detect(us_data(GPT_DIST ITER)), 1);
    assert_int_equal(mf_dcp_detect(us_data(V014_DIST ITER)), 1);
    assert_int_equal(mf_dcp_detect(us_data(GPT_LEGACY ITER)), 0);
    assert_int_equal(mf_dcp_detect(us_data("does-not-exist")), 0);
    assert_int_equal(mf_dcp_detect(NULL), 0);
    const char *dir = us_tmp("detect");
    mkdir(dir, 0755);
    const char *j1 = "{\"sharded_backend\" :\n \"torch_dist\", \"sharded_backend_version\": 1}";
    assert_int_equal(us_write_file(path_in(dir, "metadata.json"), j1, strlen(j1)), 0);
    assert_int_equal(mf_dcp_detect(dir), 1);
    const char *j2 = "{\"sharded_backend\": \"zarr\", \"x\": \"torch_dist\"}";
    assert_int_equal(us_write_file(path_in(dir, "metadata.json"), j2, strlen(j2)), 0);
    assert_int_equal(mf_dcp_detect(dir), 0);
    /* the key is read where Megatron writes it, at the top level, not anywhere in the text */
    const char *j3 = "{\"other\": {\"sharded_backend\": \"torch_dist\"}, \"sharded_backend\": \"zarr\"}";
    assert_int_equal(us_write_file(path_in(dir, "metadata.json"), j3, strlen(j3)), 0);
    assert_int_equal(mf_dcp_detect(dir), 0);
}

static void test_sample_layout(void **state)
{
    (void)state;
    mf_dcp d;
    open_ok(&d, us_data(SAMPLE));
    assert_int_equal(d.n_tensors, 5);
    assert_int_equal(d.n_bytes, 3);
    assert_int_equal(d.n_files, 4);
    /* .metadata order */
    assert_string_equal(d.tensors[0].fqn, "model.embed.weight");
    assert_string_equal(d.tensors[4].fqn, "model.counter");
    assert_string_equal(d.bytes[0].fqn, "step");

    size_t len;
    char *txt = (char *)us_read_file(us_data(SAMPLE "/layout.txt"), &len);
    assert_non_null(txt);
    size_t n_tensor_lines = 0, n_bytes_lines = 0, n_storage = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        char fqn[512], file[256];
        int64_t v[MF_MAX_DIMS], s[MF_MAX_DIMS];
        const char *p;
        unsigned long long o, l;
        if (strncmp(line, "  storage ", 10) == 0) {
            p = line + 10;
            const char *sp = strchr(p, ' ');
            memcpy(fqn, p, (size_t)(sp - p));
            fqn[sp - p] = '\0';
            int nd = parse_tuple(sp + 5, v, &p); /* " off=" */
            assert_int_equal(sscanf(p, " -> %255s @%llu+%llu", file, &o, &l), 3);
            check_storage(&d, fqn, nd, v, file, o, l);
            n_storage++;
        } else if ((p = strstr(line, ": TensorStorageMetadata size="))) {
            memcpy(fqn, line, (size_t)(p - line));
            fqn[p - line] = '\0';
            const mf_dcp_tensor *t = mf_dcp_find(&d, fqn);
            assert_non_null(t);
            check_shape_dtype(t, p + 29, " dtype=%63s", &p);
            p = strstr(p, "chunks=[") + 8;
            size_t nc = 0;
            while (*p == '(') {
                parse_tuple(p + 1, v, &p);
                parse_tuple(p + 2, s, &p);
                const mf_dcp_chunk *c = find_chunk(t, v);
                assert_non_null(c);
                for (int k = 0; k < t->ndim; k++)
                    assert_int_equal(c->sizes[k], s[k]);
                p += 1; /* ')' */
                if (*p == ',')
                    p += 2;
                nc++;
            }
            assert_int_equal(nc, t->n_chunks);
            n_tensor_lines++;
        } else if (strstr(line, ": BytesStorageMetadata")) {
            n_bytes_lines++;
        } else if (strncmp(line, "files: ", 7) == 0) {
            for (size_t i = 0; i < d.n_files; i++) {
                char want[300];
                snprintf(want, sizeof want, "%s=%llu", d.files[i], (unsigned long long)d.file_sizes[i]);
                assert_non_null(strstr(line, want));
            }
        }
    }
    free(txt);
    assert_int_equal(n_tensor_lines, 5);
    assert_int_equal(n_bytes_lines, 3);
    assert_int_equal(n_storage, 15);

    /* spot checks written out */
    const mf_dcp_tensor *t = mf_dcp_find(&d, "model.layer0.qkv.weight");
    assert_int_equal(t->dtype, MF_DT_BF16);
    assert_int_equal(t->size[0], 48);
    assert_int_equal(t->n_chunks, 2);
    const mf_dcp_chunk *c = find_chunk(t, (int64_t[]){24, 0});
    assert_string_equal(d.files[c->file], "__3_0.distcp");
    assert_int_equal(c->offset, 4796);
    assert_int_equal(c->length, 1948);
    assert_int_equal(mf_dcp_find(&d, "model.counter")->dtype, MF_DT_I64);
    assert_null(mf_dcp_find(&d, "step")); /* bytes items are not tensors */
    assert_null(mf_dcp_find(&d, "model.embed"));

    assert_int_equal(check_all_chunks(&d, "sample"), 12);
    /* the sample has no Megatron common state */
    mf_pickle *pk;
    const mf_pv *args;
    expect_msg(mf_dcp_load_args(&d, &pk, &args), MF_ERR_MISSING, "common.pt", NULL);
    assert_null(pk);
    mf_dcp_close(&d);
    mf_dcp_close(&d); /* idempotent */
}

/* ------------------------------------------------- Megatron torch_dist */

/* Compare everything in KEYS.txt with the parsed checkpoint. */
static void check_keys_txt(const mf_dcp *d, const char *keys_rel, size_t want_tensors, size_t want_bytes)
{
    size_t len;
    char *txt = (char *)us_read_file(us_data(keys_rel), &len);
    assert_non_null(txt);
    size_t nt = 0, nb = 0, nb_used = 0, items = 0, chunks = 0;
    char file[256] = "";
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        char fqn[512];
        int64_t v[MF_MAX_DIMS], s[MF_MAX_DIMS];
        const char *p;
        unsigned long long o, l, fsize;
        int used;
        if (sscanf(line, "-- %255s (%llu bytes,", file, &fsize) == 2) {
            int fi = file_index(d, file);
            if (fi < 0)
                fail_msg("%s not referenced", file);
            assert_int_equal(d->file_sizes[fi], fsize);
        } else if (sscanf(line, "    @%llu+%llu %511s %n", &o, &l, fqn, &used) == 3) {
            p = strstr(line + used, "chunk_offset=");
            assert_non_null(p);
            int nd = parse_tuple(p + 13, v, &p);
            check_storage(d, fqn, nd, v, file, o, l);
            items++;
        } else if (strncmp(line, "  ", 2) == 0 && (p = strstr(line, ": global("))) {
            memcpy(fqn, line + 2, (size_t)(p - line - 2));
            fqn[p - line - 2] = '\0';
            const mf_dcp_tensor *t = mf_dcp_find(d, fqn);
            if (!t)
                fail_msg("tensor %s not found", fqn);
            check_shape_dtype(t, p + 8, " %63s", &p);
            p = strstr(p, "chunks=") + 7;
            size_t nc = 0;
            for (;;) {
                parse_tuple(p, v, &p);
                assert_true(*p == '+');
                parse_tuple(p + 1, s, &p);
                const mf_dcp_chunk *c = find_chunk(t, v);
                assert_non_null(c);
                for (int k = 0; k < t->ndim; k++)
                    assert_int_equal(c->sizes[k], s[k]);
                nc++;
                if (*p != ';')
                    break;
                p++;
            }
            assert_int_equal(nc, t->n_chunks);
            chunks += nc;
            nt++;
        } else if (strncmp(line, "  ", 2) == 0 && strlen(line) > 7 && strcmp(line + strlen(line) - 7, ": bytes") == 0) {
            nb++;
            nb_used += strstr(line, "._extra_state") == NULL && strncmp(line + 2, "optimizer.", 10) != 0;
        }
    }
    free(txt);
    assert_int_equal(nt, want_tensors);
    assert_int_equal(nb, want_bytes);
    assert_int_equal(d->n_tensors, want_tensors);
    assert_int_equal(d->n_bytes, nb_used); /* _extra_state / optimizer items are not indexed */
    assert_true(nb_used >= 1 && nb_used < nb);
    assert_int_equal(items, chunks + want_bytes); /* every chunk and bytes item is in some file listing */
}

/* The training args of a Megatron fixture (all are hidden 64, 4 layers); *pk owns them. */
static const mf_pv *load_args_4x64(const mf_dcp *d, mf_pickle **pk)
{
    const mf_pv *args;
    if (mf_dcp_load_args(d, pk, &args) != MF_OK)
        fail_msg("args: %s", mf_error());
    assert_int_equal(ns_int(args, "hidden_size"), 64);
    assert_int_equal(ns_int(args, "num_layers"), 4);
    return args;
}

static void test_gpt_torch_dist(void **state)
{
    (void)state;
    mf_dcp d;
    open_ok(&d, us_data(GPT_DIST ITER));
    check_keys_txt(&d, GPT_DIST "/KEYS.txt", 9, 21);
    assert_int_equal(d.n_files, 4);
    const mf_dcp_tensor *t = mf_dcp_find(&d, "decoder.layers.mlp.linear_fc1.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->size[0], 4);
    assert_int_equal(t->size[1], 256);
    assert_int_equal(t->size[2], 64);
    assert_int_equal(t->dtype, MF_DT_BF16);
    assert_int_equal(t->n_chunks, 16);
    const mf_dcp_chunk *c = find_chunk(t, (int64_t[]){1, 192, 0});
    assert_string_equal(d.files[c->file], "__1_0.distcp");
    assert_int_equal(c->offset, 138424);
    assert_int_equal(c->length, 9372);
    assert_int_equal(c->sizes[0], 1);
    assert_int_equal(c->sizes[1], 64);
    assert_int_equal(mf_dcp_find(&d, "decoder.final_layernorm.weight")->dtype, MF_DT_F32);
    const mf_dcp_bytes *b = find_bytes(&d, "common_state/shard_0_1");
    assert_non_null(b);
    assert_string_equal(d.files[b->file], "__0_0.distcp");
    assert_int_equal(b->offset, 21144);
    assert_int_equal(b->length, 30624);
    assert_int_equal(check_all_chunks(&d, "gpt"), 2 + 4 + 8 + 8 + 4 + 16 + 8 + 1 + 2);

    mf_pickle *pk;
    const mf_pv *args = load_args_4x64(&d, &pk);
    assert_true(mf_pv_is_call_of(args, "argparse", "Namespace"));
    assert_int_equal(ns_int(args, "tensor_model_parallel_size"), 2);
    assert_int_equal(ns_int(args, "pipeline_model_parallel_size"), 2);
    assert_true(mf_pv_is_global(mf_pv_dict_get(mf_pv_obj_state(args), "params_dtype"), "torch", "bfloat16"));
    mf_pickle_free(pk);
    mf_dcp_close(&d);
}

static void test_v014_common_pt(void **state)
{
    (void)state;
    mf_dcp d;
    open_ok(&d, us_data(V014_DIST ITER));
    check_keys_txt(&d, V014_DIST "/KEYS.txt", 9, 20);
    assert_int_equal(d.n_files, 8); /* two writer threads per rank: __R_0 and __R_1 */
    assert_null(find_bytes(&d, "common_state/shard_0_1"));
    check_all_chunks(&d, "v014");
    mf_pickle *pk;
    const mf_pv *args = load_args_4x64(&d, &pk);
    mf_pickle_free(pk);
    mf_dcp_close(&d);

    /* without common.pt: a clear error naming the folder */
    const char *dir = copy_dir(us_data(V014_DIST ITER), "v014_nocommon", "common.pt");
    open_ok(&d, dir);
    expect_msg(mf_dcp_load_args(&d, &pk, &args), MF_ERR_MISSING, dir, "common.pt", NULL);
    assert_null(pk);
    assert_null(args);
    mf_dcp_close(&d);
}

static void test_moe_torch_dist(void **state)
{
    (void)state;
    mf_dcp d;
    open_ok(&d, us_data(MOE_DIST ITER));
    size_t len;
    char *txt = (char *)us_read_file(us_data(MOE_DIST "/KEYS.txt"), &len);
    size_t nt = 0, nb = 0;
    for (char *l = strtok(txt, "\n"); l; l = strtok(NULL, "\n")) {
        if (strncmp(l, "  ", 2) == 0 && strstr(l, ": global("))
            nt++;
        else if (strncmp(l, "  ", 2) == 0 && strstr(l, ": bytes"))
            nb++;
    }
    free(txt);
    check_keys_txt(&d, MOE_DIST "/KEYS.txt", nt, nb);
    size_t experts = 0;
    for (size_t i = 0; i < d.n_tensors; i++)
        if (strstr(d.tensors[i].fqn, "mlp.experts.experts.linear_fc1.weight"))
            experts++;
    assert_true(experts > 0);
    check_all_chunks(&d, "moe");
    mf_pickle *pk;
    const mf_pv *args = load_args_4x64(&d, &pk);
    assert_true(ns_int(args, "num_experts") > 1);
    mf_pickle_free(pk);
    mf_dcp_close(&d);
}

/* The legacy twin was trained identically: its rank files hold the very same weights. */
static uint8_t *legacy_bytes(const char *rank_dir, const char *key, size_t *len, mf_dtype *dt)
{
    char rel[512];
    snprintf(rel, sizeof rel, GPT_LEGACY ITER "/%s/model_optim_rng.pt", rank_dir);
    mf_torchfile tf;
    if (mf_torchfile_open(&tf, us_data(rel), 0) != MF_OK)
        fail_msg("%s", mf_error());
    const mf_pv *v = mf_pv_dict_get(mf_pv_dict_get(tf.root, "model"), key);
    mf_tensor t;
    if (!v || mf_torchfile_tensor(&tf, v, key, &t) != MF_OK)
        fail_msg("%s %s: %s", rank_dir, key, mf_error());
    *dt = t.dtype;
    uint8_t *b = gather(tf.fd, &t, len);
    mf_torchfile_close(&tf);
    return b;
}

static uint8_t *dist_bytes(const mf_dcp *d, const char *fqn, const int64_t *off, size_t *len)
{
    const mf_dcp_tensor *t = mf_dcp_find(d, fqn);
    assert_non_null(t);
    const mf_dcp_chunk *c = find_chunk(t, off);
    assert_non_null(c);
    int fd = open(path_in(d->dir, d->files[c->file]), O_RDONLY);
    assert_true(fd >= 0);
    mf_tensor mt;
    if (mf_dcp_chunk_tensor(d, fd, c, &mt) != MF_OK)
        fail_msg("%s", mf_error());
    assert_int_equal(mt.dtype, t->dtype);
    uint8_t *b = gather(fd, &mt, len);
    close(fd);
    return b;
}

static void same_as_legacy(const mf_dcp *d, const char *fqn, int64_t o0, int64_t o1, int64_t o2, const char *rank,
                           const char *key, size_t skip, size_t take)
{
    int64_t off[3] = {o0, o1, o2};
    size_t ll, dl;
    mf_dtype dt;
    uint8_t *lb = legacy_bytes(rank, key, &ll, &dt), *db = dist_bytes(d, fqn, off, &dl);
    if (take == 0)
        take = ll - skip;
    assert_true(skip + take <= ll);
    assert_int_equal(dl, take);
    if (memcmp(lb + skip, db, take) != 0)
        fail_msg("%s chunk (%lld, %lld, %lld) differs from %s %s", fqn, (long long)o0, (long long)o1, (long long)o2, rank,
                 key);
    free(lb);
    free(db);
}

static void test_gpt_matches_legacy_twin(void **state)
{
    (void)state;
    mf_dcp d;
    open_ok(&d, us_data(GPT_DIST ITER));
    for (int pp = 0; pp < 2; pp++)
        for (int tp = 0; tp < 2; tp++) {
            char rank[32], key[256];
            snprintf(rank, sizeof rank, "mp_rank_%02d_%03d", tp, pp);
            for (int l = 0; l < 2; l++) {
                int L = pp * 2 + l;
                snprintf(key, sizeof key, "decoder.layers.%d.self_attention.linear_qkv.weight", l);
                same_as_legacy(&d, "decoder.layers.self_attention.linear_qkv.weight", L, tp * 64, 0, rank, key, 0, 0);
                snprintf(key, sizeof key, "decoder.layers.%d.self_attention.linear_proj.weight", l);
                same_as_legacy(&d, "decoder.layers.self_attention.linear_proj.weight", L, 0, tp * 32, rank, key, 0, 0);
                /* legacy fc1 shard = [gate_t; up_t]; torch_dist global = [gate; up] */
                snprintf(key, sizeof key, "decoder.layers.%d.mlp.linear_fc1.weight", l);
                same_as_legacy(&d, "decoder.layers.mlp.linear_fc1.weight", L, tp * 64, 0, rank, key, 0, 64 * 64 * 2);
                same_as_legacy(&d, "decoder.layers.mlp.linear_fc1.weight", L, 128 + tp * 64, 0, rank, key, 64 * 64 * 2,
                               64 * 64 * 2);
                snprintf(key, sizeof key, "decoder.layers.%d.mlp.linear_fc2.weight", l);
                same_as_legacy(&d, "decoder.layers.mlp.linear_fc2.weight", L, 0, tp * 64, rank, key, 0, 0);
                if (tp == 0) { /* local spec: norms are renamed to TE names in dist-ckpt */
                    snprintf(key, sizeof key, "decoder.layers.%d.input_layernorm.weight", l);
                    same_as_legacy(&d, "decoder.layers.self_attention.linear_qkv.layer_norm_weight", L, 0, 0, rank, key, 0, 0);
                    snprintf(key, sizeof key, "decoder.layers.%d.pre_mlp_layernorm.weight", l);
                    same_as_legacy(&d, "decoder.layers.mlp.linear_fc1.layer_norm_weight", L, 0, 0, rank, key, 0, 0);
                }
            }
            if (pp == 0)
                same_as_legacy(&d, "embedding.word_embeddings.weight", tp * 512, 0, 0, rank, "embedding.word_embeddings.weight",
                               0, 0);
            else
                same_as_legacy(&d, "output_layer.weight", tp * 512, 0, 0, rank, "output_layer.weight", 0, 0);
        }
    same_as_legacy(&d, "decoder.final_layernorm.weight", 0, 0, 0, "mp_rank_00_001", "decoder.final_layernorm.weight", 0, 0);
    mf_dcp_close(&d);
}

/* ------------------------------------------------ broken real checkpoints */

static void test_missing_and_truncated_distcp(void **state)
{
    (void)state;
    mf_dcp d;
    const char *dir = copy_dir(us_data(SAMPLE), "nofile", "__2_0.distcp");
    expect_msg(mf_dcp_open(&d, dir), MF_ERR_MISSING, "__2_0.distcp", "tensor 'model.embed.weight'", "(32, 0)", NULL);
    assert_int_equal(d.n_tensors, 0); /* a failed open leaves nothing to free */
    assert_null(d.tensors);

    dir = copy_dir(us_data(SAMPLE), "truncated", NULL);
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE "/__3_0.distcp"), &len);
    assert_int_equal(len, 9360);
    assert_int_equal(us_write_file(path_in(dir, "__3_0.distcp"), data, 9000), 0);
    expect_msg(mf_dcp_open(&d, dir), MF_ERR_FORMAT, "__3_0.distcp", "tensor 'model.counter'", "exceeds the file", NULL);
    free(data);

    /* The window is fine but its bytes are not an archive: found when the chunk is read. */
    dir = copy_dir(us_data(SAMPLE), "garbled", NULL);
    data = us_read_file(us_data(SAMPLE "/__3_0.distcp"), &len);
    memset(data + 8180, 'x', 1180); /* model.counter's archive */
    assert_int_equal(us_write_file(path_in(dir, "__3_0.distcp"), data, len), 0);
    free(data);
    open_ok(&d, dir);
    const mf_dcp_tensor *t = mf_dcp_find(&d, "model.counter");
    int fd = open(path_in(dir, "__3_0.distcp"), O_RDONLY);
    mf_tensor mt;
    int rc = mf_dcp_chunk_tensor(&d, fd, &t->chunks[0], &mt);
    assert_true(rc < 0);
    assert_one_line();
    assert_non_null(strstr(mf_error(), "model.counter"));
    assert_non_null(strstr(mf_error(), "__3_0.distcp"));
    /* a chunk that is not this checkpoint's */
    mf_dcp_chunk bogus = t->chunks[0];
    bogus.file = 99;
    assert_int_equal(mf_dcp_chunk_tensor(&d, fd, &bogus, &mt), MF_ERR_INVALID);
    /* a copy of a chunk still works (no owner known, no name in messages) */
    const mf_dcp_tensor *e = mf_dcp_find(&d, "model.embed.weight");
    mf_dcp_chunk copy = e->chunks[3];
    int fd0 = open(path_in(dir, d.files[copy.file]), O_RDONLY);
    assert_int_equal(mf_dcp_chunk_tensor(&d, fd0, &copy, &mt), MF_OK);
    assert_int_equal(mt.shape[0], 16);
    close(fd0);
    close(fd);
    mf_dcp_close(&d);

    expect_msg(mf_dcp_open(&d, us_tmp("no-such-dir")), MF_ERR_MISSING, ".metadata", NULL);
}

static void test_truncated_and_corrupt_metadata(void **state)
{
    (void)state;
    const char *dir = copy_dir(us_data(SAMPLE), "cutmeta", NULL);
    const char *mp = path_in(dir, ".metadata");
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE "/.metadata"), &len);
    assert_non_null(data);
    mf_dcp d;
    for (size_t cut = 0; cut < len; cut += 3) {
        assert_int_equal(us_write_file(mp, data, cut), 0);
        int rc = mf_dcp_open(&d, dir);
        if (rc >= 0)
            fail_msg("cut at %zu opened", cut);
        assert_one_line();
        assert_non_null(strstr(mf_error(), ".metadata"));
    }
    /* corrupted bytes: never a crash or a leak; failures are one-line messages */
    uint8_t *bad = malloc(len);
    uint32_t seed = 12345;
    int opened = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(bad, data, len);
        int flips = 1 + it % 3;
        for (int f = 0; f < flips; f++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            bad[pos] = (uint8_t)(seed >> 16);
        }
        assert_int_equal(us_write_file(mp, bad, len), 0);
        int rc = mf_dcp_open(&d, dir);
        if (rc == MF_OK) {
            opened++;
            mf_dcp_close(&d);
        } else {
            assert_true(rc < 0);
            assert_one_line();
        }
    }
    print_message("corrupted .metadata: %d of 1500 still opened\n", opened);
    /* not a Metadata pickle at all */
    assert_int_equal(us_write_file(mp, "\x80\x02}q\x00.", 6), 0);
    expect_msg(mf_dcp_open(&d, dir), MF_ERR_FORMAT, mp, "Metadata", NULL);
    free(bad);
    free(data);
}

/* --------------------------------------------- hand-made .metadata pickles */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} pbuf;

static void raw(pbuf *p, const void *d, size_t n)
{
    if (p->n + n > p->cap) {
        p->cap = (p->n + n) * 2 + 256;
        p->b = realloc(p->b, p->cap);
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void ops(pbuf *p, const char *s) { raw(p, s, strlen(s)); }
static void str(pbuf *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    uint8_t h[5] = {'X', (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    raw(p, h, 5);
    raw(p, s, n);
}
static void pint(pbuf *p, int64_t v) /* LONG1, 8 bytes */
{
    uint8_t h[10] = {0x8a, 8};
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)v >> (8 * i));
    raw(p, h, 10);
}
static void glob(pbuf *p, const char *mod, const char *name)
{
    ops(p, "c"), ops(p, mod), ops(p, "\n"), ops(p, name), ops(p, "\n");
}
static void size_tuple(pbuf *p, int nd, const int64_t *v) /* torch.Size((...)) */
{
    glob(p, "torch", "Size");
    ops(p, "(");
    for (int i = 0; i < nd; i++)
        pint(p, v[i]);
    ops(p, "t\x85R");
}
static void obj_begin(pbuf *p, const char *mod, const char *cls)
{
    glob(p, mod, cls);
    ops(p, ")\x81}(");
}
static void obj_end(pbuf *p) { ops(p, "ub"); }

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

static void storage_entry(pbuf *p, const char *fqn, int nd, const int64_t *off, const char *file, int64_t foff,
                          int64_t flen, const char *transform)
{
    obj_begin(p, META_MOD, "MetadataIndex");
    str(p, "fqn"), str(p, fqn);
    if (nd >= 0)
        str(p, "offset"), size_tuple(p, nd, off);
    str(p, "index"), ops(p, "N");
    obj_end(p);
    obj_begin(p, "torch.distributed.checkpoint.filesystem", "_StorageInfo");
    str(p, "relative_path"), str(p, file);
    str(p, "offset"), pint(p, foff);
    str(p, "length"), pint(p, flen);
    if (transform)
        str(p, "transform_descriptors"), ops(p, "]("), str(p, transform), ops(p, "e");
    obj_end(p);
}

static void metadata_pickle(pbuf *p, const sitem *items, size_t n)
{
    ops(p, "\x80\x04");
    obj_begin(p, META_MOD, "Metadata");
    str(p, "state_dict_metadata");
    ops(p, "}(");
    for (size_t i = 0; i < n; i++) {
        const sitem *it = &items[i];
        str(p, it->fqn);
        if (!it->dtype) {
            glob(p, META_MOD, "BytesStorageMetadata");
            ops(p, ")\x81");
            continue;
        }
        obj_begin(p, META_MOD, "TensorStorageMetadata");
        str(p, "properties");
        glob(p, META_MOD, "TensorProperties");
        ops(p, ")\x81(");
        glob(p, "torch", it->dtype);
        glob(p, "torch.serialization", "_get_layout");
        str(p, "torch.strided");
        ops(p, "\x85R\x89N\x89tb");
        str(p, "size"), size_tuple(p, it->nd, it->size);
        str(p, "chunks");
        ops(p, "](");
        for (size_t j = 0; j < it->n; j++) {
            obj_begin(p, META_MOD, "ChunkStorageMetadata");
            str(p, "offsets"), size_tuple(p, it->nd, it->chunks[j].off);
            str(p, "sizes"), size_tuple(p, it->nd, it->chunks[j].size);
            obj_end(p);
        }
        ops(p, "e");
        obj_end(p);
    }
    ops(p, "u");
    str(p, "planner_data"), ops(p, "N");
    str(p, "storage_data");
    ops(p, "}");
    for (size_t i = 0; i < n; i++) {
        const sitem *it = &items[i];
        ops(p, "(");
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
        ops(p, "u"); /* one SETITEMS batch per item */
    }
    str(p, "version"), str(p, "1.0.0");
    obj_end(p);
    ops(p, ".");
}

/* A fresh folder with .metadata for items and __0_0.distcp of fsize bytes. */
static const char *write_ckpt(const char *name, const sitem *items, size_t n, size_t fsize)
{
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s", us_tmp(name));
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    pbuf p = {0};
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
    pbuf p = {0};
    ops(&p, "\x80\x04");
    obj_begin(&p, META_MOD, "Metadata");
    str(&p, "state_dict_metadata");
    ops(&p, "}(");
    str(&p, "w"), ops(&p, "q\x01");
    obj_begin(&p, META_MOD, "TensorStorageMetadata");
    str(&p, "properties");
    glob(&p, META_MOD, "TensorProperties");
    ops(&p, ")\x81(");
    glob(&p, "torch", "float32");
    glob(&p, "torch.serialization", "_get_layout");
    str(&p, "torch.strided");
    ops(&p, "\x85R\x89N\x89tb");
    str(&p, "size"), size_tuple(&p, 2, w.size);
    str(&p, "chunks");
    ops(&p, "](");
    for (size_t j = 0; j < w.n; j++) {
        obj_begin(&p, META_MOD, "ChunkStorageMetadata");
        str(&p, "offsets"), size_tuple(&p, 2, g[j].off);
        str(&p, "sizes"), size_tuple(&p, 2, g[j].size);
        obj_end(&p);
    }
    ops(&p, "e");
    obj_end(&p);
    ops(&p, "q\x02u");
    for (int b = 0; b < 2000; b++) { /* the same key and value again, 1000 per SETITEMS */
        ops(&p, "(");
        for (int k = 0; k < 1000; k++)
            ops(&p, "h\x01h\x02");
        ops(&p, "u");
    }
    str(&p, "planner_data"), ops(&p, "N");
    str(&p, "storage_data");
    ops(&p, "}(");
    for (size_t j = 0; j < w.n; j++)
        storage_entry(&p, "w", 2, g[j].off, "__0_0.distcp", g[j].foff, g[j].flen, NULL);
    ops(&p, "u");
    str(&p, "version"), str(&p, "1.0.0");
    obj_end(&p);
    ops(&p, ".");
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
    pbuf p = {0};
    int64_t numel = 1;
    for (int i = 0; i < nd; i++)
        numel *= shape[i];
    ops(&p, "\x80\x02");
    glob(&p, "torch._utils", "_rebuild_tensor_v2");
    ops(&p, "((");
    str(&p, "storage");
    glob(&p, "torch", storage);
    str(&p, "0");
    str(&p, "cpu");
    pint(&p, numel);
    ops(&p, "tQ");
    pint(&p, 0);
    ops(&p, "(");
    for (int i = 0; i < nd; i++)
        pint(&p, shape[i]);
    ops(&p, "t(");
    int64_t st = 1;
    int64_t strides[MF_MAX_DIMS];
    for (int i = nd - 1; i >= 0; i--)
        strides[i] = st, st *= shape[i];
    for (int i = 0; i < nd; i++)
        pint(&p, strides[i]);
    ops(&p, "t\x89");
    glob(&p, "collections", "OrderedDict");
    ops(&p, ")RtR.");
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
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_sample_layout),
        cmocka_unit_test(test_gpt_torch_dist),
        cmocka_unit_test(test_v014_common_pt),
        cmocka_unit_test(test_moe_torch_dist),
        cmocka_unit_test(test_gpt_matches_legacy_twin),
        cmocka_unit_test(test_missing_and_truncated_distcp),
        cmocka_unit_test(test_truncated_and_corrupt_metadata),
        cmocka_unit_test(test_handmade_good),
        cmocka_unit_test(test_handmade_bad),
        cmocka_unit_test(test_irregular_layout),
        cmocka_unit_test(test_many_chunks),
        cmocka_unit_test(test_memo_amplified_tables),
        cmocka_unit_test(test_handmade_archives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
