/* Unit tests for the Qwen3-Next split kinds (core/placement.c, core/cut.c, core/mapping.c): a
 * synthetic two-layer qwen3_next model at TP 2 — layer 0 a gated delta net, layer 1 gated
 * attention — written to a temp file as Megatron shards it (each rank's in_proj is
 * [q; k; v; z; beta; alpha] of its own heads, conv1d [q; k; v]; linear_qkv per query group
 * [q heads; gate heads; k; v]), gathered and compared with HF's layout built here from
 * transformers' definitions (fix_query_key_value_ordering, q_proj [q_j; gate_j] per head) and
 * the norm conventions (HF x * (1 + w) vs plain Megatron norms). */
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
#include "mcorefs/gather.h"
#include "mcorefs/mapping.h"
#include "source_index.h"
#include "unit_support.h"

/* hidden 8, heads 4, groups 2, head_dim 2 (gated QKV 24 rows), ffn 4, vocab 16;
 * gated delta net: 2 key heads of 2, 4 value heads of 3, kernel 3 */
enum { H = 8, HEADS = 4, GROUPS = 2, HD = 2, FFN = 4, VOCAB = 16, NK = 2, NV = 4, DK = 2, DV = 3, KERNEL = 3, TP = 2 };
enum { QK = NK * DK, VD = NV * DV, IN_ROWS = 2 * QK + 2 * VD + 2 * NV, CONV = 2 * QK + VD, QKV = (2 * HEADS + 2 * GROUPS) * HD };

typedef struct {
    mf_checkpoint c;
    mf_rankfile file;
    mf_options o;
    mf_mapping mp;
    float *data;
    size_t at, cap;
    int next_id;
} synth;

/* A distinct value per source tensor, global row and column (exact in float32). */
static float val(int id, int64_t row, int64_t col)
{
    return (float)(id * 4096 + row * 16 + col) / 8.0f;
}

/* How Megatron shards the global tensor over TP 2: 'r' replicated, '0' rows, '1' columns,
 * 'g' [gate; up] halves, 's' sections (sec, n_sec) each split over the ranks. */
static int add(synth *s, const char *name, int64_t rows, int64_t cols, char how, const int64_t *sec, int n_sec)
{
    int id = s->next_id++;
    int64_t c1 = cols ? cols : 1;
    for (int k = 0; k < TP; k++) {
        int64_t r_rows = how == 'r' || how == '1' ? rows : rows / TP, r_cols = how == '1' ? c1 / TP : c1;
        mf_shard sh = { .file = 0 };
        sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = cols ? 2 : 1, .shape = { r_rows, cols }, .stride = { cols ? r_cols : 1, 1 },
                            .offset = s->at * 4 };
        if (how == '1')
            sh.t.shape[1] = r_cols;
        if (how == 'c')   /* conv1d: [channels, 1, kernel] */
            sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 3, .shape = { r_rows, 1, c1 }, .stride = { c1, c1, 1 },
                                .offset = s->at * 4 };
        for (int64_t r = 0; r < r_rows; r++) {
            int64_t g = r;   /* the global row this shard row holds */
            if (how == '0')
                g = k * r_rows + r;
            else if (how == 'g')
                g = r < r_rows / 2 ? k * (r_rows / 2) + r : rows / 2 + k * (r_rows / 2) + r - r_rows / 2;
            else if (how == 's' || how == 'c') {
                int64_t off = 0, in = r;
                for (int i = 0; i < n_sec; i++) {
                    if (in < sec[i] / TP) {
                        g = off + k * (sec[i] / TP) + in;
                        break;
                    }
                    in -= sec[i] / TP;
                    off += sec[i];
                }
            }
            for (int64_t c = 0; c < r_cols; c++) {
                assert_true(s->at < s->cap);
                s->data[s->at++] = val(id, g, how == '1' ? k * r_cols + c : c);
            }
        }
        assert_int_equal(mf_source_add(&s->c, name, 0, TP, k, &sh), MF_OK);
    }
    return id;
}

/* torch_dist (Megatron's _split_tensor_factory): section i of a sectioned tensor is its own key
 * `<base>.<names[i]>`, global [sec[i], cols] (conv1d: [sec[i], 1, cols]), one chunk per TP rank
 * at row k x sec[i] / TP. Values are those of the legacy shards (global row of [s_0; s_1; ...]);
 * the section `skip` is left out, `extra` rows are added to the last section. */
static int add_dist_sections(synth *s, const char *base, int64_t cols, int conv, const int64_t *sec, int n_sec,
                             int skip, int64_t extra)
{
    static const char *const names[6] = { "query", "key", "value", "z", "beta", "alpha" };
    int id = s->next_id++;
    int64_t off = 0;
    for (int i = 0; i < n_sec; i++) {
        int64_t rows = sec[i] + (i == n_sec - 1 ? extra : 0), part = rows / TP;
        char name[160];
        snprintf(name, sizeof name, "%s.%s", base, names[i]);
        for (int k = 0; k < TP && i != skip; k++) {
            mf_shard sh = { .file = 0, .layer = -1, .expert = -1, .row0 = k * part };
            sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = conv ? 3 : 2, .shape = { part, conv ? 1 : cols, cols },
                                .stride = { cols, cols, 1 }, .offset = s->at * 4 };
            if (!conv)
                sh.t.stride[0] = cols, sh.t.stride[1] = 1;
            for (int64_t r = 0; r < part; r++)
                for (int64_t c = 0; c < cols; c++) {
                    assert_true(s->at < s->cap);
                    s->data[s->at++] = val(id, off + k * part + r, c);
                }
            assert_int_equal(mf_source_add_chunk(&s->c, name, 0, rows, cols, &sh), MF_OK);
        }
        off += sec[i];
    }
    return id;
}

static void synth_init(synth *s)
{
    memset(s, 0, sizeof(*s));
    mf_options_init(&s->o);
    s->c.iter_dir = "iter_0000001";
    s->file.path = "mp_rank_00/model_optim_rng.pt";
    s->c.files = &s->file;
    s->c.n_files = 1;
    s->cap = 8192;
    s->data = calloc(s->cap, sizeof(float));
    s->at = 1;   /* element 0 unused: sources do not start at offset 0 */
    assert_non_null(s->data);
    mf_model *m = &s->c.model;
    m->family = mf_family_find("qwen3_next");
    assert_non_null(m->family);
    m->num_layers = 2;
    m->hidden = H;
    m->heads = HEADS;
    m->groups = GROUPS;
    m->head_dim = HD;
    m->ffn = FFN;
    m->padded_vocab = m->vocab = VOCAB;
    m->swiglu = 1;
    m->attn_output_gate = 1;
    m->gdn = (mf_gdn_dims){ NK, NV, DK, DV, KERNEL };
    m->tp = TP;
    m->pp = m->vpp = m->ep = m->etp = 1;
    m->moe_layer = calloc(2, 1);              /* dense layers (mlp_only_layers) */
    m->mixer_layer = calloc(2, 1);
    assert_non_null(m->moe_layer);
    assert_non_null(m->mixer_layer);
    m->mixer_layer[0] = MF_MIXER_LINEAR_ATTENTION;
}

static void synth_free(synth *s)
{
    mf_mapping_free(&s->mp);
    mf_source_index_free(&s->c);
    mf_model_free(&s->c.model);
    mf_options_free(&s->o);
    free(s->data);
}

typedef struct {
    int in_proj, conv, dt, out_norm, in_norm0, qkv, q_norm;
} ids;

/* How the gated delta net's in_proj and conv1d are stored: legacy TP shards, or torch_dist
 * section keys (DIST_MISSING: without `.value`; DIST_TALL: a section key 2 rows too tall). */
enum { LEGACY, DIST, DIST_MISSING, DIST_TALL };

static ids add_model_as(synth *s, int64_t in_proj_rows, int how)
{
    static const int64_t in_sec[6] = { QK, QK, VD, VD, NV, NV }, conv_sec[3] = { QK, QK, VD };
    ids id;
    add(s, "embedding.word_embeddings.weight", VOCAB, H, '0', NULL, 0);
    add(s, "decoder.final_layernorm.weight", H, 0, 'r', NULL, 0);
    add(s, "output_layer.weight", VOCAB, H, '0', NULL, 0);
    id.in_norm0 = add(s, "decoder.layers.0.input_layernorm.weight", H, 0, 'r', NULL, 0);
    if (how == LEGACY) {
        id.in_proj = add(s, "decoder.layers.0.self_attention.in_proj.weight", in_proj_rows, H, 's', in_sec, 6);
        id.conv = add(s, "decoder.layers.0.self_attention.conv1d.weight", CONV, KERNEL, 'c', conv_sec, 3);
    } else {
        id.in_proj = add_dist_sections(s, "decoder.layers.0.self_attention.in_proj.weight", H, 0, in_sec, 6,
                                       how == DIST_MISSING ? 2 : -1, how == DIST_TALL ? 2 : 0);
        id.conv = add_dist_sections(s, "decoder.layers.0.self_attention.conv1d.weight", KERNEL, 1, conv_sec, 3, -1, 0);
    }
    id.dt = add(s, "decoder.layers.0.self_attention.dt_bias", NV, 0, '0', NULL, 0);
    add(s, "decoder.layers.0.self_attention.A_log", NV, 0, '0', NULL, 0);
    id.out_norm = add(s, "decoder.layers.0.self_attention.out_norm.weight", DV, 0, 'r', NULL, 0);
    add(s, "decoder.layers.0.self_attention.out_proj.weight", H, VD, '1', NULL, 0);
    add(s, "decoder.layers.1.input_layernorm.weight", H, 0, 'r', NULL, 0);
    id.qkv = add(s, "decoder.layers.1.self_attention.linear_qkv.weight", QKV, H, '0', NULL, 0);
    add(s, "decoder.layers.1.self_attention.linear_proj.weight", H, HEADS * HD, '1', NULL, 0);
    id.q_norm = add(s, "decoder.layers.1.self_attention.q_layernorm.weight", HD, 0, 'r', NULL, 0);
    add(s, "decoder.layers.1.self_attention.k_layernorm.weight", HD, 0, 'r', NULL, 0);
    for (int l = 0; l < 2; l++) {
        char n[96];
        snprintf(n, sizeof(n), "decoder.layers.%d.pre_mlp_layernorm.weight", l);
        add(s, n, H, 0, 'r', NULL, 0);
        snprintf(n, sizeof(n), "decoder.layers.%d.mlp.linear_fc1.weight", l);
        add(s, n, 2 * FFN, H, 'g', NULL, 0);
        snprintf(n, sizeof(n), "decoder.layers.%d.mlp.linear_fc2.weight", l);
        add(s, n, H, FFN, '1', NULL, 0);
    }
    return id;
}

static ids add_model(synth *s, int64_t in_proj_rows)
{
    return add_model_as(s, in_proj_rows, LEGACY);
}

static const mf_hf_tensor *find(const synth *s, const char *name)
{
    for (size_t i = 0; i < s->mp.n; i++)
        if (strcmp(s->mp.tensors[i].name, name) == 0)
            return &s->mp.tensors[i];
    fail_msg("no HF tensor %s", name);
    return NULL;
}

/* Gather the whole HF tensor and compare it with want (rows x cols floats), then again in odd
 * slices, so pieces are cut at every offset. */
static void check(const synth *s, int fd, const char *name, const float *want, int64_t n)
{
    const mf_hf_tensor *t = find(s, name);
    mf_io io = { .fds = (int *)&fd };
    assert_int_equal(t->nbytes, (uint64_t)n * 4);
    float *got = calloc((size_t)n, 4);
    assert_int_equal(mf_gather(t, &io, 0, (size_t)t->nbytes, (uint8_t *)got), 0);
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: element %lld is %g, want %g", name, (long long)i, got[i], want[i]);
    for (uint64_t off = 3; off + 13 <= t->nbytes; off += 11) {
        assert_int_equal(mf_gather(t, &io, off, 13, (uint8_t *)got), 0);
        assert_memory_equal(got, (const uint8_t *)want + off, 13);
    }
    free(got);
}

static int write_file(synth *s)
{
    const char *path = us_tmp("qwen3next.bin");
    assert_int_equal(us_write_file(path, s->data, s->at * 4), 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static void build(synth *s)
{
    if (mf_mapping_build(&s->mp, &s->c, &s->o) != MF_OK)
        fail_msg("mapping failed: %s", mf_error());
    assert_int_equal(s->mp.n, 3 + 12 + 11);
}

/* in_proj_qkvz, in_proj_ba and conv1d against HF's layout of the global tensors. */
static void check_gdn_sections(const synth *s, int fd, ids id)
{
    float want[IN_ROWS * H];
    const int vpg = NV / NK;

    /* in_proj_qkvz: per key head g [q_g; k_g; v_g; z_g] of the global [q; k; v; z; beta; alpha] */
    int64_t r = 0;
    for (int g = 0; g < NK; g++) {
        int64_t from[4] = { g * DK, QK + g * DK, 2 * QK + g * vpg * DV, 2 * QK + VD + g * vpg * DV };
        int64_t len[4] = { DK, DK, vpg * DV, vpg * DV };
        for (int part = 0; part < 4; part++)
            for (int64_t i = 0; i < len[part]; i++, r++)
                for (int c = 0; c < H; c++)
                    want[r * H + c] = val(id.in_proj, from[part] + i, c);
    }
    assert_int_equal(r, 2 * QK + 2 * VD);
    assert_int_equal(find(s, "model.layers.0.linear_attn.in_proj_qkvz.weight")->shape[0], r);
    check(s, fd, "model.layers.0.linear_attn.in_proj_qkvz.weight", want, r * H);

    /* in_proj_ba: per key head [beta_g; alpha_g] */
    r = 0;
    for (int g = 0; g < NK; g++)
        for (int part = 0; part < 2; part++)
            for (int i = 0; i < vpg; i++, r++)
                for (int c = 0; c < H; c++)
                    want[r * H + c] = val(id.in_proj, 2 * QK + 2 * VD + part * NV + g * vpg + i, c);
    check(s, fd, "model.layers.0.linear_attn.in_proj_ba.weight", want, r * H);

    /* conv1d [channels, 1, kernel]: the global [q; k; v] channels */
    const mf_hf_tensor *conv = find(s, "model.layers.0.linear_attn.conv1d.weight");
    assert_int_equal(conv->ndim, 3);
    assert_int_equal(conv->shape[0], CONV);
    assert_int_equal(conv->shape[1], 1);
    assert_int_equal(conv->shape[2], KERNEL);
    for (int ch = 0; ch < CONV; ch++)
        for (int k = 0; k < KERNEL; k++)
            want[ch * KERNEL + k] = val(id.conv, ch, k);
    check(s, fd, "model.layers.0.linear_attn.conv1d.weight", want, CONV * KERNEL);
}

static void test_gated_delta_net_sections(void **state)
{
    (void)state;
    synth s;
    synth_init(&s);
    ids id = add_model(&s, IN_ROWS);
    build(&s);
    int fd = write_file(&s);
    float want[IN_ROWS * H];
    check_gdn_sections(&s, fd, id);

    for (int h = 0; h < NV; h++)
        want[h] = val(id.dt, h, 0);
    check(&s, fd, "model.layers.0.linear_attn.dt_bias", want, NV);

    /* norms: plain Megatron norms, HF's RMSNorm x * (1 + w) shows w - 1, the gated norm w */
    for (int c = 0; c < H; c++)
        want[c] = val(id.in_norm0, c, 0) - 1.0f;
    check(&s, fd, "model.layers.0.input_layernorm.weight", want, H);
    for (int c = 0; c < DV; c++)
        want[c] = val(id.out_norm, c, 0);
    check(&s, fd, "model.layers.0.linear_attn.norm.weight", want, DV);
    assert_int_equal(mf_gather_segments(find(&s, "model.layers.0.input_layernorm.weight"), &(mf_io){ .fds = &fd },
                                        0, 4, (mf_segment[4]){ { 0 } }, 4), 0);   /* shifted: never a plain file range */

    /* zero-centred Megatron norms: the RMSNorms as stored, the gated norm w + 1 */
    mf_mapping_free(&s.mp);
    s.c.model.zero_centered_norm = 1;
    build(&s);
    for (int c = 0; c < H; c++)
        want[c] = val(id.in_norm0, c, 0);
    check(&s, fd, "model.layers.0.input_layernorm.weight", want, H);
    for (int c = 0; c < DV; c++)
        want[c] = val(id.out_norm, c, 0) + 1.0f;
    check(&s, fd, "model.layers.0.linear_attn.norm.weight", want, DV);
    close(fd);
    synth_free(&s);
}

static void test_gated_attention_q_proj(void **state)
{
    (void)state;
    synth s;
    synth_init(&s);
    ids id = add_model(&s, IN_ROWS);
    build(&s);
    int fd = write_file(&s);
    float want[QKV * H];
    const int per = HEADS / GROUPS, blk = (2 * per + 2) * HD;
    /* q_proj: head h = g x per + j holds [q_h; gate_h] */
    int64_t r = 0;
    for (int g = 0; g < GROUPS; g++)
        for (int j = 0; j < per; j++)
            for (int part = 0; part < 2; part++)
                for (int i = 0; i < HD; i++, r++)
                    for (int c = 0; c < H; c++)
                        want[r * H + c] = val(id.qkv, g * blk + part * per * HD + j * HD + i, c);
    assert_int_equal(r, 2 * HEADS * HD);
    check(&s, fd, "model.layers.1.self_attn.q_proj.weight", want, r * H);
    for (int which = 0; which < 2; which++) {   /* k, v after the q and gate heads of each group */
        r = 0;
        for (int g = 0; g < GROUPS; g++)
            for (int i = 0; i < HD; i++, r++)
                for (int c = 0; c < H; c++)
                    want[r * H + c] = val(id.qkv, g * blk + (2 * per + which) * HD + i, c);
        check(&s, fd, which ? "model.layers.1.self_attn.v_proj.weight" : "model.layers.1.self_attn.k_proj.weight", want,
              r * H);
    }
    for (int c = 0; c < HD; c++)
        want[c] = val(id.q_norm, c, 0) - 1.0f;
    check(&s, fd, "model.layers.1.self_attn.q_norm.weight", want, HD);
    close(fd);
    synth_free(&s);
}

/* A shard of the wrong size cannot be cut into sections: refused naming the tensor. */
static void test_sections_refused(void **state)
{
    (void)state;
    synth s;
    synth_init(&s);
    add_model(&s, IN_ROWS + 2);
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "decoder.layers.0.self_attention.in_proj.weight"));
    synth_free(&s);
    /* value heads that do not split over TP: every section must */
    synth_init(&s);
    s.c.model.gdn.value_heads = 3;
    s.c.model.gdn.value_head_dim = 4;
    add_model(&s, IN_ROWS);
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "in_proj.weight"));
    synth_free(&s);
}

/* torch_dist stores in_proj and conv1d as one key per section (Megatron's _split_tensor_factory,
 * `.query`, `.key`, ...): the section keys are placed as the global [s_0; s_1; ...] and cut like
 * the legacy shards, giving HF's layout. */
static void test_torch_dist_section_keys(void **state)
{
    (void)state;
    synth s;
    synth_init(&s);
    ids id = add_model_as(&s, IN_ROWS, DIST);
    build(&s);
    int fd = write_file(&s);
    check_gdn_sections(&s, fd, id);
    close(fd);
    synth_free(&s);
}

/* A missing section key, or one of the wrong global size, is refused naming it; a whole
 * positioned in_proj (no section keys) is refused, never cut in an unknown TP order. */
static void test_torch_dist_section_keys_refused(void **state)
{
    (void)state;
    synth s;
    synth_init(&s);
    add_model_as(&s, IN_ROWS, DIST_MISSING);
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_MISSING);
    assert_non_null(strstr(mf_error(), "'decoder.layers.0.self_attention.in_proj.weight.value' (section 3 of 6"));
    synth_free(&s);

    synth_init(&s);
    add_model_as(&s, IN_ROWS, DIST_TALL);
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "'decoder.layers.0.self_attention.in_proj.weight.alpha' (global shape) has shape [6, 8]"));
    synth_free(&s);

    synth_init(&s);
    add(&s, "embedding.word_embeddings.weight", VOCAB, H, '0', NULL, 0);
    add(&s, "decoder.layers.0.input_layernorm.weight", H, 0, 'r', NULL, 0);
    mf_shard sh = { .file = 0 };
    sh.t = (mf_tensor){ .dtype = MF_DT_F32, .ndim = 2, .shape = { IN_ROWS, H }, .stride = { H, 1 }, .offset = 4 };
    assert_int_equal(mf_source_add_chunk(&s.c, "decoder.layers.0.self_attention.in_proj.weight", 0, IN_ROWS, H, &sh), MF_OK);
    assert_int_equal(mf_mapping_build(&s.mp, &s.c, &s.o), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "'decoder.layers.0.self_attention.in_proj.weight': a gated delta net tensor stored whole"));
    synth_free(&s);
}

/* The norm shift rounds once, as torch's `w - 1` does: bf16 through float32. */
static void test_convert_add(void **state)
{
    (void)state;
    uint16_t in[3] = { 0x3f81, 0x4401, 0x3f80 };   /* 1.0078125, 516.0 (ulp 4), 1.0 */
    uint16_t out[3];
    mf_convert_add(MF_DT_BF16, in, MF_DT_BF16, out, 3, -1.0f);
    assert_int_equal(out[0], 0x3c00);   /* 0.0078125 exactly */
    assert_int_equal(out[1], 0x4401);   /* 515 rounds to 516 */
    assert_int_equal(out[2], 0x0000);
    float f[2] = { 1.5f, 3.0f }, g[2];
    mf_convert_add(MF_DT_F32, f, MF_DT_F32, g, 2, 1.0f);
    assert_true(g[0] == 2.5f && g[1] == 4.0f);
    mf_convert_add(MF_DT_BF16, in, MF_DT_F32, g, 1, -1.0f);   /* -o dtype=fp32 */
    assert_true(g[0] == 0.0078125f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gated_delta_net_sections),
        cmocka_unit_test(test_gated_attention_q_proj),
        cmocka_unit_test(test_sections_refused),
        cmocka_unit_test(test_torch_dist_section_keys),
        cmocka_unit_test(test_torch_dist_section_keys_refused),
        cmocka_unit_test(test_convert_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
