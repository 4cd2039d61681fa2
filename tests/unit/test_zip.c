/* Unit tests for the torch.save zip reader: a real PyTorch 2.6 archive, windows, ZIP64
 * extras, and hand-broken archives (each must fail with a message naming the file). */
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
#include "mcorefs/zip.h"
#include "unit_support.h"

#define SAMPLE "torch/torch2x_sample.pt"

/* Open path as a zip, expecting `code`; on success the caller closes z and fd. */
static int open_zip(const char *path, mf_zip *z, int *fd, uint64_t base, uint64_t len)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(*fd >= 0);
    return mf_zip_open(z, *fd, path, base, len);
}

static void expect_fail(const char *path, int code, const char *needle)
{
    mf_zip z;
    int fd;
    mf_error_clear();
    int rc = open_zip(path, &z, &fd, 0, 0);
    close(fd);
    if (rc == MF_OK)
        mf_zip_close(&z);
    if (code ? rc != code : rc >= 0)
        fail_msg("%s: expected %d, got %d (%s)", path, code, rc, mf_error());
    if (!strstr(mf_error(), path))
        fail_msg("message '%s' does not name %s", mf_error(), path);
    if (needle && !strstr(mf_error(), needle))
        fail_msg("message '%s' lacks '%s'", mf_error(), needle);
    assert_null(strchr(mf_error(), '\n'));
}

static void read_entry(const mf_zip *z, const char *rel, const char *expect)
{
    const mf_zip_entry *e = mf_zip_find(z, rel);
    assert_non_null(e);
    uint8_t *buf;
    size_t n;
    assert_int_equal(mf_zip_read(z, e, 1 << 20, &buf, &n), MF_OK);
    assert_int_equal(n, strlen(expect));
    assert_memory_equal(buf, expect, n);
    free(buf);
}

static void test_real_sample(void **state)
{
    (void)state;
    mf_zip z;
    int fd;
    assert_int_equal(open_zip(us_data(SAMPLE), &z, &fd, 0, 0), MF_OK);
    assert_string_equal(z.prefix, "torch2x_sample");
    assert_int_equal(z.n_entries, 10);
    read_entry(&z, "byteorder", "little");
    read_entry(&z, "version", "3\n");
    /* sizes from torch2x_sample.zip-entries.txt; data 64-byte aligned past the local header */
    static const struct { const char *rel; uint64_t local, size; } want[] = {
        {"data.pkl", 0, 757}, {"data/0", 918, 512}, {"data/1", 1552, 64}, {"data/2", 1744, 30},
        {"data/3", 1902, 80}, {"data/4", 2080, 96},  {"data/5", 2288, 4},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const mf_zip_entry *e = mf_zip_find(&z, want[i].rel);
        assert_non_null(e);
        assert_int_equal(e->size, want[i].size);
        assert_int_equal(e->method, 0);
        assert_int_equal(e->data_offset % 64, 0);
        assert_true(e->data_offset >= want[i].local + 30 + strlen(e->name));
        assert_true(e->data_offset < want[i].local + 30 + strlen(e->name) + 64);
    }
    assert_null(mf_zip_find(&z, "data/6"));
    assert_null(mf_zip_find(&z, "torch2x_sample/data.pkl"));
    assert_null(mf_zip_find(&z, ""));
    /* size cap */
    uint8_t *buf = (uint8_t *)1;
    size_t n;
    assert_int_equal(mf_zip_read(&z, mf_zip_find(&z, "data/0"), 100, &buf, &n), MF_ERR_LIMIT);
    assert_null(buf);
    assert_non_null(strstr(mf_error(), "torch2x_sample.pt"));
    mf_zip_close(&z);
    close(fd);
}

/* The same archive embedded at an offset inside a larger file (as in .distcp). */
static void test_window(void **state)
{
    (void)state;
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE), &len);
    assert_non_null(data);
    uint8_t *big = malloc(len + 1000 + 777);
    memset(big, 'J', len + 1777);
    memcpy(big + 1000, data, len);
    const char *p = us_tmp("window.bin");
    assert_int_equal(us_write_file(p, big, len + 1777), 0);
    mf_zip z, z0;
    int fd, fd0;
    assert_int_equal(open_zip(us_data(SAMPLE), &z0, &fd0, 0, 0), MF_OK);
    assert_int_equal(open_zip(p, &z, &fd, 1000, len), MF_OK);
    for (size_t i = 0; i < z.n_entries; i++)
        assert_int_equal(z.entries[i].data_offset, z0.entries[i].data_offset + 1000);
    read_entry(&z, "byteorder", "little");
    mf_zip_close(&z);
    close(fd);
    /* a window past the end of the file, or one cutting the archive short, fails */
    assert_int_not_equal(open_zip(p, &z, &fd, 1000, len + 778), MF_OK);
    close(fd);
    assert_int_not_equal(open_zip(p, &z, &fd, 1000, len - 1), MF_OK);
    close(fd);
    assert_int_not_equal(open_zip(p, &z, &fd, 999, len), MF_OK);
    close(fd);
    mf_zip_close(&z0);
    close(fd0);
    free(big);
    free(data);
}

static void test_zip64_extra(void **state)
{
    (void)state;
    const char *p = us_tmp("z64.zip");
    us_zip_item it[] = {
        {"arc/data.pkl", "\x80\x02N.", 4, 0, 1},
        {"arc/data/0", "0123456789", 10, 0, 1},
        {"arc/x", "", 0, 0, 0},
    };
    assert_int_equal(us_write_zip(p, it, 3, 1), 0);
    mf_zip z;
    int fd;
    assert_int_equal(open_zip(p, &z, &fd, 0, 0), MF_OK);
    assert_string_equal(z.prefix, "arc");
    read_entry(&z, "data/0", "0123456789");
    read_entry(&z, "x", "");
    mf_zip_close(&z);
    close(fd);
    /* classic (non-ZIP64) archive works too */
    assert_int_equal(us_write_zip(p, it, 3, 0), 0);
    assert_int_equal(open_zip(p, &z, &fd, 0, 0), MF_OK);
    read_entry(&z, "data.pkl", "\x80\x02N.");
    mf_zip_close(&z);
    close(fd);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE), &len);
    assert_non_null(data);
    const char *p = us_tmp("cut.pt");
    for (size_t cut = 0; cut < len; cut += (cut < 64 || cut > len - 200) ? 1 : 7) {
        assert_int_equal(us_write_file(p, data, cut), 0);
        expect_fail(p, 0, NULL);
    }
    free(data);
}

/* Copy the sample, apply a patch, expect a failure. */
static void patched(const char *name, size_t off, const void *bytes, size_t n, int code, const char *needle)
{
    size_t len;
    uint8_t *data = us_read_file(us_data(SAMPLE), &len);
    assert_non_null(data);
    assert_true(off + n <= len);
    memcpy(data + off, bytes, n);
    const char *p = us_tmp(name);
    assert_int_equal(us_write_file(p, data, len), 0);
    free(data);
    expect_fail(p, code, needle);
}

static uint64_t le64_at(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | p[i];
    return x;
}

static void test_corrupt(void **state)
{
    (void)state;
    size_t len;
    uint8_t *d = us_read_file(us_data(SAMPLE), &len);
    assert_non_null(d);
    /* locate the ZIP64 end record: torch writes ZIP64 EOCD (56) + locator (20) + EOCD (22) */
    const uint8_t *z64 = d + len - 22 - 20 - 56;
    assert_memory_equal(z64, "PK\x06\x06", 4);
    uint64_t cd_off = le64_at(z64 + 48), cd_size = le64_at(z64 + 40);
    size_t z64_pos = (size_t)(z64 - d);
    uint8_t zeros[4096] = {0}, ff[8];
    memset(ff, 0xff, 8);

    patched("zero_cd.pt", (size_t)cd_off, zeros, (size_t)cd_size, MF_ERR_FORMAT, "central directory");
    patched("bad_local.pt", 918, "XX", 2, MF_ERR_FORMAT, "local header");
    patched("not_zip.pt", 0, "\x80\x02", 2, MF_ERR_FORMAT, "not a zip archive");
    patched("huge_count.pt", z64_pos + 32, ff, 8, MF_ERR_FORMAT, "entries");
    patched("cd_past_end.pt", z64_pos + 48, "\x00\x00\x00\x00\x10", 5, MF_ERR_FORMAT, "extends past end of file");
    patched("bad_z64.pt", z64_pos, "XXXX", 4, MF_ERR_FORMAT, "ZIP64");
    patched("no_eocd.pt", len - 22, "XXXX", 4, MF_ERR_FORMAT, "end-of-central-directory");
    /* entry size in the central directory pointing past the end */
    patched("big_entry.pt", (size_t)cd_off + 24, "\x00\x00\x00\x7f", 4, MF_ERR_FORMAT, NULL);
    free(d);

    const char *p = us_tmp("empty.pt");
    assert_int_equal(us_write_file(p, "", 0), 0);
    expect_fail(p, MF_ERR_FORMAT, "not a zip archive");
}

static void test_crafted(void **state)
{
    (void)state;
    const char *p = us_tmp("crafted.zip");
    us_zip_item dup[] = {{"a/data.pkl", "x", 1, 0, 0}, {"a/data.pkl", "y", 1, 0, 0}};
    assert_int_equal(us_write_zip(p, dup, 2, 1), 0);
    expect_fail(p, MF_ERR_FORMAT, "duplicate entry 'a/data.pkl'");
    us_zip_item comp[] = {{"a/data.pkl", "x", 1, 8, 0}};
    assert_int_equal(us_write_zip(p, comp, 1, 1), 0);
    expect_fail(p, MF_ERR_UNSUPPORTED, "is compressed (method 8)");
    us_zip_item flat[] = {{"data.pkl", "x", 1, 0, 0}};
    assert_int_equal(us_write_zip(p, flat, 1, 0), 0);
    expect_fail(p, MF_ERR_FORMAT, "archive folder");
    assert_int_equal(us_write_zip(p, NULL, 0, 1), 0);
    expect_fail(p, MF_ERR_FORMAT, "not a zip archive"); /* an empty zip starts with PK\5\6 */
}

/* A real deflated entry written by Python's zipfile. */
static void test_python_deflated(void **state)
{
    (void)state;
    const char *p = us_tmp("deflated.zip");
    const char *args[] = {p, NULL};
    if (us_run_python("import sys, zipfile\n"
                      "with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n"
                      "    z.writestr('archive/data.pkl', b'\\x80\\x02N.' * 100)\n",
                      args) != 0)
        skip();
    expect_fail(p, MF_ERR_UNSUPPORTED, "zip entry 'archive/data.pkl' is compressed (method 8); torch.save writes stored entries only");
}

/* Layouts around the reader's head/tail cache (4 KiB at each end of the window): a comment
 * that pushes the end record out of the cached tail, a central directory larger than it, and
 * entries that straddle the cached regions. Python's zipfile writes them; every entry must
 * read back as the content the same formula gives. */
static uint8_t content_byte(int entry, size_t k) { return (uint8_t)((entry * 7 + (int)(k % 251)) % 251); }

static void test_cache_layouts(void **state)
{
    (void)state;
    static const char *script =
        "import sys, zipfile\n"
        "def body(i, n): return bytes((i * 7 + k % 251) % 251 for k in range(n))\n"
        "layouts = {'comment': ([10, 20], 6000), 'bigcd': ([5] * 300, 0), 'straddle': ([3000, 9000, 2000, 1], 100)}\n"
        "sizes, clen = layouts[sys.argv[2]]\n"
        "with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:\n"
        "    for i, n in enumerate(sizes): z.writestr('arc/e%d' % i, body(i, n))\n"
        "    z.comment = b'c' * clen\n";
    const char *layouts[] = {"comment", "bigcd", "straddle"};
    const size_t counts[] = {2, 300, 4};
    for (int l = 0; l < 3; l++) {
        const char *p = us_tmp("cache.zip");
        const char *args[] = {p, layouts[l], NULL};
        if (us_run_python(script, args) != 0)
            skip();
        mf_zip z;
        int fd;
        assert_int_equal(open_zip(p, &z, &fd, 0, 0), MF_OK);
        assert_int_equal(z.n_entries, counts[l]);
        for (size_t i = 0; i < counts[l]; i++) {
            char rel[32];
            snprintf(rel, sizeof rel, "e%zu", i);
            const mf_zip_entry *e = mf_zip_find(&z, rel);
            assert_non_null(e);
            uint8_t *buf;
            size_t n;
            assert_int_equal(mf_zip_read(&z, e, 1 << 20, &buf, &n), MF_OK);
            for (size_t k = 0; k < n; k++)
                if (buf[k] != content_byte((int)i, k))
                    fail_msg("%s: entry %zu byte %zu is %u", layouts[l], i, k, buf[k]);
            free(buf);
        }
        mf_zip_close(&z);
        close(fd);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_sample),   cmocka_unit_test(test_window),
        cmocka_unit_test(test_zip64_extra),   cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_corrupt),       cmocka_unit_test(test_crafted),
        cmocka_unit_test(test_python_deflated), cmocka_unit_test(test_cache_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
