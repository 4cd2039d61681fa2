/* Regression test: every file of fuzz/corpus/checkpoint/ (real rank files from the fixture
 * generator, and any crash reproducer) goes through the whole-checkpoint fuzz entry point.
 * Seeds named seed-* are well-formed one-file checkpoints and must mount; refuse-shape-* are
 * seeds with one tensor of a shape the args do not imply and must be refused by the shape
 * check (fuzz/make_shape_seeds.py); others must only fail cleanly. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "../../fuzz/fuzz_checkpoint_target.h"
#include "unit_support.h"

static void test_checkpoint_corpus(void **state)
{
    (void)state;
    char dir[4096];
    const char *me = __FILE__, *tail = strstr(me, "tests/unit/");
    assert_non_null(tail);
    snprintf(dir, sizeof(dir), "%.*sfuzz/corpus/checkpoint", (int)(tail - me), me);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int seeds = 0, refused = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[4400];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)n + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        int rc = fz_checkpoint(buf, (size_t)n);
        if (strncmp(e->d_name, "seed-", 5) == 0) {
            if (rc != MF_OK)
                fail_msg("%s: %s", e->d_name, mf_error());
            seeds++;
        }
        if (strncmp(e->d_name, "refuse-shape-", 13) == 0) {
            if (rc != MF_ERR_INCONSISTENT || !strstr(mf_error(), "the args imply"))
                fail_msg("%s: not refused by the shape check (%d: %s)", e->d_name, rc, mf_error());
            refused++;
        }
        free(buf);
    }
    closedir(d);
    assert_true(seeds >= 5);
    assert_true(refused >= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_checkpoint_corpus) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
