/* Unit tests for the family feature table (core/families.c): a family's HF class must fit the
 * args; each feature it needs missing, or each it cannot express present, is refused with a
 * message naming the -o arch= value and the args behind the feature. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/recipe.h"

static uint8_t layers[4], mixers[4];

/* the highest MF_FEAT_* bit, and the router features that only a MoE model has */
#define MF_FEAT_LAST MF_FEAT_GROUP_ROUTING
#define MOE_ROUTING (MF_FEAT_PRE_SOFTMAX | MF_FEAT_TOPK_SCALING | MF_FEAT_GROUP_ROUTING)

/* The feature bits in turn: 1 .. MF_FEAT_LAST, then Qwen3-Next's two (0 after the last). */
static unsigned next_bit(unsigned bit)
{
    if (bit < MF_FEAT_LAST)
        return bit << 1;
    return bit == MF_FEAT_LAST ? MF_FEAT_ATTN_GATE : bit == MF_FEAT_ATTN_GATE ? MF_FEAT_LINEAR_ATTN : 0;
}

/* A model with exactly the features in `feat` (MF_FEAT_*). */
static mf_model model_with(unsigned feat)
{
    mf_model m;
    memset(&m, 0, sizeof(m));
    m.num_layers = 4;
    m.moe_layer = layers;
    m.num_experts = feat & MF_FEAT_MOE ? 8 : 0;
    m.mla = !!(feat & MF_FEAT_MLA);
    m.qk_norm = !!(feat & MF_FEAT_QK_NORM);
    m.qkv_bias = !!(feat & MF_FEAT_QKV_BIAS);
    m.window = feat & MF_FEAT_WINDOW ? 4096 : 0;
    m.window_set = !!(feat & MF_FEAT_WINDOW_SET);
    m.learnable_sinks = !!(feat & MF_FEAT_SINKS);
    if (feat & MF_FEAT_CLAMPED_GEGLU) {   /* gpt-oss's activation */
        m.quick_geglu = 1;
        m.glu_offset = 1.0;
        m.glu_clamp = 7.0;
    }
    m.add_bias_linear = !!(feat & MF_FEAT_LINEAR_BIAS);
    m.moe_pre_softmax = !!(feat & MF_FEAT_PRE_SOFTMAX);
    m.moe_scaling_factor = feat & MF_FEAT_TOPK_SCALING ? 2.5 : 1.0;
    m.moe_num_groups = feat & MF_FEAT_GROUP_ROUTING ? 2 : 0;
    m.shared_ffn = feat & MF_FEAT_SHARED ? 64 : 0;
    m.moe_shared_gate = !!(feat & MF_FEAT_SHARED_GATE);
    m.moe_expert_bias = !!(feat & MF_FEAT_EXPERT_BIAS);
    strcpy(m.score_function, feat & MF_FEAT_SIGMOID ? "sigmoid" : "softmax");
    for (int l = 0; l < 4; l++)
        layers[l] = m.num_experts > 0;
    if (feat & MF_FEAT_DENSE_LAYERS)
        layers[0] = 0;                 /* a dense first layer (DeepSeek's first_k_dense) */
    if (feat & MF_FEAT_DENSE_AFTER_MOE)
        layers[2] = 0;
    m.attn_output_gate = !!(feat & MF_FEAT_ATTN_GATE);
    for (int l = 0; l < 4; l++)   /* Qwen3-Next's pattern: three gated delta net layers, then attention */
        mixers[l] = (uint8_t)(l < 3 ? MF_MIXER_LINEAR_ATTENTION : MF_MIXER_ATTENTION);
    m.mixer_layer = feat & MF_FEAT_LINEAR_ATTN ? mixers : NULL;
    return m;
}

static void test_features_of_model(void **state)
{
    (void)state;
    for (unsigned bit = 1; bit; bit = next_bit(bit)) {
        unsigned want = bit;
        if (bit & (MF_FEAT_SHARED | MF_FEAT_EXPERT_BIAS | MF_FEAT_SIGMOID | MF_FEAT_DENSE_LAYERS | MOE_ROUTING))
            want |= MF_FEAT_MOE;       /* meaningful in a MoE model only */
        if (bit == MF_FEAT_SHARED_GATE)
            want |= MF_FEAT_MOE | MF_FEAT_SHARED;
        if (bit == MF_FEAT_DENSE_AFTER_MOE)
            want |= MF_FEAT_MOE | MF_FEAT_DENSE_LAYERS;
        mf_model m = model_with(want);
        assert_int_equal(mf_model_features(&m), want);
    }
    /* a shared-expert size or sigmoid scores without experts are no feature */
    mf_model m = model_with(0);
    m.shared_ffn = 64;
    strcpy(m.score_function, "sigmoid");
    assert_int_equal(mf_model_features(&m), 0);
}

/* Every family fits a model with exactly what it needs, and each single change of a feature it
 * needs or forbids is refused, naming the arch value as the user wrote it. */
static void test_each_family_each_feature(void **state)
{
    (void)state;
    int families = 0, refusals = 0;
    for (const mf_family *const *f = mf_family_all(); *f; f++, families++) {
        unsigned base = (*f)->needs;
        mf_model m = model_with(base);
        mf_error_clear();
        if (mf_family_check(*f, &m, (*f)->architecture, "args.pt") != MF_OK)
            fail_msg("%s refuses its own features: %s", (*f)->name, mf_error());
        for (unsigned bit = 1; bit; bit = next_bit(bit)) {
            if (!(((*f)->needs | (*f)->forbids) & bit))
                continue;
            unsigned feat = base ^ bit;
            if (feat & (MF_FEAT_SHARED_GATE))
                feat |= MF_FEAT_SHARED;
            if (feat & MF_FEAT_DENSE_AFTER_MOE)
                feat |= MF_FEAT_DENSE_LAYERS;
            if (feat & (MF_FEAT_SHARED | MF_FEAT_EXPERT_BIAS | MF_FEAT_SIGMOID | MF_FEAT_DENSE_LAYERS | MOE_ROUTING))
                feat |= MF_FEAT_MOE;
            if ((feat & MF_FEAT_MOE) == 0)
                feat &= ~(MF_FEAT_SHARED | MF_FEAT_SHARED_GATE | MF_FEAT_EXPERT_BIAS | MF_FEAT_SIGMOID |
                          MF_FEAT_DENSE_LAYERS | MF_FEAT_DENSE_AFTER_MOE | MOE_ROUTING);
            if (feat == base)
                continue;
            m = model_with(feat);
            mf_error_clear();
            if (mf_family_check(*f, &m, (*f)->name, "args.pt") != MF_ERR_UNSUPPORTED)
                fail_msg("%s accepts features 0x%x (its needs 0x%x, forbids 0x%x)", (*f)->name, feat,
                         (*f)->needs, (*f)->forbids);
            char want[64];
            snprintf(want, sizeof(want), "-o arch=%s does not fit", (*f)->name);
            assert_non_null(strstr(mf_error(), want));
            assert_non_null(strstr(mf_error(), "args.pt: "));
            refusals++;
        }
    }
    assert_int_equal(families, 12);
    assert_true(refusals >= 40);
}

static void test_detected_family_message(void **state)
{
    (void)state;
    mf_model m = model_with(MF_FEAT_QK_NORM | MF_FEAT_QKV_BIAS);
    mf_error_clear();
    assert_int_equal(mf_family_check(mf_family_find("qwen3"), &m, NULL, "x.pt"), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "the detected family qwen3 does not fit"));
    assert_non_null(strstr(mf_error(), "q/k/v biases"));
    /* the case: mixtral forced on a dense model */
    m = model_with(0);
    assert_int_equal(mf_family_check(mf_family_find("mixtral"), &m, "mixtral", "x.pt"), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "needs experts"));
    assert_non_null(strstr(mf_error(), "num_experts"));
}

/* GLM's HF class sizes shared experts as n_shared_experts * moe_intermediate_size: a shared
 * size that is no whole number of experts is refused, not rounded down. */
static void test_shared_expert_size_whole(void **state)
{
    (void)state;
    const mf_family *glm = mf_family_find("glm4_moe");
    assert_non_null(glm);
    mf_model m = model_with(glm->needs);
    m.moe_ffn = 32;
    assert_int_equal(mf_family_check(glm, &m, NULL, "x.pt"), MF_OK);
    m.shared_ffn = 48;
    mf_error_clear();
    assert_int_equal(mf_family_check(glm, &m, NULL, "x.pt"), MF_ERR_UNSUPPORTED);
    assert_non_null(strstr(mf_error(), "not a multiple of the expert size"));
    assert_non_null(strstr(mf_error(), "moe_shared_expert_intermediate_size"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_of_model),
        cmocka_unit_test(test_each_family_each_feature),
        cmocka_unit_test(test_detected_family_message),
        cmocka_unit_test(test_shared_expert_size_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
