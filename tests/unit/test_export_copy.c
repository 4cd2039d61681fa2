/* Unit tests of the export's range copy (tools/export_copy.c): the bytes it writes equal the
 * view's (kernel copies, the pread/pwrite fallback, a file system that refuses copy_file_range),
 * and a rank file that changes while a range is copied fails the copy with MF_ERR_CHANGED. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "export_copy.h"
#include "mcorefs/error.h"
#include "mcorefs/view.h"
#include "unit_support.h"

#define TMPFS_MAGIC_NUMBER 0x01021994

static void run(const char *cmd)
{
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

typedef struct {
    mf_session *s;
    mf_options o;
    char ckpt[1024];
    const mf_vfile *f;
    char *want;          /* the view's bytes of f */
} fixture;

/* A session over a fresh copy of a real legacy checkpoint (the test changes its files). */
static void open_fixture(fixture *x, const char *tag)
{
    char cmd[4096];
    snprintf(x->ckpt, sizeof x->ckpt, "%s", us_tmp(tag));
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", x->ckpt, us_data("megatron/head_gpt_tp2pp2_torch"),
             x->ckpt);
    run(cmd);
    mf_options_init(&x->o);
    x->o.true_vocab_size = 1000;
    if (mf_session_open(&x->s, x->ckpt, &x->o) != MF_OK)
        fail_msg("open: %s", mf_error());
    x->f = mf_session_lookup(x->s, "model.safetensors");
    assert_non_null(x->f);
    x->want = malloc(x->f->size);
    assert_int_equal(mf_session_read(x->s, x->f, x->want, x->f->size, 0), (ssize_t)x->f->size);
}

static void close_fixture(fixture *x)
{
    free(x->want);
    mf_session_close(x->s);
    mf_options_free(&x->o);
}

static const volatile sig_atomic_t no_stop = 0;

/* Copy all of x->f to path in ranges of `step` bytes; returns the first failure. */
static int copy_to(fixture *x, export_copier *c, const char *path, size_t step)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    export_scratch sc;
    assert_int_equal(export_scratch_init(&sc, step), MF_OK);
    int rc = MF_OK;
    for (uint64_t off = 0; off < x->f->size && rc == MF_OK; off += step) {
        size_t len = x->f->size - off < step ? (size_t)(x->f->size - off) : step;
        rc = export_copy_range(c, x->f, fd, path, off, len, &sc, &no_stop);
    }
    export_scratch_free(&sc);
    close(fd);
    return rc;
}

static void assert_file_is(const char *path, const char *want, size_t n)
{
    size_t len;
    uint8_t *got = us_read_file(path, &len);
    assert_non_null(got);
    assert_int_equal(len, n);
    assert_memory_equal(got, want, n);
    free(got);
}

/* Kernel copies and the fallback write the view's bytes, whole or in ranges that cut tensors;
 * the kernel copies most of this checkpoint (column-split and whole tensors are plain ranges). */
static void test_bytes_equal_the_view(void **state)
{
    (void)state;
    fixture x;
    open_fixture(&x, "bytes");
    const char *out = us_tmp("bytes.out");
    size_t steps[] = { 1 << 20, 100000, 4093 };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        for (int kernel = 0; kernel <= 1; kernel++) {
            export_copier c;
            export_copier_init(&c, x.s, kernel);
            if (copy_to(&x, &c, out, steps[i]) != MF_OK)
                fail_msg("copy (kernel %d, step %zu): %s", kernel, steps[i], mf_error());
            assert_file_is(out, x.want, x.f->size);
            assert_int_equal(c.kernel_bytes + c.user_bytes, x.f->size);
            if (kernel)
                assert_true(c.kernel_bytes > x.f->size / 2);
            else
                assert_int_equal(c.kernel_bytes, 0);
        }
    }
    close_fixture(&x);
}

/* An output on tmpfs (the checkpoint is not): copy_file_range across file systems is refused
 * (EXDEV on current kernels), the copier falls back for good and the bytes are still right. */
static void test_refused_kernel_copy_falls_back(void **state)
{
    (void)state;
    struct statfs shm, here;
    fixture x;
    open_fixture(&x, "xdev");
    if (statfs("/dev/shm", &shm) != 0 || (long)shm.f_type != TMPFS_MAGIC_NUMBER || statfs(x.ckpt, &here) != 0 ||
        (long)here.f_type == TMPFS_MAGIC_NUMBER) {
        close_fixture(&x);
        skip();
    }
    char out[128];
    snprintf(out, sizeof out, "/dev/shm/mcorefs-test-export-%ld", (long)getpid());
    export_copier c;
    export_copier_init(&c, x.s, 1);
    int rc = copy_to(&x, &c, out, 1 << 20);
    if (rc != MF_OK)
        fail_msg("copy to tmpfs: %s", mf_error());
    assert_file_is(out, x.want, x.f->size);
    if (c.kernel_copy == 0)   /* refused: everything went through the buffer */
        assert_int_equal(c.user_bytes, x.f->size);
    unlink(out);
    close_fixture(&x);
}

static void sleep_ms(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* Rewrite one byte of every rank file in place (the same byte: a change all the same). */
static void rewrite_rank_files(void *arg)
{
    fixture *x = arg;
    sleep_ms(20);   /* past the timestamp tick of the copy */
    for (size_t i = 0; i < x->s->ckpt.n_files; i++) {
        int fd = open(x->s->ckpt.files[i].path, O_RDWR);
        assert_true(fd >= 0);
        char b;
        assert_int_equal(pread(fd, &b, 1, 100), 1);
        assert_int_equal(pwrite(fd, &b, 1, 100), 1);
        close(fd);
    }
}

/* A rank file rewritten after the view's check and during the copy: the check after the copy
 * fails the range with MF_ERR_CHANGED naming the file, on both paths. */
static void test_source_changed_during_copy(void **state)
{
    (void)state;
    for (int kernel = 0; kernel <= 1; kernel++) {
        fixture x;
        open_fixture(&x, kernel ? "changed-kernel" : "changed-fallback");
        export_copier c;
        export_copier_init(&c, x.s, kernel);
        c.after_copy = rewrite_rank_files;
        c.after_copy_arg = &x;
        mf_error_clear();
        int rc = copy_to(&x, &c, us_tmp("changed.out"), 1 << 20);
        assert_int_equal(rc, MF_ERR_CHANGED);
        assert_non_null(strstr(mf_error(), x.ckpt));
        assert_non_null(strstr(mf_error(), "changed since mount"));
        if (kernel)
            assert_true(c.kernel_bytes > 0);   /* the bytes went through copy_file_range */
        close_fixture(&x);
    }
}

/* copy_file_range between two regular files copies; into a pipe it is refused (0), not an error. */
static void test_kernel_copy_refusal(void **state)
{
    (void)state;
    const char *a = us_tmp("kc.src"), *b = us_tmp("kc.dst");
    assert_int_equal(us_write_file(a, "0123456789abcdef", 16), 0);
    int src = open(a, O_RDONLY), dst = open(b, O_RDWR | O_CREAT | O_TRUNC, 0644), p[2];
    assert_true(src >= 0 && dst >= 0);
    size_t done;
    assert_int_equal(export_kernel_copy(src, 4, dst, 2, 8, &done, &no_stop), 1);
    assert_int_equal(done, 8);
    char got[10];
    assert_int_equal(pread(dst, got, 10, 0), 10);
    assert_memory_equal(got, "\0\0" "456789ab", 10);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(export_kernel_copy(src, 0, p[1], 0, 8, &done, &no_stop), 0);
    close(p[0]);
    close(p[1]);
    close(src);
    close(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_equal_the_view),
        cmocka_unit_test(test_refused_kernel_copy_falls_back),
        cmocka_unit_test(test_source_changed_during_copy),
        cmocka_unit_test(test_kernel_copy_refusal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
