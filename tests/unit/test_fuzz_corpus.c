/* Regression test: every file of the committed fuzz seed corpus (fuzz/corpus/<target>/) goes
 * through the same entry points as the libFuzzer harnesses, without the fuzzer. Seeds must
 * parse; files named bad-* or crash-* (reproducers of fixed bugs) only must not crash. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../fuzz/fuzz_targets.h"
#include "unit_support.h"

/* <repo>/fuzz/corpus/<name>, from this file's own path. */
static const char *corpus_dir(const char *name)
{
    static char buf[4096];
    const char *me = __FILE__, *tail = strstr(me, "tests/unit/test_fuzz_corpus.c");
    assert_non_null(tail);
    snprintf(buf, sizeof buf, "%.*sfuzz/corpus/%s", (int)(tail - me), me, name);
    return buf;
}

static void run_dir(const char *name, int (*fn)(const uint8_t *, size_t))
{
    const char *dir = corpus_dir(name);
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open corpus %s", dir);
    int seen = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len;
        uint8_t *data = us_read_file(path, &len);
        assert_non_null(data);
        int rc = fn(data, len);
        free(data);
        int may_fail = strncmp(de->d_name, "bad-", 4) == 0 || strncmp(de->d_name, "crash-", 6) == 0;
        if (rc != MF_OK && !may_fail)
            fail_msg("%s: %s", path, mf_error());
        seen++;
    }
    closedir(d);
    assert_true(seen > 0);
}

static void test_zip_corpus(void **state)
{
    (void)state;
    run_dir("zip", fz_zip);
}

static void test_pickle_corpus(void **state)
{
    (void)state;
    run_dir("pickle", fz_pickle);
}

static void test_torchfile_corpus(void **state)
{
    (void)state;
    run_dir("torchfile", fz_torchfile);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zip_corpus),
        cmocka_unit_test(test_pickle_corpus),
        cmocka_unit_test(test_torchfile_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
