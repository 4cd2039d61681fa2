/* Unit tests of core's one path join and one pread loop (core/file_io.c), and of the gather
 * engine's use of it: a read that fails names the rank file. */
#include <errno.h>
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

#include "file_io.h"
#include "mcorefs/checkpoint.h"
#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "unit_support.h"

static void test_path_join(void **state)
{
    (void)state;
    char *p = mf_path_join("/a/b", "c.distcp");
    assert_string_equal(p, "/a/b/c.distcp");
    free(p);
    p = mf_path_join("", "x");
    assert_string_equal(p, "/x");
    free(p);
}

/* A file of n bytes 0, 1, 2, ... (mod 256); its path. */
static const char *counting_file(const char *name, size_t n)
{
    const char *path = us_tmp(name);
    uint8_t *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)i;
    assert_int_equal(us_write_file(path, b, n), 0);
    free(b);
    return path;
}

static void test_pread(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s", counting_file("count.bin", 1000));
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t buf[600];
    assert_int_equal(mf_pread_full(fd, path, buf, 600, 300), MF_OK);
    for (int i = 0; i < 600; i++)
        assert_int_equal(buf[i], (uint8_t)(300 + i));

    size_t got = 12345;   /* upto: stops at the end of the file */
    assert_int_equal(mf_pread_upto(fd, path, buf, 600, 700, &got), MF_OK);
    assert_int_equal(got, 300);
    assert_int_equal(buf[0], (uint8_t)700);
    assert_int_equal(mf_pread_upto(fd, path, buf, 10, 5000, &got), MF_OK);
    assert_int_equal(got, 0);

    mf_error_clear();     /* full: the end of the file first is an error naming the file */
    assert_int_equal(mf_pread_full(fd, path, buf, 600, 700), MF_ERR_IO);
    assert_non_null(strstr(mf_error(), path));
    assert_non_null(strstr(mf_error(), "ends at 1000"));
    close(fd);

    int dfd = open("/", O_RDONLY | O_DIRECTORY);   /* a read error: EISDIR */
    assert_true(dfd >= 0);
    mf_error_clear();
    assert_int_equal(mf_pread_full(dfd, "the-folder", buf, 4, 0), MF_ERR_IO);
    assert_non_null(strstr(mf_error(), "the-folder: read at 0"));
    close(dfd);
}

/* A rank file shorter than the shard it should hold (truncated before mount, say): the gather
 * fails with MF_ERR_IO, and the message says which file. */
static void test_gather_names_the_file(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s", counting_file("short.bin", 64));
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    mf_rankfile rf = { .path = path, .name = "short.bin", .fd = fd, .size = 64 };
    assert_int_equal(mf_file_id_get(fd, path, &rf.id), MF_OK);
    mf_shard sh = { .file = 0, .t = { .dtype = MF_DT_F32, .ndim = 2, .shape = { 4, 8 }, .stride = { 8, 1 }, .offset = 0 },
                    .layer = -1, .expert = -1 };
    mf_piece p = { .src = &sh, .rows = 4, .cols = 8 };
    mf_hf_tensor t = { .name = "w", .dtype = MF_DT_F32, .src_dtype = MF_DT_F32, .ndim = 2, .shape = { 4, 8 },
                       .pieces = &p, .n_pieces = 1, .nbytes = 128 };
    int fds[1] = { fd };
    mf_io io = { fds, NULL, &rf };
    uint8_t out[128];
    mf_error_clear();
    assert_int_equal(mf_gather(&t, &io, 0, 128, out), MF_ERR_IO);
    assert_non_null(strstr(mf_error(), path));
    assert_int_equal(mf_gather(&t, &io, 0, 64, out), 0);   /* the bytes that are there read fine */
    for (int i = 0; i < 64; i++)
        assert_int_equal(out[i], (uint8_t)i);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_join),
        cmocka_unit_test(test_pread),
        cmocka_unit_test(test_gather_names_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
