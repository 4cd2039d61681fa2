/* Unit tests for the PyTorch Distributed Checkpoint reader (core/dcp.c):
 *  - real checkpoints: torch 2.6 DCP sample (layout.txt) and three Megatron torch_dist
 *    checkpoints (KEYS.txt): every tensor, chunk and bytes item compared with the listings;
 *  - chunk bytes: every chunk resolved with mf_dcp_chunk_tensor and compared with what torch
 *    itself loads from the same window, and with the legacy twin checkpoint's rank files;
 *  - args from common_state (core >= 0.19) and common.pt (core 0.14);
 *  - broken checkpoints: missing / truncated .distcp, truncated / corrupted .metadata.
 * Hand-made .metadata pickles are in test_dcp_handmade.c. */
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

#include "dcp_test_support.h"
#include "unit_support.h"

#define SAMPLE "torch/dcp_sample"
#define GPT_DIST "megatron/head_gpt_tp2pp2_torch_dist"
#define MOE_DIST "megatron/head_moe_tp2ep2_torch_dist"
#define V014_DIST "megatron/v014_gpt_tp2pp2_torch_dist"
#define GPT_LEGACY "megatron/head_gpt_tp2pp2_torch"
#define ITER "/iter_0000010"

/* ---------------------------------------------------------------- helpers */

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
