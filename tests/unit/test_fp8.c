/* The FP8 quantizer (e4m3 round-to-nearest-even corner cases, against a brute-force nearest
 * search), the block factors (fp8 and ue8m0), the block-scale cache (LRU by bytes), and the
 * laziness of FP8 reads through a session (only the block rows a read touches are computed). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"
#include "mcorefs/view.h"
#include "unit_support.h"

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* The e4m3fn value of code c from the definition (c & 0x7f < 0x7f). */
static double e4m3_value(int c)
{
    int e = (c >> 3) & 15, m = c & 7;
    double v = e == 0 ? m * ldexp(1.0, -9) : (1.0 + m / 8.0) * ldexp(1.0, e - 7);
    return (c & 0x80) ? -v : v;
}

/* Brute force: the nearest of the 127 magnitudes, ties to the even code; beyond 464 NaN. */
static uint8_t nearest_e4m3(float x)
{
    double a = fabs((double)x);
    uint8_t sign = signbit(x) ? 0x80 : 0;
    if (isnan(x) || a > 464.0)
        return sign | 0x7f;
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c < 0x7f; c++) {
        double d = fabs(e4m3_value(c) - a);
        if (d < bd || (d == bd && (c & 1) == 0)) {
            bd = d;
            best = c;
        }
    }
    return sign | (uint8_t)best;
}

static void test_e4m3_corners(void **state)
{
    (void)state;
    assert_int_equal(mf_e4m3_from_f32(0.0f), 0x00);
    assert_int_equal(mf_e4m3_from_f32(-0.0f), 0x80);
    assert_int_equal(mf_e4m3_from_f32(448.0f), 0x7e);          /* the largest finite value */
    assert_int_equal(mf_e4m3_from_f32(-448.0f), 0xfe);
    assert_int_equal(mf_e4m3_from_f32(464.0f), 0x7e);          /* tie between 448 and 480: even */
    assert_int_equal(mf_e4m3_from_f32(nextafterf(464.0f, 1e9f)), 0x7f);   /* rounds to 480: NaN */
    assert_int_equal(mf_e4m3_from_f32(480.0f), 0x7f);
    assert_int_equal(mf_e4m3_from_f32(INFINITY), 0x7f);
    assert_int_equal(mf_e4m3_from_f32(-INFINITY), 0xff);
    assert_int_equal(mf_e4m3_from_f32(NAN) & 0x7f, 0x7f);
    assert_int_equal(mf_e4m3_from_f32(1.0f), 0x38);
    assert_int_equal(mf_e4m3_from_f32(1.0625f), 0x38);         /* 1 + 1/16: tie, to even 1.0 */
    assert_int_equal(mf_e4m3_from_f32(1.1875f), 0x3a);         /* 1 + 3/16: tie, to even 1.25 */
    assert_int_equal(mf_e4m3_from_f32(nextafterf(1.0625f, 2.0f)), 0x39);
    assert_int_equal(mf_e4m3_from_f32(1.9375f), 0x40);         /* carry into the exponent: 2.0 */
    /* subnormals: m * 2^-9 */
    assert_int_equal(mf_e4m3_from_f32(0x1p-9f), 0x01);
    assert_int_equal(mf_e4m3_from_f32(0x1p-10f), 0x00);        /* half the smallest: tie to 0 */
    assert_int_equal(mf_e4m3_from_f32(nextafterf(0x1p-10f, 1.0f)), 0x01);
    assert_int_equal(mf_e4m3_from_f32(3 * 0x1p-10f), 0x02);    /* 1.5 * 2^-9: tie, to even 2 */
    assert_int_equal(mf_e4m3_from_f32(5 * 0x1p-10f), 0x02);    /* 2.5 * 2^-9: tie, to even 2 */
    assert_int_equal(mf_e4m3_from_f32(7 * 0x1p-9f), 0x07);     /* the largest subnormal */
    assert_int_equal(mf_e4m3_from_f32(15 * 0x1p-10f), 0x08);   /* 7.5 * 2^-9: tie, to 2^-6 */
    assert_int_equal(mf_e4m3_from_f32(0x1p-6f), 0x08);         /* the smallest normal */
    assert_int_equal(mf_e4m3_from_f32(-3 * 0x1p-10f), 0x82);
    assert_int_equal(mf_e4m3_from_f32(1e-30f), 0x00);
    assert_int_equal(mf_e4m3_from_f32(-f32_of(1)), 0x80);      /* fp32 subnormal */
    /* every code decodes to its value and encodes back */
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f) {
            assert_true(isnan(mf_e4m3_to_f32((uint8_t)c)));
            continue;
        }
        assert_true((double)mf_e4m3_to_f32((uint8_t)c) == e4m3_value(c));
        assert_int_equal(mf_e4m3_from_f32(mf_e4m3_to_f32((uint8_t)c)), c);
    }
}

/* Every fp32 magnitude bit pattern from 2^-12 to 512 in steps of 4093 ulps, both signs, and
 * every midpoint between neighbouring codes +- one ulp. */
static void test_e4m3_brute_force(void **state)
{
    (void)state;
    /* mf_fp8_quantize (the read path's branchless encoder, here with multiplier 1) must agree */
    enum { N = 4096 };
    float xs[N];
    uint8_t qs[N];
    size_t n = 0;
    for (uint32_t u = bits(0x1p-12f); u < bits(512.0f); u += 4093) {
        float x = f32_of(u);
        assert_int_equal(mf_e4m3_from_f32(x), nearest_e4m3(x));
        assert_int_equal(mf_e4m3_from_f32(-x), nearest_e4m3(-x));
        if (x <= 464.0f && n + 2 <= N) {
            xs[n++] = x;
            xs[n++] = -x;
        }
    }
    for (int c = 0; c < 0x7e; c++) {
        float mid = (float)((e4m3_value(c) + e4m3_value(c + 1)) / 2);
        float around[3] = { nextafterf(mid, 0.0f), mid, nextafterf(mid, 1e9f) };
        for (int k = 0; k < 3; k++) {
            assert_int_equal(mf_e4m3_from_f32(around[k]), nearest_e4m3(around[k]));
            if (n < N && around[k] <= 464.0f)
                xs[n++] = around[k];
        }
    }
    float specials[] = { 0.0f, -0.0f, 0x1p-10f, 3 * 0x1p-10f, 15 * 0x1p-10f, -f32_of(1), 1e-30f, 448.0f, 464.0f };
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]) && n < N; k++)
        xs[n++] = specials[k];
    assert_true(n > 3000);
    assert_int_equal(mf_fp8_quantize(xs, n, 1.0f, qs), 0);
    for (size_t k = 0; k < n; k++)
        if (qs[k] != mf_e4m3_from_f32(xs[k]))
            fail_msg("quantize(%a) = 0x%02x, encoder 0x%02x", (double)xs[k], qs[k], mf_e4m3_from_f32(xs[k]));
    /* and over every 1021st fp32 magnitude from 0 (fp32 subnormals included) up to 480, both signs */
    uint32_t u = 0;
    while (u < bits(480.0f)) {
        for (n = 0; n < N && u < bits(480.0f); u += 1021) {
            xs[n++] = f32_of(u);
            xs[n++] = -f32_of(u);
        }
        mf_fp8_quantize(xs, n, 1.0f, qs);
        for (size_t k = 0; k < n; k++)
            if (qs[k] != mf_e4m3_from_f32(xs[k]))
                fail_msg("quantize(%a) = 0x%02x, encoder 0x%02x", (double)xs[k], qs[k], mf_e4m3_from_f32(xs[k]));
    }
    /* every bf16 value up to 448 in magnitude, quantized straight from its bits (the read path
     * for bf16 sources), multiplied by 0.75 so that ties and subnormals come up too */
    uint16_t hs[N];
    float tmp[N];
    uint32_t h = 0;
    while (h < 0x10000u) {
        for (n = 0; n < N && h < 0x10000u; h++)
            if ((h & 0x7fffu) <= 0x43e0u)   /* |v| <= 448 */
                hs[n++] = (uint16_t)h;
        assert_int_equal(mf_fp8_quantize_raw(MF_DT_BF16, (const uint8_t *)hs, n, 0.75f, qs, tmp), 0);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(qs[k], mf_e4m3_from_f32(f32_of((uint32_t)hs[k] << 16) * 0.75f));
    }
    float beyond[2] = { 1.0f, nextafterf(464.0f, 1e9f) };
    assert_int_equal(mf_fp8_quantize(beyond, 2, 1.0f, qs), -1);
}

static void test_block_factors(void **state)
{
    (void)state;
    float mult, sinv;
    mf_fp8_block_factors(448.0f, MF_QUANT_FP8, &mult, &sinv);
    assert_true(mult == 1.0f && sinv == 1.0f);
    mf_fp8_block_factors(3.0f, MF_QUANT_FP8, &mult, &sinv);
    assert_true(sinv == 3.0f / 448.0f && mult == (1.0f / 3.0f) * 448.0f);
    assert_true(mult * 3.0f <= 448.0f * (1 + 0x1p-23f));
    /* ue8m0: amax / 448 rounded up to a power of two; the multiplier its exact inverse */
    mf_fp8_block_factors(449.0f, MF_QUANT_FP8_UE8M0, &mult, &sinv);
    assert_true(sinv == 2.0f && mult == 0.5f);
    mf_fp8_block_factors(448.0f, MF_QUANT_FP8_UE8M0, &mult, &sinv);
    assert_true(sinv == 1.0f && mult == 1.0f);
    mf_fp8_block_factors(224.0f, MF_QUANT_FP8_UE8M0, &mult, &sinv);
    assert_true(sinv == 0.5f && mult == 2.0f);
    mf_fp8_block_factors(MF_FP8_AMAX_MIN, MF_QUANT_FP8_UE8M0, &mult, &sinv);
    assert_true(sinv == 0x1p-22f && sinv >= MF_FP8_AMAX_MIN / 448.0f);
    /* amax: NaN and infinities refused, -0 and signs ignored */
    float amax = 0.0f, xs[4] = { -0.0f, -2.5f, 1.0f, 2.0f };
    assert_int_equal(mf_fp8_amax_update(xs, 4, &amax), 0);
    assert_true(amax == 2.5f);
    xs[2] = NAN;
    assert_int_equal(mf_fp8_amax_update(xs, 4, &amax), -1);
    xs[2] = -INFINITY;
    assert_int_equal(mf_fp8_amax_update(xs, 4, &amax), -1);
    assert_true(amax == 2.5f);
    /* quantize: within the block's range never NaN; beyond it reported */
    float ys[3] = { 2.5f, -2.5f, 0.1f };
    uint8_t q[3];
    mf_fp8_block_factors(2.5f, MF_QUANT_FP8, &mult, &sinv);
    assert_int_equal(mf_fp8_quantize(ys, 3, mult, q), 0);
    assert_int_equal(q[0], 0x7e);
    assert_int_equal(q[1], 0xfe);
    ys[2] = 2.6f;
    assert_int_equal(mf_fp8_quantize(ys, 3, mult, q), -1);
}

static void test_cache_lru(void **state)
{
    (void)state;
    float a[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, out[8];
    mf_fp8_cache_stats st;
    mf_fp8_cache *c = mf_fp8_cache_new(1000);
    assert_non_null(c);
    assert_int_equal(mf_fp8_cache_get(c, 1, 0, 0, out, 8 * sizeof(float)), 0);
    assert_int_equal(mf_fp8_cache_put(c, 1, 0, a, 8 * sizeof(float)), MF_OK);
    assert_int_equal(mf_fp8_cache_get(c, 1, 0, 0, out, 8 * sizeof(float)), 1);
    assert_memory_equal(out, a, sizeof(a));
    assert_int_equal(mf_fp8_cache_get(c, 1, 1, 0, out, 8 * sizeof(float)), 0);   /* another block row */
    assert_int_equal(mf_fp8_cache_get(c, 2, 0, 0, out, 8 * sizeof(float)), 0);   /* another tensor */
    mf_fp8_cache_get_stats(c, &st);
    size_t one = st.bytes;
    assert_int_equal(st.entries, 1);
    assert_true(one >= 8 * sizeof(float));
    /* fill to the bound: the least recently used goes first; a get refreshes an entry */
    uint32_t fit = (uint32_t)(1000 / one);
    for (uint32_t k = 1; k < fit; k++)
        assert_int_equal(mf_fp8_cache_put(c, 1, k, a, 8 * sizeof(float)), MF_OK);
    mf_fp8_cache_get_stats(c, &st);
    assert_int_equal(st.entries, fit);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(mf_fp8_cache_get(c, 1, 0, 0, out, 8 * sizeof(float)), 1);   /* block row 0 is now the newest */
    assert_int_equal(mf_fp8_cache_put(c, 1, 100, a, 8 * sizeof(float)), MF_OK);
    mf_fp8_cache_get_stats(c, &st);
    assert_int_equal(st.evictions, 1);
    assert_true(st.bytes <= st.max_bytes);
    assert_int_equal(mf_fp8_cache_get(c, 1, 1, 0, out, 8 * sizeof(float)), 0);   /* the oldest went */
    assert_int_equal(mf_fp8_cache_get(c, 1, 0, 0, out, 8 * sizeof(float)), 1);
    assert_int_equal(mf_fp8_cache_get(c, 1, 100, 0, out, 8 * sizeof(float)), 1);
    /* the same key again replaces it; an entry bigger than the bound is not kept */
    a[0] = 42;
    assert_int_equal(mf_fp8_cache_put(c, 1, 100, a, 8 * sizeof(float)), MF_OK);
    assert_int_equal(mf_fp8_cache_get(c, 1, 100, 0, out, 8 * sizeof(float)), 1);
    assert_true(out[0] == 42);
    mf_fp8_cache_get_stats(c, &st);
    uint64_t entries = st.entries;
    float *big = calloc(1000, sizeof(float));
    assert_int_equal(mf_fp8_cache_put(c, 9, 0, big, 1000 * sizeof(float)), MF_OK);
    assert_int_equal(mf_fp8_cache_get(c, 9, 0, 0, big, 1000 * sizeof(float)), 0);
    mf_fp8_cache_get_stats(c, &st);
    assert_int_equal(st.entries, entries);
    free(big);
    mf_fp8_cache_free(c);
}

static uint64_t bytes_read(const mf_session *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->ckpt.n_files; i++)
        n += __atomic_load_n(&s->file_bytes[i], __ATOMIC_RELAXED);
    return n;
}

static const mf_hf_tensor *tensor(const mf_session *s, const char *name)
{
    for (size_t i = 0; i < s->map.n; i++)
        if (strcmp(s->map.tensors[i].name, name) == 0)
            return &s->map.tensors[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

/* A read of part of a weight computes only its block rows, reading their source rows once;
 * later reads of the block row are copies, reads of its scale_inv too; a scale_inv read
 * computes only its own block row, and a weight read of a block row whose amaxes are cached
 * but whose bytes are not reads only the rows asked for. Same bytes as one whole read. */
static void test_lazy_reads(void **state)
{
    (void)state;
    if (!us_have_torch())
        skip();
    char out[1024], ckpt[1100], gen[1200];
    snprintf(out, sizeof out, "%s", us_tmp("llama"));
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", out);
    snprintf(gen, sizeof gen, "%s/../fixtures/mcore_gen.py", us_data(""));
    const char *args[] = { gen, out, NULL };
    assert_int_equal(us_run_python("import runpy, sys\n"
                                   "sys.argv = [sys.argv[1], '--family', 'llama', '--out', sys.argv[2], '--tp', '2',\n"
                                   "            '--dims', '{\"hidden\": 192, \"ffn\": 320}']\n"
                                   "runpy.run_path(sys.argv[0], run_name='__main__')\n", args), 0);
    mf_options o;
    mf_options_init(&o);
    o.true_vocab_size = 1000;
    assert_int_equal(mf_options_apply(&o, "quant=fp8"), 1);
    mf_session *s;
    if (mf_session_open(&s, ckpt, &o) != MF_OK)
        fail_msg("open: %s", mf_error());
    const mf_vfile *f = mf_session_lookup(s, "model.safetensors");
    assert_non_null(f);
    const mf_hf_tensor *w = tensor(s, "model.layers.1.mlp.gate_proj.weight");
    const mf_hf_tensor *sc = tensor(s, "model.layers.1.mlp.gate_proj.weight_scale_inv");
    assert_int_equal(w->dtype, MF_DT_F8_E4M3);
    assert_int_equal(w->shape[0], 320);
    assert_int_equal(w->shape[1], 192);
    assert_int_equal(sc->shape[0], 3);
    assert_int_equal(sc->shape[1], 2);
    uint64_t computed;
    mf_fp8_cache_stats cs;
    char buf[4096];
    const uint64_t row = 192 * 2;   /* source bytes of one row */
    /* 10 bytes of row 130 (block row 1): all 128 rows of that block row, once */
    uint64_t before = bytes_read(s);
    assert_int_equal(mf_session_read(s, f, buf, 10, f->header_len + w->offset + 130 * 192), 10);
    mf_fp8_get_stats(s, &computed, &cs);
    assert_int_equal(computed, 1);
    assert_int_equal(bytes_read(s) - before, 128 * row);
    char first[10];
    memcpy(first, buf, 10);
    /* two rows more of that block row: copies of the block row quantized then, nothing read */
    before = bytes_read(s);
    assert_int_equal(mf_session_read(s, f, buf, 192 * 2, f->header_len + w->offset + 131 * 192), 192 * 2);
    mf_fp8_get_stats(s, &computed, &cs);
    assert_int_equal(computed, 1);
    assert_int_equal(bytes_read(s) - before, 0);
    char rows131[2 * 192];
    memcpy(rows131, buf, sizeof(rows131));
    /* the scale_inv of block row 1: cached, nothing read */
    before = bytes_read(s);
    assert_int_equal(mf_session_read(s, f, buf, 8, f->header_len + sc->offset + 8), 8);
    assert_int_equal(bytes_read(s) - before, 0);
    /* the scale_inv of block row 2 (64 edge rows): that block row only */
    before = bytes_read(s);
    assert_int_equal(mf_session_read(s, f, buf, 4, f->header_len + sc->offset + 16), 4);
    mf_fp8_get_stats(s, &computed, &cs);
    assert_int_equal(computed, 2);
    assert_int_equal(bytes_read(s) - before, 64 * row);
    float sinv2;
    memcpy(&sinv2, buf, 4);
    /* a row of block row 2: its amaxes are cached, its bytes are not: that row only */
    before = bytes_read(s);
    assert_int_equal(mf_session_read(s, f, buf, 100, f->header_len + w->offset + 300 * 192 + 50), 100);
    mf_fp8_get_stats(s, &computed, &cs);
    assert_int_equal(computed, 2);
    assert_int_equal(bytes_read(s) - before, row);
    char row300[100];
    memcpy(row300, buf, sizeof(row300));
    /* the same bytes as one read of the whole tensor on a fresh session */
    mf_session *s2;
    assert_int_equal(mf_session_open(&s2, ckpt, &o), MF_OK);
    const mf_vfile *f2 = mf_session_lookup(s2, "model.safetensors");
    char *all = malloc(w->nbytes);
    assert_int_equal(mf_session_read(s2, f2, all, w->nbytes, f2->header_len + w->offset), (ssize_t)w->nbytes);
    assert_memory_equal(all + 130 * 192, first, 10);
    assert_memory_equal(all + 131 * 192, rows131, sizeof(rows131));
    assert_memory_equal(all + 300 * 192 + 50, row300, sizeof(row300));
    assert_int_equal(mf_session_read(s2, f2, buf, 4, f2->header_len + sc->offset + 16), 4);
    assert_memory_equal(buf, &sinv2, 4);
    free(all);
    mf_session_close(s2);
    memcpy(buf, &sinv2, 4);
    float sinv;
    memcpy(&sinv, buf, 4);
    assert_true(sinv > 0 && isfinite(sinv));
    assert_int_equal(cs.max_bytes, MF_FP8_CACHE_BYTES);
    mf_session_close(s);
    mf_options_free(&o);
}

static void test_options_and_rule(void **state)
{
    (void)state;
    mf_options o;
    mf_options_init(&o);
    assert_int_equal(o.quant, MF_QUANT_NONE);
    assert_int_equal(mf_options_apply(&o, "quant=fp8_ue8m0"), 1);
    assert_int_equal(o.quant, MF_QUANT_FP8_UE8M0);
    assert_true(mf_options_apply(&o, "quant=int4") < 0);
    assert_true(mf_options_apply(&o, "quant") < 0);
    assert_non_null(strstr(mf_options_help(), "quant=fp8"));
    mf_options_free(&o);
    assert_true(mf_fp8_name_quantized("model.layers.3.self_attn.kv_a_proj_with_mqa.weight"));
    assert_true(mf_fp8_name_quantized("model.layers.3.mlp.experts.17.down_proj.weight"));
    assert_true(mf_fp8_name_quantized("model.layers.3.mlp.shared_experts.up_proj.weight"));
    assert_true(mf_fp8_name_quantized("model.layers.3.mlp.shared_expert.gate_proj.weight"));
    assert_true(mf_fp8_name_quantized("model.layers.3.block_sparse_moe.experts.1.w2.weight"));
    assert_false(mf_fp8_name_quantized("model.layers.3.mlp.gate.weight"));
    assert_false(mf_fp8_name_quantized("model.layers.3.mlp.gate.e_score_correction_bias"));
    assert_false(mf_fp8_name_quantized("model.layers.3.mlp.shared_expert_gate.weight"));
    assert_false(mf_fp8_name_quantized("model.layers.3.self_attn.q_proj.bias"));
    assert_false(mf_fp8_name_quantized("model.layers.3.self_attn.q_a_layernorm.weight"));
    assert_false(mf_fp8_name_quantized("model.layers.3.eh_proj.weight"));
    assert_false(mf_fp8_name_quantized("model.layers.3.mlp.experts.gate_up_proj"));
    assert_false(mf_fp8_name_quantized("model.embed_tokens.weight"));
    assert_false(mf_fp8_name_quantized("lm_head.weight"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_corners),
        cmocka_unit_test(test_e4m3_brute_force),
        cmocka_unit_test(test_block_factors),
        cmocka_unit_test(test_cache_lru),
        cmocka_unit_test(test_lazy_reads),
        cmocka_unit_test(test_options_and_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
