/* Unit tests for the expected-shape logic (core/shape_check.c): the size of every rule
 * dimension from the args, the per-rank shape of each split kind, and the check of a
 * source's shards (torch) or global shape (torch_dist) with its one-line message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "shape_check.h"

/* Sizes chosen pairwise distinct so a wrong dimension cannot pass by accident. */
static mf_model model(void)
{
    mf_model m;
    memset(&m, 0, sizeof(m));
    m.hidden = 64;
    m.ffn = 100;
    m.heads = 8;
    m.groups = 2;
    m.head_dim = 18;
    m.padded_vocab = 1024;
    m.swiglu = 1;
    m.num_experts = 6;
    m.moe_ffn = 40;
    m.shared_ffn = 56;
    m.mla_dims.q_lora_rank = 24;
    m.mla_dims.kv_lora_rank = 20;
    m.mla_dims.qk_head_dim = 12;
    m.mla_dims.qk_pos_dim = 5;
    m.mla_dims.v_head_dim = 10;
    return m;
}

static mf_rule rule(mf_split split, mf_dim rows, mf_dim cols)
{
    mf_rule r = { "hf", { "src" }, split, MF_WHEN_ALWAYS, rows, cols, MF_DTYPE_SHOWN };
    return r;
}

static void expect_shape(const mf_shape *s, int ndim, int64_t d0, int64_t d1)
{
    assert_int_equal(s->ndim, ndim);
    assert_int_equal(s->d[0], d0);
    if (ndim == 2)
        assert_int_equal(s->d[1], d1);
}

static void test_dim_sizes(void **state)
{
    (void)state;
    mf_model m = model();
    assert_int_equal(mf_dim_size(&m, MF_D_NONE), 0);
    assert_int_equal(mf_dim_size(&m, MF_D_ONE), 1);
    assert_int_equal(mf_dim_size(&m, MF_D_HIDDEN), 64);
    assert_int_equal(mf_dim_size(&m, MF_D_HIDDEN_X2), 128);
    assert_int_equal(mf_dim_size(&m, MF_D_FC1), 200);
    assert_int_equal(mf_dim_size(&m, MF_D_FFN), 100);
    assert_int_equal(mf_dim_size(&m, MF_D_MOE_FC1), 80);
    assert_int_equal(mf_dim_size(&m, MF_D_MOE_FFN), 40);
    assert_int_equal(mf_dim_size(&m, MF_D_SHARED_FC1), 112);
    assert_int_equal(mf_dim_size(&m, MF_D_SHARED_FFN), 56);
    assert_int_equal(mf_dim_size(&m, MF_D_QKV), (8 + 2 * 2) * 18);
    assert_int_equal(mf_dim_size(&m, MF_D_ATTN_OUT), 8 * 18);
    assert_int_equal(mf_dim_size(&m, MF_D_HEAD_DIM), 18);
    assert_int_equal(mf_dim_size(&m, MF_D_VOCAB), 1024);
    assert_int_equal(mf_dim_size(&m, MF_D_EXPERTS), 6);
    assert_int_equal(mf_dim_size(&m, MF_D_Q_LORA), 24);
    assert_int_equal(mf_dim_size(&m, MF_D_KV_A), 25);
    assert_int_equal(mf_dim_size(&m, MF_D_KV_LORA), 20);
    assert_int_equal(mf_dim_size(&m, MF_D_MLA_Q), 8 * 17);
    assert_int_equal(mf_dim_size(&m, MF_D_MLA_KV), 8 * 22);
    m.mla = 1;   /* MLA's output projection reads heads x v_head_dim */
    assert_int_equal(mf_dim_size(&m, MF_D_ATTN_OUT), 80);
    m.swiglu = 0;
    assert_int_equal(mf_dim_size(&m, MF_D_FC1), 100);
}

static void test_global_shapes(void **state)
{
    (void)state;
    mf_model m = model();
    mf_rule r = rule(MF_SPLIT_REPL, MF_D_HIDDEN, MF_D_NONE);
    mf_shape g = mf_shape_global(&m, &r);
    expect_shape(&g, 1, 64, 0);
    r = rule(MF_SPLIT_GLU_GATE, MF_D_FC1, MF_D_HIDDEN);
    g = mf_shape_global(&m, &r);
    expect_shape(&g, 2, 200, 64);
    r = rule(MF_SPLIT_QKV_Q, MF_D_QKV, MF_D_NONE);   /* the fused QKV bias */
    g = mf_shape_global(&m, &r);
    expect_shape(&g, 1, 216, 0);
}

/* shard shape of rule (split, rows, cols) over n ranks */
static int shard_of(const mf_model *m, mf_split split, mf_dim rows, mf_dim cols, int n, mf_shape *out)
{
    mf_rule r = rule(split, rows, cols);
    mf_shape g = mf_shape_global(m, &r);
    mf_error_clear();
    return mf_shape_shard(m, split, &g, n, "decoder.layers.3.x.weight", out);
}

static void test_shard_per_split_kind(void **state)
{
    (void)state;
    mf_model m = model();
    mf_shape s;
    /* replicated: every rank holds the full tensor */
    assert_int_equal(shard_of(&m, MF_SPLIT_REPL, MF_D_EXPERTS, MF_D_HIDDEN, 4, &s), MF_OK);
    expect_shape(&s, 2, 6, 64);
    /* column-parallel: rows / n */
    assert_int_equal(shard_of(&m, MF_SPLIT_DIM0, MF_D_MLA_KV, MF_D_KV_LORA, 4, &s), MF_OK);
    expect_shape(&s, 2, 44, 20);
    /* row-parallel: cols / n; its 1-D bias is replicated */
    assert_int_equal(shard_of(&m, MF_SPLIT_DIM1, MF_D_HIDDEN, MF_D_FFN, 4, &s), MF_OK);
    expect_shape(&s, 2, 64, 25);
    assert_int_equal(shard_of(&m, MF_SPLIT_DIM1, MF_D_HIDDEN, MF_D_NONE, 4, &s), MF_OK);
    expect_shape(&s, 1, 64, 0);
    /* fused QKV: rows / n, for every one of the three rules reading it */
    for (mf_split q = MF_SPLIT_QKV_Q; q <= MF_SPLIT_QKV_V; q++) {
        assert_int_equal(shard_of(&m, q, MF_D_QKV, MF_D_HIDDEN, 2, &s), MF_OK);
        expect_shape(&s, 2, 108, 64);
    }
    /* gated fc1: [gate_t; up_t] per rank, both halves */
    assert_int_equal(shard_of(&m, MF_SPLIT_GLU_GATE, MF_D_FC1, MF_D_HIDDEN, 4, &s), MF_OK);
    expect_shape(&s, 2, 50, 64);
    assert_int_equal(shard_of(&m, MF_SPLIT_GLU_UP, MF_D_MOE_FC1, MF_D_HIDDEN, 2, &s), MF_OK);
    expect_shape(&s, 2, 40, 64);
    /* vocab: padded rows / n */
    assert_int_equal(shard_of(&m, MF_SPLIT_VOCAB, MF_D_VOCAB, MF_D_HIDDEN, 8, &s), MF_OK);
    expect_shape(&s, 2, 128, 64);
    /* MLA down-projection, split case */
    assert_int_equal(shard_of(&m, MF_SPLIT_AUTO0, MF_D_Q_LORA, MF_D_HIDDEN, 2, &s), MF_OK);
    expect_shape(&s, 2, 12, 64);
    /* one rank: the global shape whatever the split */
    assert_int_equal(shard_of(&m, MF_SPLIT_GLU_GATE, MF_D_FC1, MF_D_HIDDEN, 1, &s), MF_OK);
    expect_shape(&s, 2, 200, 64);
}

static void test_shard_indivisible(void **state)
{
    (void)state;
    mf_model m = model();
    mf_shape s;
    /* ffn 100 over 8 ranks: 25 rows per rank cannot hold whole [gate; up] pairs */
    assert_int_equal(shard_of(&m, MF_SPLIT_GLU_GATE, MF_D_FC1, MF_D_HIDDEN, 8, &s), MF_ERR_INCONSISTENT);
    assert_non_null(strstr(mf_error(), "decoder.layers.3.x.weight"));
    assert_non_null(strstr(mf_error(), "gate/up"));
    /* 8 ranks split 216 QKV rows evenly (a group is cut: fine for the global concat) */
    assert_int_equal(shard_of(&m, MF_SPLIT_QKV_K, MF_D_QKV, MF_D_HIDDEN, 8, &s), MF_OK);
    expect_shape(&s, 2, 27, 64);
    /* 3 ranks split neither 80 columns nor 1024 vocab rows */
    assert_int_equal(shard_of(&m, MF_SPLIT_DIM1, MF_D_HIDDEN, MF_D_MOE_FC1, 3, &s), MF_ERR_INCONSISTENT);
    assert_int_equal(shard_of(&m, MF_SPLIT_VOCAB, MF_D_VOCAB, MF_D_HIDDEN, 3, &s), MF_ERR_INCONSISTENT);
}

/* ---- mf_shape_check_source on a hand-built index ---- */

static char path0[] = "/ck/iter_0000010/mp_rank_00_000/model_optim_rng.pt";
static char path1[] = "/ck/iter_0000010/mp_rank_01_000/model_optim_rng.pt";
static char fc1_name[] = "decoder.layers.0.mlp.linear_fc1.weight";

static void init_ckpt(mf_checkpoint *c, mf_rankfile *files)
{
    memset(c, 0, sizeof(*c));
    memset(files, 0, 2 * sizeof(*files));
    files[0].path = path0;
    files[1].path = path1;
    c->files = files;
    c->n_files = 2;
    c->iter_dir = (char *)"/ck/iter_0000010";
    c->model = model();
}

static void set_shard(mf_shard *sh, int file, int ndim, int64_t d0, int64_t d1)
{
    memset(sh, 0, sizeof(*sh));
    sh->file = file;
    sh->t.ndim = ndim;
    sh->t.shape[0] = d0;
    sh->t.shape[1] = d1;
}

static void expect_refused(const mf_checkpoint *c, const mf_rule *r, const mf_source *s, const char *const *needles)
{
    mf_error_clear();
    assert_int_equal(mf_shape_check_source(c, r, s), MF_ERR_INCONSISTENT);
    for (int i = 0; needles[i]; i++)
        if (!strstr(mf_error(), needles[i]))
            fail_msg("message '%s' lacks '%s'", mf_error(), needles[i]);
}

static void test_check_torch_shards(void **state)
{
    (void)state;
    mf_checkpoint c;
    mf_rankfile files[2];
    mf_shard sh[2];
    init_ckpt(&c, files);
    mf_source s = { .name = fc1_name, .shards = sh, .n_shards = 2 };
    mf_rule r = rule(MF_SPLIT_GLU_GATE, MF_D_FC1, MF_D_HIDDEN);
    set_shard(&sh[0], 0, 2, 100, 64);
    set_shard(&sh[1], 1, 2, 100, 64);
    assert_int_equal(mf_shape_check_source(&c, &r, &s), MF_OK);
    /* the case: the total is right, the cut is not */
    set_shard(&sh[0], 0, 2, 92, 64);
    set_shard(&sh[1], 1, 2, 108, 64);
    expect_refused(&c, &r, &s, (const char *const[]){ path0, fc1_name, "[92, 64]", "[100, 64]", "tp rank 0 of 2", NULL });
    /* shard 0 right, shard 1 reshaped: the sibling is named */
    set_shard(&sh[0], 0, 2, 100, 64);
    set_shard(&sh[1], 1, 2, 64, 100);
    expect_refused(&c, &r, &s, (const char *const[]){ path1, "[64, 100]", "[100, 64]", "tp rank 1 of 2", NULL });
    /* reshaped the same way in every rank */
    set_shard(&sh[0], 0, 2, 50, 128);
    set_shard(&sh[1], 1, 2, 50, 128);
    expect_refused(&c, &r, &s, (const char *const[]){ path0, "[50, 128]", NULL });
    /* a missing shard is skipped here (coverage reports it) */
    set_shard(&sh[0], 0, 2, 100, 64);
    sh[1].file = -1;
    assert_int_equal(mf_shape_check_source(&c, &r, &s), MF_OK);
    /* a 1-D norm given 2-D, replicated: every rank is checked */
    mf_rule norm = rule(MF_SPLIT_REPL, MF_D_HIDDEN, MF_D_NONE);
    set_shard(&sh[0], 0, 1, 64, 0);
    set_shard(&sh[1], 1, 2, 64, 1);
    expect_refused(&c, &norm, &s, (const char *const[]){ path1, "[64, 1]", "[64]", NULL });
}

static void test_check_auto0(void **state)
{
    (void)state;
    mf_checkpoint c;
    mf_rankfile files[2];
    mf_shard sh[2];
    init_ckpt(&c, files);
    mf_source s = { .name = fc1_name, .shards = sh, .n_shards = 2 };
    mf_rule r = rule(MF_SPLIT_AUTO0, MF_D_Q_LORA, MF_D_HIDDEN);
    set_shard(&sh[0], 0, 2, 24, 64);   /* replicated */
    set_shard(&sh[1], 1, 2, 24, 64);
    assert_int_equal(mf_shape_check_source(&c, &r, &s), MF_OK);
    set_shard(&sh[0], 0, 2, 12, 64);   /* split */
    set_shard(&sh[1], 1, 2, 12, 64);
    assert_int_equal(mf_shape_check_source(&c, &r, &s), MF_OK);
    set_shard(&sh[1], 1, 2, 24, 64);   /* mixed: the sibling disagrees */
    expect_refused(&c, &r, &s, (const char *const[]){ path1, "[24, 64]", "[12, 64]", NULL });
}

static void test_check_positioned(void **state)
{
    (void)state;
    mf_checkpoint c;
    mf_rankfile files[2];
    mf_shard sh[1];
    init_ckpt(&c, files);
    set_shard(&sh[0], 0, 2, 100, 64);
    mf_source s = { .name = fc1_name, .shards = sh, .n_shards = 1, .positioned = 1, .grows = 200, .gcols = 64 };
    mf_rule r = rule(MF_SPLIT_GLU_UP, MF_D_FC1, MF_D_HIDDEN);
    assert_int_equal(mf_shape_check_source(&c, &r, &s), MF_OK);
    s.grows = 256;
    expect_refused(&c, &r, &s, (const char *const[]){ "/ck/iter_0000010/.metadata", fc1_name, "[256, 64]", "[200, 64]", NULL });
    /* a 1-D global tensor */
    mf_rule norm = rule(MF_SPLIT_REPL, MF_D_HIDDEN, MF_D_NONE);
    set_shard(&sh[0], 0, 1, 64, 0);
    s.grows = 64;
    s.gcols = 1;
    assert_int_equal(mf_shape_check_source(&c, &norm, &s), MF_OK);
    s.grows = 60;
    expect_refused(&c, &norm, &s, (const char *const[]){ "[60]", "[64]", NULL });
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dim_sizes),          cmocka_unit_test(test_global_shapes),
        cmocka_unit_test(test_shard_per_split_kind), cmocka_unit_test(test_shard_indivisible),
        cmocka_unit_test(test_check_torch_shards), cmocka_unit_test(test_check_auto0),
        cmocka_unit_test(test_check_positioned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
