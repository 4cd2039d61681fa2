/* Unit tests for torch.save archives: real PyTorch 2.6 / Megatron files, files written at
 * test time by Debian's torch (every dtype, strided views; bytes compared with what Python
 * wrote), and hand-made archives with broken tensor records. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/torchfile.h"
#include "unit_support.h"

#define SAMPLE "torch/torch2x_sample.pt"
#define GPT_RANK0 "megatron/head_gpt_tp2pp2_torch/iter_0000010/mp_rank_00_000/model_optim_rng.pt"
#define DISTOPT "megatron/head_gpt_tp2dp2_distopt_torch/iter_0000010/mp_rank_00/model_optim_rng.pt"

static void open_ok(mf_torchfile *tf, const char *path)
{
    if (mf_torchfile_open(tf, path, 0) != MF_OK)
        fail_msg("open %s: %s", path, mf_error());
}

static void tensor_ok(const mf_torchfile *tf, const mf_pv *v, const char *what, mf_tensor *t)
{
    assert_true(mf_torchfile_is_tensor(v));
    if (mf_torchfile_tensor(tf, v, what, t) != MF_OK)
        fail_msg("%s: %s", what, mf_error());
}

static void check_shape(const mf_tensor *t, mf_dtype dt, int nd, int64_t d0, int64_t d1)
{
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, nd);
    if (nd > 0)
        assert_int_equal(t->shape[0], d0);
    if (nd > 1)
        assert_int_equal(t->shape[1], d1);
}

static uint8_t *gather(const mf_torchfile *tf, const mf_tensor *t, size_t *len)
{
    uint8_t *b = us_gather_strided(tf->fd, t, len);
    assert_non_null(b);
    return b;
}

/* Compare every tensor of `keys` with the contiguous bytes Python wrote to <prefix>.<key>.bin. */
static void compare_with_python(const mf_torchfile *tf, const mf_pv *dict, const char *const *keys, const char *prefix)
{
    for (int i = 0; keys[i]; i++) {
        mf_tensor t;
        tensor_ok(tf, mf_pv_dict_get(dict, keys[i]), keys[i], &t);
        char side[4200];
        snprintf(side, sizeof side, "%s.%s.bin", prefix, keys[i]);
        size_t want_len, got_len;
        uint8_t *want = us_read_file(side, &want_len), *got = gather(tf, &t, &got_len);
        assert_non_null(want);
        if (got_len != want_len || memcmp(got, want, got_len) != 0)
            fail_msg("%s: bytes differ from torch (%zu vs %zu bytes)", keys[i], got_len, want_len);
        free(want);
        free(got);
    }
}

static const char *py_dump =
    "import sys, torch\n"
    "src, out = sys.argv[1], sys.argv[2]\n"
    "d = torch.load(src)\n"
    "for k, v in d.items():\n"
    "    if torch.is_tensor(v):\n"
    "        v = v.detach().contiguous()\n"
    "        if v.dtype == torch.bfloat16: v = v.view(torch.int16)\n"
    "        open(out + '.' + k + '.bin', 'wb').write(v.numpy().tobytes())\n";

static void test_torch2x_sample(void **state)
{
    (void)state;
    mf_torchfile tf;
    open_ok(&tf, us_data(SAMPLE));
    const mf_pv *r = tf.root;
    assert_int_equal(r->kind, MF_PV_DICT);
    mf_tensor t, base, sl;
    tensor_ok(&tf, mf_pv_dict_get(r, "fp32"), "fp32", &t);
    check_shape(&t, MF_DT_F32, 2, 8, 16);
    assert_int_equal(t.stride[0], 16);
    tensor_ok(&tf, mf_pv_dict_get(r, "bf16"), "bf16", &t);
    check_shape(&t, MF_DT_BF16, 2, 4, 8);
    tensor_ok(&tf, mf_pv_dict_get(r, "fp16"), "fp16", &t);
    check_shape(&t, MF_DT_F16, 2, 3, 5);
    tensor_ok(&tf, mf_pv_dict_get(r, "int64"), "int64", &t);
    check_shape(&t, MF_DT_I64, 1, 10, 0);
    tensor_ok(&tf, mf_pv_dict_get(r, "scalar"), "scalar", &t);
    check_shape(&t, MF_DT_F32, 0, 0, 0);
    /* views sharing one storage: view_t (transpose), base, slice (storage offset 8) */
    tensor_ok(&tf, mf_pv_dict_get(r, "base"), "base", &base);
    tensor_ok(&tf, mf_pv_dict_get(r, "view_t"), "view_t", &t);
    tensor_ok(&tf, mf_pv_dict_get(r, "slice"), "slice", &sl);
    assert_int_equal(t.storage_begin, base.storage_begin);
    assert_int_equal(sl.storage_begin, base.storage_begin);
    assert_int_equal(t.stride[0], 1);
    assert_int_equal(t.stride[1], 6);
    assert_int_equal(sl.offset, base.offset + 8 * 4);
    float f;
    assert_int_equal(pread(tf.fd, &f, 4, (off_t)sl.offset), 4);
    assert_true(f == 8.0f);
    const mf_pv *meta = mf_pv_dict_get(r, "meta");
    int64_t it;
    assert_int_equal(mf_pv_get_int(mf_pv_dict_get(meta, "iteration"), &it), MF_OK);
    assert_int_equal(it, 7);
    assert_string_equal(mf_pv_get_str(mf_pv_dict_get(meta, "name")), "torch2x-sample");
    assert_false(mf_torchfile_is_tensor(meta));
    assert_int_equal(mf_torchfile_tensor(&tf, meta, "meta", &t), MF_ERR_FORMAT);
    if (us_have_torch()) {
        const char *out = us_tmp("sample");
        const char *args[] = {us_data(SAMPLE), out, NULL};
        assert_int_equal(us_run_python(py_dump, args), 0);
        const char *keys[] = {"fp32", "bf16", "fp16", "int64", "view_t", "base", "slice", "scalar", NULL};
        compare_with_python(&tf, r, keys, out);
    }
    mf_torchfile_close(&tf);
}

static void test_megatron_rank_file(void **state)
{
    (void)state;
    mf_torchfile tf;
    open_ok(&tf, us_data(GPT_RANK0));
    const mf_pv *r = tf.root;
    assert_string_equal(tf.zip.prefix, "model_optim_rng");
    assert_string_equal(mf_pv_get_str(r->u.dict.keys[0]), "args");
    assert_string_equal(mf_pv_get_str(r->u.dict.keys[1]), "checkpoint_version");
    assert_string_equal(mf_pv_get_str(r->u.dict.keys[2]), "iteration");
    const mf_pv *args = mf_pv_dict_get(r, "args");
    assert_true(mf_pv_is_call_of(args, "argparse", "Namespace"));
    const mf_pv *ns = mf_pv_obj_state(args);
    assert_non_null(ns);
    assert_int_equal(ns->u.dict.n, 846);
    int64_t v;
    assert_int_equal(mf_pv_get_int(mf_pv_dict_get(ns, "hidden_size"), &v), MF_OK);
    assert_int_equal(v, 64);
    assert_true(mf_pv_is_global(mf_pv_dict_get(ns, "params_dtype"), "torch", "bfloat16"));
    assert_int_equal(mf_pv_get_int(mf_pv_dict_get(r, "iteration"), &v), MF_OK);
    assert_int_equal(v, 10);
    double cv;
    assert_int_equal(mf_pv_get_float(mf_pv_dict_get(r, "checkpoint_version"), &cv), MF_OK);
    assert_true(cv == 3.0);

    const mf_pv *model = mf_pv_dict_get(r, "model");
    assert_int_equal(model->kind, MF_PV_DICT);
    assert_string_equal(mf_pv_get_str(model->u.dict.keys[0]), "embedding.word_embeddings.weight");
    assert_string_equal(mf_pv_get_str(model->u.dict.keys[1]), "decoder.layers.0.input_layernorm.weight");
    assert_string_equal(mf_pv_get_str(model->u.dict.keys[3]), "decoder.layers.0.self_attention.linear_proj._extra_state");
    assert_int_equal(model->u.dict.vals[3]->kind, MF_PV_NONE);
    mf_tensor t;
    tensor_ok(&tf, model->u.dict.vals[0], "embedding", &t);
    check_shape(&t, MF_DT_BF16, 2, 512, 64);
    tensor_ok(&tf, mf_pv_dict_get(model, "decoder.layers.0.input_layernorm.weight"), "ln", &t);
    check_shape(&t, MF_DT_F32, 1, 64, 0);
    tensor_ok(&tf, mf_pv_dict_get(model, "decoder.layers.1.mlp.linear_fc1.weight"), "fc1", &t);
    check_shape(&t, MF_DT_BF16, 2, 128, 64);
    tensor_ok(&tf, mf_pv_dict_get(model, "decoder.layers.0.self_attention.linear_proj.weight"), "proj", &t);
    check_shape(&t, MF_DT_BF16, 2, 64, 32);

    /* rng state: random.getstate() ints above 2^31 arrive as LONG1 */
    const mf_pv *rng = mf_pv_dict_get(r, "rng_state");
    assert_int_equal(rng->kind, MF_PV_LIST);
    const mf_pv *rs = mf_pv_dict_get(rng->u.seq.items[0], "random_rng_state");
    assert_int_equal(mf_pv_get_int(rs->u.seq.items[1]->u.seq.items[0], &v), MF_OK);
    assert_int_equal(v, 2147483648LL);
    tensor_ok(&tf, mf_pv_dict_get(rng->u.seq.items[0], "torch_rng_state"), "torch_rng_state", &t);
    check_shape(&t, MF_DT_U8, 1, 5056, 0);
    mf_torchfile_close(&tf);
}

static void test_distopt_shared_buffer(void **state)
{
    (void)state;
    mf_torchfile tf;
    open_ok(&tf, us_data(DISTOPT));
    const mf_pv *model = mf_pv_dict_get(tf.root, "model");
    static const struct { const char *key; int64_t off; } views[] = {
        {"embedding.word_embeddings.weight", 45376},
        {"decoder.layers.0.input_layernorm.weight", 45312},
        {"decoder.layers.0.self_attention.linear_qkv.weight", 39168},
        {"decoder.layers.1.mlp.linear_fc2.weight", 8256},
        {"decoder.final_layernorm.weight", 8192},
    };
    mf_tensor first;
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        mf_tensor t;
        tensor_ok(&tf, mf_pv_dict_get(model, views[i].key), views[i].key, &t);
        assert_int_equal(t.dtype, MF_DT_BF16);
        if (i == 0)
            first = t;
        assert_int_equal(t.storage_begin, first.storage_begin); /* one record */
        assert_int_equal(t.offset, t.storage_begin + (uint64_t)views[i].off * 2);
        assert_true(t.offset + 2 <= t.storage_begin + t.storage_bytes);
    }
    mf_torchfile_close(&tf);
}

/* ---- files written now by Debian's torch ---- */

static const char *py_gen =
    "import sys, torch\n"
    "out = sys.argv[1]\n"
    "g = torch.Generator().manual_seed(0)\n"
    "base = torch.randn(6, 10, generator=g)\n"
    "d = {'bf16': torch.randn(2, 3, 4, generator=g).to(torch.bfloat16),\n"
    "     'f16': torch.randn(7, generator=g).to(torch.float16),\n"
    "     'f32': torch.randn(3, 4, generator=g),\n"
    "     'f64': torch.randn(5, generator=g, dtype=torch.float64),\n"
    "     'i64': torch.arange(-5, 5, dtype=torch.int64) * 2**40,\n"
    "     'i32': torch.arange(-6, 6, dtype=torch.int32).reshape(3, 4),\n"
    "     'i16': torch.arange(-3, 3, dtype=torch.int16),\n"
    "     'i8': torch.arange(-4, 4, dtype=torch.int8),\n"
    "     'u8': torch.arange(250, 256, dtype=torch.uint8),\n"
    "     'bool': torch.tensor([True, False, True]),\n"
    "     'base': base, 't': base.t(), 'slice': base[2:5, 3:7], 'step': base[::2, 1::3],\n"
    "     'bf16_t': torch.randn(4, 6, generator=g).to(torch.bfloat16).t(),\n"
    "     'expand': torch.arange(4.).reshape(4, 1).expand(4, 3),\n"
    "     'scalar': torch.tensor(3.5), 'empty': torch.zeros(0, 5),\n"
    "     'param': torch.nn.Parameter(torch.ones(2, 2))}\n"
    "torch.save(d, out + '.pt')\n"
    "for k, v in d.items():\n"
    "    v = v.detach().contiguous()\n"
    "    if v.dtype == torch.bfloat16: v = v.view(torch.int16)\n"
    "    open(out + '.' + k + '.bin', 'wb').write(v.numpy().tobytes())\n";

static void test_generated_dtypes_and_views(void **state)
{
    (void)state;
    if (!us_have_torch())
        skip();
    const char *out = us_tmp("gen");
    const char *args[] = {out, NULL};
    assert_int_equal(us_run_python(py_gen, args), 0);
    char pt[4200];
    snprintf(pt, sizeof pt, "%s.pt", out);
    mf_torchfile tf;
    open_ok(&tf, pt);
    static const struct { const char *key; mf_dtype dt; } dts[] = {
        {"bf16", MF_DT_BF16}, {"f16", MF_DT_F16}, {"f32", MF_DT_F32}, {"f64", MF_DT_F64}, {"i64", MF_DT_I64},
        {"i32", MF_DT_I32},   {"i16", MF_DT_I16}, {"i8", MF_DT_I8},   {"u8", MF_DT_U8},   {"bool", MF_DT_BOOL},
    };
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
        mf_tensor t;
        tensor_ok(&tf, mf_pv_dict_get(tf.root, dts[i].key), dts[i].key, &t);
        assert_int_equal(t.dtype, dts[i].dt);
    }
    mf_tensor t, base;
    tensor_ok(&tf, mf_pv_dict_get(tf.root, "base"), "base", &base);
    tensor_ok(&tf, mf_pv_dict_get(tf.root, "slice"), "slice", &t);
    assert_int_equal(t.storage_begin, base.storage_begin);
    assert_int_equal(t.offset, base.offset + 23 * 4);
    tensor_ok(&tf, mf_pv_dict_get(tf.root, "expand"), "expand", &t);
    assert_int_equal(t.stride[1], 0);
    tensor_ok(&tf, mf_pv_dict_get(tf.root, "empty"), "empty", &t);
    check_shape(&t, MF_DT_F32, 2, 0, 5);
    assert_true(mf_pv_is_call_of(mf_pv_dict_get(tf.root, "param"), "torch._utils", "_rebuild_parameter"));
    const char *keys[] = {"bf16", "f16", "f32", "f64", "i64", "i32", "i16",    "i8",     "u8",    "bool",  "base",
                          "t",    "slice", "step", "bf16_t", "expand", "scalar", "empty", "param", NULL};
    compare_with_python(&tf, tf.root, keys, out);
    mf_torchfile_close(&tf);
}

/* ---- hand-made archives with broken tensor records ---- */

static void glob(us_pickle *p, const char *mod, const char *name)
{
    us_pk_ops(p, "c"), us_pk_ops(p, mod), us_pk_ops(p, "\n"), us_pk_ops(p, name), us_pk_ops(p, "\n");
}

typedef struct {
    int v3;
    const char *smod, *storage, *key, *dtype;
    int64_t numel, off;
    int nd;
    int64_t shape[10], stride[10];
} tspec;

/* {'w': _rebuild_tensor_v2/v3(...)} as torch.save pickles it. */
static void tensor_pickle(us_pickle *p, const tspec *s)
{
    us_pk_ops(p, "\x80\x02}");
    us_pk_str(p, "w");
    glob(p, "torch._utils", s->v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
    us_pk_ops(p, "((");
    us_pk_str(p, "storage");
    glob(p, s->smod ? s->smod : "torch", s->storage ? s->storage : "FloatStorage");
    us_pk_str(p, s->key ? s->key : "0");
    us_pk_str(p, "cpu");
    us_pk_long(p, s->numel);
    us_pk_ops(p, "tQ");
    us_pk_long(p, s->off);
    us_pk_ops(p, "(");
    for (int i = 0; i < s->nd; i++)
        us_pk_long(p, s->shape[i]);
    us_pk_ops(p, "t(");
    for (int i = 0; i < s->nd; i++)
        us_pk_long(p, s->stride[i]);
    us_pk_ops(p, "t\x89");
    glob(p, "collections", "OrderedDict");
    us_pk_ops(p, ")R");
    if (s->v3)
        glob(p, "torch", s->dtype);
    us_pk_ops(p, "tRs.");
}

static const char *write_pt(const char *name, const us_pickle *pk, size_t record, const char *byteorder)
{
    static uint8_t zeros[4096];
    const char *path = us_tmp(name);
    us_zip_item it[3] = {{"arc/data.pkl", pk->b, pk->n, 0, 0}, {"arc/data/0", zeros, record, 0, 0}};
    size_t n = 2;
    if (byteorder)
        it[n++] = (us_zip_item){"arc/byteorder", byteorder, strlen(byteorder), 0, 0};
    assert_int_equal(us_write_zip(path, it, n, 1), 0);
    return path;
}

/* Open a hand-made file and resolve 'w'; expect `code` and a message naming file and key. */
static void expect_tensor(const tspec *s, size_t record, int code, const char *needle)
{
    us_pickle pk = {0};
    tensor_pickle(&pk, s);
    const char *path = write_pt("hand.pt", &pk, record, NULL);
    free(pk.b);
    mf_torchfile tf;
    open_ok(&tf, path);
    mf_tensor t;
    mf_error_clear();
    int rc = mf_torchfile_tensor(&tf, mf_pv_dict_get(tf.root, "w"), "model.w", &t);
    mf_torchfile_close(&tf);
    if (rc != code)
        fail_msg("expected %d, got %d (%s)", code, rc, mf_error());
    if (code == MF_OK)
        return;
    if (!strstr(mf_error(), path) || !strstr(mf_error(), "model.w"))
        fail_msg("message '%s' does not name the file and key", mf_error());
    if (needle && !strstr(mf_error(), needle))
        fail_msg("message '%s' lacks '%s'", mf_error(), needle);
}

static void test_bad_tensor_records(void **state)
{
    (void)state;
    tspec ok = {.numel = 6, .nd = 2, .shape = {2, 3}, .stride = {3, 1}};
    expect_tensor(&ok, 24, MF_OK, NULL);
    tspec s = ok;
    s.off = -1;
    expect_tensor(&s, 24, MF_ERR_FORMAT, "negative storage offset");
    s = ok, s.stride[0] = -3;
    expect_tensor(&s, 24, MF_ERR_FORMAT, "negative tensor stride");
    s = ok, s.shape[1] = -1;
    expect_tensor(&s, 24, MF_ERR_FORMAT, "negative tensor size");
    s = ok, s.stride[0] = 4; /* last element index 4 + 2 = 6 >= numel */
    expect_tensor(&s, 24, MF_ERR_FORMAT, "outside storage");
    s = ok, s.off = 1;
    expect_tensor(&s, 24, MF_ERR_FORMAT, "outside storage");
    s = ok, s.numel = 100; /* storage bigger than its record */
    expect_tensor(&s, 24, MF_ERR_FORMAT, "exceeds its record");
    s = ok, s.numel = INT64_MAX;
    expect_tensor(&s, 24, MF_ERR_FORMAT, "exceeds its record");
    s = ok, s.stride[0] = INT64_MAX, s.shape[0] = 5;
    expect_tensor(&s, 24, MF_ERR_FORMAT, "overflow");
    s = ok, s.key = "7";
    expect_tensor(&s, 24, MF_ERR_MISSING, "arc/data/7");
    s = ok, s.storage = "ComplexFloatStorage";
    expect_tensor(&s, 24, MF_ERR_UNSUPPORTED, "ComplexFloatStorage");
    s = ok, s.storage = "QInt8Storage";
    expect_tensor(&s, 24, MF_ERR_UNSUPPORTED, "QInt8Storage");
    s = ok, s.nd = 9;
    for (int i = 0; i < 9; i++)
        s.shape[i] = 1, s.stride[i] = 1;
    expect_tensor(&s, 24, MF_ERR_UNSUPPORTED, "dimensions");
    /* zero-element tensors are fine, even on an empty storage */
    s = ok, s.numel = 0, s.shape[0] = 0;
    expect_tensor(&s, 0, MF_OK, NULL);
    /* v3: untyped storage (numel in bytes) + dtype argument */
    tspec v3 = {.v3 = 1, .smod = "torch.storage", .storage = "UntypedStorage", .dtype = "bfloat16", .numel = 12,
                .nd = 1, .shape = {6}, .stride = {1}};
    expect_tensor(&v3, 12, MF_OK, NULL);
    v3.shape[0] = 7;
    expect_tensor(&v3, 12, MF_ERR_FORMAT, "outside storage");
    v3.shape[0] = 6, v3.dtype = "float8_e4m3fn";
    expect_tensor(&v3, 12, MF_ERR_UNSUPPORTED, "float8_e4m3fn");
}

static void expect_open_fail(const char *path, int code, const char *needle)
{
    mf_torchfile tf;
    mf_error_clear();
    int rc = mf_torchfile_open(&tf, path, 0);
    if (rc == MF_OK)
        mf_torchfile_close(&tf);
    if (rc != code)
        fail_msg("%s: expected %d, got %d (%s)", path, code, rc, mf_error());
    if (!strstr(mf_error(), path) || (needle && !strstr(mf_error(), needle)))
        fail_msg("message '%s' lacks the path or '%s'", mf_error(), needle ? needle : "");
    assert_int_equal(tf.fd, -1);
}

static void test_bad_files(void **state)
{
    (void)state;
    tspec ok = {.numel = 6, .nd = 2, .shape = {2, 3}, .stride = {3, 1}};
    us_pickle pk = {0};
    tensor_pickle(&pk, &ok);
    expect_open_fail(write_pt("big.pt", &pk, 24, "big"), MF_ERR_UNSUPPORTED, "big-endian");
    mf_torchfile tf;
    open_ok(&tf, write_pt("little.pt", &pk, 24, "little"));
    free(pk.b);
    mf_torchfile_close(&tf);
    /* legacy (pre-1.6) torch.save */
    const char *legacy = us_tmp("legacy.pt");
    assert_int_equal(us_write_file(legacy, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15), 0);
    expect_open_fail(legacy, MF_ERR_UNSUPPORTED, "legacy");
    expect_open_fail(us_tmp("does-not-exist.pt"), MF_ERR_MISSING, "open");
    /* no data.pkl; a broken pickle */
    const char *p = us_tmp("nopkl.pt");
    us_zip_item only[] = {{"arc/data/0", "abcd", 4, 0, 0}};
    assert_int_equal(us_write_zip(p, only, 1, 1), 0);
    expect_open_fail(p, MF_ERR_MISSING, "data.pkl");
    us_pickle bad = {0};
    us_pk_ops(&bad, "\x80\x02(((((I0\n.");
    expect_open_fail(write_pt("badpkl.pt", &bad, 0, NULL), MF_ERR_UNSUPPORTED, "opcode 0x49");
    free(bad.b);
    /* pickle size cap */
    assert_int_equal(mf_torchfile_open(&tf, us_data(SAMPLE), 100), MF_ERR_LIMIT);
    assert_int_equal(tf.fd, -1);
    /* truncated real file at many cut points */
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE), &len);
    assert_non_null(data);
    const char *cut = us_tmp("cut.pt");
    for (size_t c = 0; c < len; c += 13) {
        assert_int_equal(us_write_file(cut, data, c), 0);
        int rc = mf_torchfile_open(&tf, cut, 0);
        assert_true(rc < 0);
        assert_non_null(strstr(mf_error(), cut));
    }
    free(data);
}

/* open_window over an archive embedded in a larger file */
static void test_window(void **state)
{
    (void)state;
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE), &len);
    assert_non_null(data);
    uint8_t *big = calloc(1, len + 4096);
    memcpy(big + 4096, data, len);
    const char *p = us_tmp("embedded.bin");
    assert_int_equal(us_write_file(p, big, len + 4096), 0);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    mf_torchfile tf, ref;
    assert_int_equal(mf_torchfile_open_window(&tf, fd, p, 4096, len, 0), MF_OK);
    assert_int_equal(tf.fd, fd); /* borrowed, not dup'ed */
    open_ok(&ref, us_data(SAMPLE));
    mf_tensor a, b;
    tensor_ok(&tf, mf_pv_dict_get(tf.root, "slice"), "slice", &a);
    tensor_ok(&ref, mf_pv_dict_get(ref.root, "slice"), "slice", &b);
    assert_int_equal(a.offset, b.offset + 4096);
    float f;
    assert_int_equal(pread(tf.fd, &f, 4, (off_t)a.offset), 4);
    assert_true(f == 8.0f);
    mf_torchfile_close(&tf);
    assert_true(fcntl(fd, F_GETFD) >= 0); /* tf did not close the borrowed fd */
    close(fd);
    mf_torchfile_close(&ref);
    free(big);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch2x_sample),
        cmocka_unit_test(test_megatron_rank_file),
        cmocka_unit_test(test_distopt_shared_buffer),
        cmocka_unit_test(test_generated_dtypes_and_views),
        cmocka_unit_test(test_bad_tensor_records),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
