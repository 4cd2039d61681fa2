/* Unit tests for the view layout (core/view.c): safetensors shards planned from a synthetic
 * mapping (no checkpoint): whole layers kept together, tensors in a file sorted by (alignment
 * desc, name), the header JSON with dtype, shape of any rank and data offsets, padded with
 * spaces to 8 bytes, and the index's weight_map and total_size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "mcorefs/error.h"
#include "mcorefs/view.h"

typedef struct {
    const char *name;
    mf_dtype dtype;
    int ndim;
    int64_t shape[3];
    int32_t layer;
} spec;

static void add_tensors(mf_session *s, const spec *sp, size_t n)
{
    s->map.tensors = calloc(n, sizeof(mf_hf_tensor));
    assert_non_null(s->map.tensors);
    for (size_t i = 0; i < n; i++) {
        mf_hf_tensor *t = &s->map.tensors[i];
        t->name = strdup(sp[i].name);
        t->dtype = t->src_dtype = sp[i].dtype;
        t->ndim = sp[i].ndim;
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= (uint64_t)(t->shape[d] = sp[i].shape[d]);
        t->nbytes = numel * mf_dtype_size(t->dtype);
        t->layer = sp[i].layer;
        s->map.total_bytes += t->nbytes;
    }
    s->map.n = n;
}

static void session_free(mf_session *s)
{
    for (size_t i = 0; i < s->n_files; i++) {
        free(s->files[i].name);
        free(s->files[i].data);
        free(s->files[i].tensors);
    }
    free(s->files);
    for (size_t i = 0; i < s->map.n; i++)
        free(s->map.tensors[i].name);
    free(s->map.tensors);
}

static const mf_vfile *file(const mf_session *s, const char *name)
{
    for (size_t i = 0; i < s->n_files; i++)
        if (strcmp(s->files[i].name, name) == 0)
            return &s->files[i];
    fail_msg("no file %s", name);
    return NULL;
}

/* The header of a shard, checked for its framing; returns the parsed JSON. */
static cJSON *header(const mf_vfile *f)
{
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)(uint8_t)f->data[i] << (8 * i);
    assert_int_equal(n % 8, 0);
    assert_int_equal(f->header_len, 8 + n);
    assert_true(f->data[8] == '{');
    size_t end = 8 + n;
    while (f->data[end - 1] == ' ')   /* padded with spaces after the closing brace */
        end--;
    assert_true(f->data[end - 1] == '}');
    assert_true(8 + n - end < 8);
    cJSON *j = cJSON_ParseWithLength(f->data + 8, n);
    assert_non_null(j);
    return j;
}

static void expect_entry(const cJSON *h, const char *name, const char *dtype, const char *shape, uint64_t b, uint64_t e)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, name);
    if (t == NULL)
        fail_msg("no header entry %s", name);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, dtype);
    char *sh = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(t, "shape"));
    assert_string_equal(sh, shape);
    free(sh);
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    assert_int_equal((uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble, b);
    assert_int_equal((uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble, e);
}

static const spec model_spec[] = {
    { "model.embed_tokens.weight", MF_DT_BF16, 2, { 10, 8 }, -1 },          /* 160 B */
    { "model.layers.0.b.weight", MF_DT_F32, 1, { 8 }, 0 },                  /* 32 B */
    { "model.layers.0.a.weight", MF_DT_BF16, 2, { 8, 8 }, 0 },              /* 128 B */
    { "model.layers.0.mlp.experts.gate_up_proj", MF_DT_BF16, 3, { 2, 8, 4 }, 0 },  /* 128 B */
    { "model.layers.1.a.weight", MF_DT_BF16, 2, { 8, 8 }, 1 },              /* 128 B */
    { "model.layers.1.b.weight", MF_DT_F32, 1, { 8 }, 1 },                  /* 32 B */
    { "model.norm.weight", MF_DT_F32, 1, { 8 }, -1 },                       /* 32 B */
    { "lm_head.weight", MF_DT_BF16, 2, { 10, 8 }, -1 },                     /* 160 B */
};

/* One file: every tensor, sorted by (element size desc, name), offsets back to back. */
static void test_single_file(void **state)
{
    (void)state;
    mf_session s;
    memset(&s, 0, sizeof(s));
    s.opts.shard_size = 1u << 20;
    add_tensors(&s, model_spec, sizeof(model_spec) / sizeof(model_spec[0]));
    assert_int_equal(mf_view_build_shards(&s), MF_OK);
    assert_int_equal(s.n_files, 1);
    const mf_vfile *f = file(&s, "model.safetensors");
    assert_int_equal(f->size, f->header_len + s.map.total_bytes);
    cJSON *h = header(f);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(h, "__metadata__"), "format")->valuestring, "pt");
    /* F32 first (by name), then BF16 by name */
    expect_entry(h, "model.layers.0.b.weight", "F32", "[8]", 0, 32);
    expect_entry(h, "model.layers.1.b.weight", "F32", "[8]", 32, 64);
    expect_entry(h, "model.norm.weight", "F32", "[8]", 64, 96);
    expect_entry(h, "lm_head.weight", "BF16", "[10,8]", 96, 256);
    expect_entry(h, "model.embed_tokens.weight", "BF16", "[10,8]", 256, 416);
    expect_entry(h, "model.layers.0.a.weight", "BF16", "[8,8]", 416, 544);
    expect_entry(h, "model.layers.0.mlp.experts.gate_up_proj", "BF16", "[2,8,4]", 544, 672);
    expect_entry(h, "model.layers.1.a.weight", "BF16", "[8,8]", 672, 800);
    assert_int_equal(s.map.tensors[3].offset, 544);
    cJSON_Delete(h);
    session_free(&s);
}

/* Several shards: greedy in HF order, a layer never split when it fits, then the index. */
static void test_shards_and_index(void **state)
{
    (void)state;
    mf_session s;
    memset(&s, 0, sizeof(s));
    s.opts.shard_size = 300;   /* embed 160 | layer 0 (288) | layer 1 (160) + norm 32 | head 160 */
    add_tensors(&s, model_spec, sizeof(model_spec) / sizeof(model_spec[0]));
    assert_int_equal(mf_view_build_shards(&s), MF_OK);
    assert_int_equal(s.n_files, 5);   /* 4 shards + the index */
    static const uint32_t want_file[] = { 0, 1, 1, 1, 2, 2, 2, 3 };
    for (size_t i = 0; i < s.map.n; i++)
        assert_int_equal(s.map.tensors[i].file, want_file[i]);
    cJSON *h = header(file(&s, "model-00002-of-00004.safetensors"));
    expect_entry(h, "model.layers.0.b.weight", "F32", "[8]", 0, 32);
    expect_entry(h, "model.layers.0.a.weight", "BF16", "[8,8]", 32, 160);
    cJSON_Delete(h);
    const mf_vfile *ix = file(&s, "model.safetensors.index.json");
    cJSON *j = cJSON_ParseWithLength(ix->data, ix->size);
    assert_non_null(j);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
    assert_int_equal((uint64_t)cJSON_GetObjectItemCaseSensitive(meta, "total_size")->valuedouble, 800);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    assert_int_equal(cJSON_GetArraySize(wm), 8);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(wm, "lm_head.weight")->valuestring, "model-00004-of-00004.safetensors");
    assert_string_equal(wm->child->string, "lm_head.weight");   /* sorted by name */
    cJSON_Delete(j);
    session_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_file),
        cmocka_unit_test(test_shards_and_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
