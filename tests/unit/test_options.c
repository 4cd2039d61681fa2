/* Unit tests for option names: typo suggestions (mf_suggest), the list of option names kept in step
 * with mf_options_apply, and contradictory options refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/options.h"
#include "mcorefs/suggest.h"

static void expect_suggestion(const char *word, const char *want)
{
    const char *got = mf_suggest(word, mf_option_names());
    if (want == NULL) {
        if (got != NULL)
            fail_msg("'%s': suggested %s, expected none", word, got);
        return;
    }
    if (got == NULL || strcmp(got, want) != 0)
        fail_msg("'%s': suggested %s, expected %s", word, got ? got : "(none)", want);
}

static void test_suggestions(void **state)
{
    (void)state;
    expect_suggestion("skip-mtp", "skip_mtp");          /* '-' for '_' */
    expect_suggestion("SKIP_MTP", "skip_mtp");          /* case */
    expect_suggestion("iteraton", "iteration");         /* a letter missing */
    expect_suggestion("itreation", "iteration");        /* neighbours swapped */
    expect_suggestion("true_vocab", "true_vocab_size"); /* a third left out */
    expect_suggestion("shardsize", "shard_size");
    expect_suggestion("dtpye", "dtype");
    expect_suggestion("tokenizers", "tokenizer");
    expect_suggestion("frobnicate", NULL);              /* nothing close */
    expect_suggestion("x", NULL);
    expect_suggestion("", NULL);
    char longword[300];
    memset(longword, 'a', sizeof(longword) - 1);
    longword[sizeof(longword) - 1] = 0;
    expect_suggestion(longword, NULL);                  /* longer than the table: no suggestion, no overflow */
    const char *const none[] = { NULL };
    assert_null(mf_suggest("skip_mtp", none));
}

/* Every listed name is one mf_options_apply takes (so suggestions never name a non-option), and
 * every option it takes is listed (so a typo of it gets a suggestion). */
static void test_names_match_apply(void **state)
{
    (void)state;
    static const char *const valid[][2] = {
        { "iteration", "3" }, { "true_vocab_size", "10" }, { "skip_mtp", NULL }, { "mtp_head_copies", NULL },
        { "arch", "llama" }, { "shard_size", "5GB" }, { "dtype", "bf16" }, { "hf_config", "f.json" },
        { "tokenizer", "dir" }, { "read_ahead_kb", "128" }, { "quant", "fp8" } };
    size_t n = 0;
    for (const char *const *p = mf_option_names(); *p; p++)
        n++;
    assert_int_equal(n, sizeof(valid) / sizeof(valid[0]));
    for (size_t i = 0; i < n; i++) {
        char kv[64];
        mf_options o;
        mf_options_init(&o);
        snprintf(kv, sizeof(kv), "%s%s%s", valid[i][0], valid[i][1] ? "=" : "", valid[i][1] ? valid[i][1] : "");
        assert_int_equal(mf_options_apply(&o, kv), 1);
        int listed = 0;
        for (const char *const *p = mf_option_names(); *p; p++)
            listed |= strcmp(*p, valid[i][0]) == 0;
        assert_true(listed);
        mf_options_free(&o);
    }
}

static void test_contradiction(void **state)
{
    (void)state;
    const char *orders[2][2] = { { "skip_mtp", "mtp_head_copies" }, { "mtp_head_copies", "skip_mtp" } };
    for (int i = 0; i < 2; i++) {
        mf_options o;
        mf_options_init(&o);
        assert_int_equal(mf_options_apply(&o, orders[i][0]), 1);
        assert_int_equal(mf_options_apply(&o, orders[i][1]), MF_ERR_INVALID);
        assert_non_null(strstr(mf_error(), "skip_mtp and mtp_head_copies contradict"));
        mf_options_free(&o);
    }
    mf_options o;
    mf_options_init(&o);
    assert_int_equal(mf_options_apply(&o, "skip_mtp"), 1);   /* repeating one is fine */
    assert_int_equal(mf_options_apply(&o, "skip_mtp"), 1);
    mf_options_free(&o);
}

/* arch= is checked against the family table when parsed: a typo is refused with the nearest
 * family and the list, before any checkpoint is read; an HF architecture name is taken too. */
static void test_arch_checked_at_parse(void **state)
{
    (void)state;
    mf_options o;
    mf_options_init(&o);
    assert_int_equal(mf_options_apply(&o, "arch=qwen2moe"), MF_ERR_INVALID);
    assert_string_equal(mf_error(), "unknown arch 'qwen2moe' (did you mean qwen2_moe? known: llama, mistral, qwen2, "
                                    "qwen3, mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3, glm4_moe, gpt_oss, qwen3_next)");
    assert_null(o.arch);
    assert_int_equal(mf_options_apply(&o, "arch=gpt2"), MF_ERR_INVALID);
    assert_null(strstr(mf_error(), "did you mean"));
    assert_int_equal(mf_options_apply(&o, "arch=DeepseekV3ForCausalLM"), 1);
    assert_string_equal(o.arch, "DeepseekV3ForCausalLM");
    assert_int_equal(mf_options_apply(&o, "arch="), MF_ERR_INVALID);
    assert_non_null(strstr(mf_error(), "option arch needs a value"));
    assert_non_null(strstr(mf_options_help(), "-o arch=NAME            llama|mistral|qwen2|qwen3|mixtral|qwen2_moe|"
                                               "qwen3_moe|deepseek_v2|deepseek_v3|glm4_moe|gpt_oss|qwen3_next (default: detect)\n"));
    mf_options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suggestions),
        cmocka_unit_test(test_names_match_apply),
        cmocka_unit_test(test_contradiction),
        cmocka_unit_test(test_arch_checked_at_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
