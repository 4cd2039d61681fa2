/* Unit tests of "every byte comes from an unchanged regular file beneath the checkpoint":
 * the source-file identity check, opening beneath a folder (escapes, FIFOs, directories),
 * and a session over a copy of a real checkpoint whose rank file is rewritten in place. */
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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/fileid.h"
#include "mcorefs/verify.h"
#include "mcorefs/view.h"
#include "open_beneath.h"
#include "unit_support.h"

static void sleep_ms(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

static void run(const char *cmd)
{
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* A write in place (same inode, same size) and a truncation are seen; a rename over the
 * path is not a change of the descriptor's file (it keeps the old inode). */
static void test_identity(void **state)
{
    (void)state;
    char path[4096], other[4096];
    snprintf(path, sizeof path, "%s", us_tmp("id.bin"));
    snprintf(other, sizeof other, "%s", us_tmp("id.new"));
    assert_int_equal(us_write_file(path, "0123456789", 10), 0);
    sleep_ms(20);   /* the creation's timestamp tick is over */
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    mf_file_id id;
    assert_int_equal(mf_file_id_get(fd, path, &id), MF_OK);
    assert_int_equal(mf_file_id_check(fd, &id, path), MF_OK);

    /* renamed over: the descriptor still reads the old inode, unchanged */
    assert_int_equal(us_write_file(other, "abcdefghij", 10), 0);
    assert_int_equal(rename(other, path), 0);
    assert_int_equal(mf_file_id_check(fd, &id, path), MF_OK);
    close(fd);

    /* rewritten in place, same size and bytes: still a change (mtime/ctime) */
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(mf_file_id_get(fd, path, &id), MF_OK);
    sleep_ms(20);
    assert_int_equal(pwrite(fd, "abc", 3, 0), 3);
    mf_error_clear();
    assert_int_equal(mf_file_id_check(fd, &id, path), MF_ERR_CHANGED);
    assert_non_null(strstr(mf_error(), path));
    assert_non_null(strstr(mf_error(), "changed since mount"));

    /* truncated */
    assert_int_equal(mf_file_id_get(fd, path, &id), MF_OK);
    assert_int_equal(ftruncate(fd, 4), 0);
    assert_int_equal(mf_file_id_check(fd, &id, path), MF_ERR_CHANGED);
    assert_non_null(strstr(mf_error(), "size 4, was 10"));
    close(fd);
}

typedef int (*opener)(const char *base, const char *rel, int *fd);

/* Names that leave the folder, FIFOs and directories are refused, naming the file; a
 * symlink that stays inside is followed. A FIFO must not block the open. */
static void check_open_beneath(opener open_beneath)
{
    char dir[1024], outside[1024], cmd[16384];
    snprintf(dir, sizeof dir, "%s", us_tmp("beneath"));
    snprintf(outside, sizeof outside, "%s", us_tmp("outside"));
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' '%s' && mkdir -p '%s/in' '%s' && echo secret > '%s/secret' && echo ok > '%s/in/file' && "
             "ln -s '%s' '%s/sub' && ln -s in '%s/inlink' && ln -s '%s/secret' '%s/rel' && mkfifo '%s/fifo' && "
             "mkdir '%s/adir'",
             dir, outside, dir, outside, outside, dir, outside, dir, dir, outside, dir, dir, dir);
    run(cmd);
    int fd;
    assert_int_equal(open_beneath(dir, "in/file", &fd), MF_OK);
    close(fd);
    assert_int_equal(open_beneath(dir, "inlink/file", &fd), MF_OK);   /* symlink inside */
    close(fd);
    char up[1200];
    snprintf(up, sizeof up, "../%s/secret", strrchr(outside, '/') + 1);
    const char *escaping[] = { "sub/secret", up, "in/../../x", "rel", NULL };
    for (int i = 0; escaping[i]; i++) {
        mf_error_clear();
        assert_int_equal(open_beneath(dir, escaping[i], &fd), MF_ERR_INCONSISTENT);
        assert_int_equal(fd, -1);
        assert_non_null(strstr(mf_error(), escaping[i]));
        assert_non_null(strstr(mf_error(), "outside the checkpoint folder"));
    }
    assert_int_equal(open_beneath(dir, outside, &fd), MF_ERR_INCONSISTENT);   /* absolute */
    assert_int_equal(open_beneath(dir, "fifo", &fd), MF_ERR_FORMAT);          /* does not block */
    assert_non_null(strstr(mf_error(), "a FIFO"));
    assert_int_equal(open_beneath(dir, "adir", &fd), MF_ERR_FORMAT);
    assert_non_null(strstr(mf_error(), "a directory"));
    assert_int_equal(open_beneath(dir, "nothing", &fd), MF_ERR_MISSING);
}

static void test_open_beneath(void **state)
{
    (void)state;
    check_open_beneath(mf_open_beneath);
}

/* kernels without openat2: the realpath check gives the same answers */
static void test_open_beneath_fallback(void **state)
{
    (void)state;
    check_open_beneath(mf_open_beneath_fallback);
}

/* A session over a fresh copy (under tmp name `tag`) of the fixture `data_rel`; victim gets the
 * path of its iteration folder's file `victim_rel`. o is left for the caller to free. */
static mf_session *open_copy(const char *tag, const char *data_rel, const char *victim_rel, char victim[1200],
                             mf_options *o)
{
    char ckpt[1024], cmd[8192];
    snprintf(ckpt, sizeof ckpt, "%s", us_tmp(tag));
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", ckpt, us_data(data_rel), ckpt);
    run(cmd);
    snprintf(victim, 1200, "%s/iter_0000010/%s", ckpt, victim_rel);
    mf_options_init(o);
    o->true_vocab_size = 1000;
    mf_session *s;
    if (mf_session_open(&s, ckpt, o) != MF_OK)
        fail_msg("open: %s", mf_error());
    return s;
}

/* A session over a copy of a real legacy checkpoint: after a rank file is rewritten in place,
 * reads of tensors built from it fail with MF_ERR_CHANGED (naming the file, counted), and so does
 * replica verification; tensors from other files still read. */
static void test_session_rank_file_changed(void **state)
{
    (void)state;
    char victim[1200];
    mf_options o;
    mf_session *s = open_copy("ckpt", "megatron/head_gpt_tp2pp2_torch", "mp_rank_01_001/model_optim_rng.pt", victim, &o);
    const mf_vfile *f = mf_session_lookup(s, "model.safetensors");
    assert_non_null(f);
    char *before = malloc(f->size), *after = malloc(f->size);
    assert_int_equal(mf_session_read(s, f, before, f->size, 0), (ssize_t)f->size);
    mf_verify_report r;
    assert_int_equal(mf_verify_replicas(s, &r), MF_OK);

    sleep_ms(20);
    int fd = open(victim, O_RDWR);
    assert_true(fd >= 0);
    char b;
    assert_int_equal(pread(fd, &b, 1, 100), 1);
    assert_int_equal(pwrite(fd, &b, 1, 100), 1);   /* the same byte: still rewritten in place */
    close(fd);

    /* tensor by tensor: original bytes or MF_ERR_CHANGED naming the victim, never other bytes */
    int stale = 0, good = 0;
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const mf_hf_tensor *t = &s->map.tensors[f->tensors[i]];
        uint64_t at = f->header_len + t->offset;
        mf_error_clear();
        ssize_t n = mf_session_read(s, f, after + at, t->nbytes, at);
        if (n == MF_ERR_CHANGED) {
            stale++;
            assert_non_null(strstr(mf_error(), victim));
            assert_non_null(strstr(mf_error(), t->name));
            continue;
        }
        assert_int_equal(n, (ssize_t)t->nbytes);
        assert_memory_equal(after + at, before + at, t->nbytes);
        good++;
    }
    assert_true(stale > 0);
    assert_true(good > 0);
    assert_int_equal(s->n_source_changed, (uint64_t)stale);
    assert_int_equal(s->n_errors, (uint64_t)stale);
    char *stats = mf_stats_render(s);
    char want[64];
    snprintf(want, sizeof want, "source_changed %20d\n", stale);
    assert_non_null(strstr(stats, want));
    free(stats);

    /* the zero-copy path checks too, before handing out file ranges */
    mf_segment segs[64];
    ssize_t rc = mf_session_read_segments(s, f, after, f->size, 0, segs, 64);
    assert_int_equal(rc, MF_ERR_CHANGED);

    /* mcorefs-inspect verify uses the same engine */
    mf_error_clear();
    assert_int_equal(mf_verify_replicas(s, &r), MF_ERR_CHANGED);
    assert_non_null(strstr(mf_error(), victim));
    free(before);
    free(after);
    mf_session_close(s);
    mf_options_free(&o);
}

/* .mcorefs/stats keeps one length and layout while its counters move, so a read split in two
 * (the first part before a change of the counters, the rest after) still gives whole lines. */
static void test_stats_layout_is_stable(void **state)
{
    (void)state;
    char victim[1200];
    mf_options o;
    mf_session *s = open_copy("stats", "megatron/head_gpt_tp2pp2_torch", "mp_rank_00_000/model_optim_rng.pt", victim, &o);
    const mf_vfile *stats = mf_session_lookup(s, ".mcorefs/stats");
    assert_non_null(stats);
    char first[4096], second[4096];
    ssize_t a = mf_session_read(s, stats, first, sizeof first, 0);
    assert_true(a > 40);
    /* counters grow by many digits: the bytes before offset 20 come from the old text */
    __atomic_store_n(&s->n_reads, 123456789012345ull, __ATOMIC_RELAXED);
    __atomic_store_n(&s->n_bytes, 98765432109876543ull, __ATOMIC_RELAXED);
    __atomic_store_n(&s->file_bytes[0], 4000000000000ull, __ATOMIC_RELAXED);
    ssize_t b = mf_session_read(s, stats, second, sizeof second, 0);
    assert_int_equal(b, a);
    char mixed[4096];
    memcpy(mixed, first, 20);
    assert_int_equal(mf_session_read(s, stats, mixed + 20, sizeof mixed - 20, 20), a - 20);
    mixed[a] = 0;
    second[b] = 0;
    assert_non_null(strstr(second, "bytes_served    987654321098"));   /* + the stats reads themselves */
    /* every line of the mixed text is "key [name] number", with the keys of the new text */
    char *save = NULL, *save2 = NULL;
    char *l1 = strtok_r(mixed, "\n", &save), *l2 = strtok_r(second, "\n", &save2);
    int lines = 0;
    for (; l1 && l2; l1 = strtok_r(NULL, "\n", &save), l2 = strtok_r(NULL, "\n", &save2), lines++) {
        assert_int_equal(strlen(l1), strlen(l2));
        assert_int_equal(strcspn(l1, " "), strcspn(l2, " "));
        assert_memory_equal(l1, l2, strcspn(l2, " "));
        const char *num = strrchr(l1, ' ');
        assert_non_null(num);
        assert_true(strspn(num + 1, "0123456789") == strlen(num + 1) && num[1]);
    }
    assert_null(l1);
    assert_null(l2);
    assert_true(lines >= 5);
    mf_session_close(s);
    mf_options_free(&o);
}

/* torch_dist: the same for a .distcp, through the lazy chunk loads. */
static void test_session_distcp_changed(void **state)
{
    (void)state;
    char victim[1200];
    mf_options o;
    mf_session *s = open_copy("dist", "megatron/head_gpt_tp2pp2_torch_dist", "__1_0.distcp", victim, &o);
    const mf_vfile *f = mf_session_lookup(s, "model.safetensors");
    assert_non_null(f);
    char *buf = malloc(f->size);
    sleep_ms(20);
    int fd = open(victim, O_RDWR);
    assert_true(fd >= 0);
    char b;
    assert_int_equal(pread(fd, &b, 1, 100), 1);
    assert_int_equal(pwrite(fd, &b, 1, 100), 1);
    close(fd);
    mf_error_clear();
    assert_int_equal(mf_session_read(s, f, buf, f->size, 0), MF_ERR_CHANGED);
    assert_non_null(strstr(mf_error(), victim));
    assert_int_equal(s->n_source_changed, 1);
    free(buf);
    mf_session_close(s);
    mf_options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_open_beneath),
        cmocka_unit_test(test_open_beneath_fallback),
        cmocka_unit_test(test_session_rank_file_changed),
        cmocka_unit_test(test_session_distcp_changed),
        cmocka_unit_test(test_stats_layout_is_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
