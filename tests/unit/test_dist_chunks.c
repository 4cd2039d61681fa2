/* Unit tests of torch_dist's lazy chunk table (core/dist_chunks.c) through mf_shard_locate:
 *  - a legacy shard locates as its own tensor, nothing read;
 *  - 8 threads locating every shard of a real torch_dist MoE checkpoint at once, each in its
 *    own order (first touch of every chunk races), get exactly what one thread gets;
 *  - a chunk whose file changed after mount fails naming the file, the same code and message on
 *    every later call, while chunks of other files still locate. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "mcorefs/checkpoint.h"
#include "mcorefs/error.h"
#include "unit_support.h"

#define MOE_DIST "megatron/head_moe_tp2ep2_torch_dist"
#define GPT_DIST "megatron/head_gpt_tp2pp2_torch_dist"
enum { THREADS = 8 };

static void open_ckpt(mf_checkpoint *c, const char *dir)
{
    mf_options o;
    mf_options_init(&o);
    memset(c, 0, sizeof *c);
    if (mf_checkpoint_open(c, dir, &o) != MF_OK)
        fail_msg("open %s: %s", dir, mf_error());
    mf_options_free(&o);
}

/* Every present shard of c, in source order. */
static const mf_shard **all_shards(const mf_checkpoint *c, size_t *n)
{
    size_t total = 0, k = 0;
    for (size_t i = 0; i < c->n_sources; i++)
        total += c->sources[i].n_shards;
    const mf_shard **v = calloc(total ? total : 1, sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < c->n_sources; i++)
        for (int j = 0; j < c->sources[i].n_shards; j++)
            if (c->sources[i].shards[j].file >= 0)
                v[k++] = &c->sources[i].shards[j];
    *n = k;
    return v;
}

static void assert_same_tensor(const mf_tensor *a, const mf_tensor *b)
{
    assert_int_equal(a->dtype, b->dtype);
    assert_int_equal(a->ndim, b->ndim);
    assert_int_equal(a->offset, b->offset);
    assert_int_equal(a->storage_begin, b->storage_begin);
    assert_int_equal(a->storage_bytes, b->storage_bytes);
    for (int d = 0; d < a->ndim; d++) {
        assert_int_equal(a->shape[d], b->shape[d]);
        assert_int_equal(a->stride[d], b->stride[d]);
    }
}

static void test_legacy_shard_is_its_tensor(void **state)
{
    (void)state;
    mf_shard sh = { .file = 0, .t = { .dtype = MF_DT_BF16, .ndim = 2, .shape = { 4, 6 }, .stride = { 7, 1 }, .offset = 128 },
                    .chunk = NULL, .layer = -1, .expert = -1 };
    mf_tensor out;
    memset(&out, 0xab, sizeof out);
    assert_int_equal(mf_shard_locate(&sh, &out), MF_OK);
    assert_same_tensor(&out, &sh.t);
}

typedef struct {
    const mf_shard **shards;
    size_t n, start;
    mf_tensor *out;    /* [n], by shard index */
    int failures;
    pthread_barrier_t *go;
} locate_job;

static void *locate_all(void *arg)
{
    locate_job *j = arg;
    pthread_barrier_wait(j->go);
    for (size_t k = 0; k < j->n; k++) {
        size_t i = (j->start + k) % j->n;
        if (mf_shard_locate(j->shards[i], &j->out[i]) != MF_OK)
            j->failures++;
    }
    return NULL;
}

static void test_concurrent_first_touch(void **state)
{
    (void)state;
    mf_checkpoint ref, c;
    open_ckpt(&ref, us_data(MOE_DIST));
    open_ckpt(&c, us_data(MOE_DIST));
    size_t n, n_ref;
    const mf_shard **shards = all_shards(&c, &n), **ref_shards = all_shards(&ref, &n_ref);
    assert_int_equal(n, n_ref);
    assert_true(n > 100);
    size_t keys, chunks;
    mf_checkpoint_dist_counts(&c, &keys, &chunks);
    assert_true(keys > 0 && chunks > 0);

    mf_tensor *want = calloc(n, sizeof *want);
    assert_non_null(want);
    for (size_t i = 0; i < n; i++)
        if (mf_shard_locate(ref_shards[i], &want[i]) != MF_OK)
            fail_msg("locate: %s", mf_error());

    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS);
    locate_job jobs[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (locate_job){ shards, n, (size_t)t * n / THREADS, calloc(n, sizeof(mf_tensor)), 0, &go };
        assert_non_null(jobs[t].out);
        assert_int_equal(pthread_create(&th[t], NULL, locate_all, &jobs[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&go);
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(jobs[t].failures, 0);
        for (size_t i = 0; i < n; i++)
            assert_same_tensor(&jobs[t].out[i], &want[i]);
        free(jobs[t].out);
    }
    free(want);
    free(shards);
    free(ref_shards);
    mf_checkpoint_close(&c);
    mf_checkpoint_close(&ref);
}

static void test_changed_file_fails_every_time(void **state)
{
    (void)state;
    char ckpt[4096], cmd[9000], victim[4200];
    snprintf(ckpt, sizeof ckpt, "%s", us_tmp("changed"));
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", ckpt, us_data(GPT_DIST), ckpt);
    assert_int_equal(system(cmd), 0);
    mf_checkpoint c;
    open_ckpt(&c, ckpt);
    snprintf(victim, sizeof victim, "%s/iter_0000010/__1_0.distcp", ckpt);

    struct timespec tick = { 0, 20 * 1000000L };
    nanosleep(&tick, NULL);           /* the copy's timestamp tick is over */
    int fd = open(victim, O_RDWR);    /* same bytes, written in place: a change all the same */
    assert_true(fd >= 0);
    char b;
    assert_int_equal(pread(fd, &b, 1, 0), 1);
    assert_int_equal(pwrite(fd, &b, 1, 0), 1);
    close(fd);

    size_t n;
    const mf_shard **shards = all_shards(&c, &n);
    int changed = 0, fine = 0;
    for (size_t i = 0; i < n; i++) {
        mf_tensor out;
        int rc = mf_shard_locate(shards[i], &out);
        if (strcmp(c.files[shards[i]->file].name, "__1_0.distcp") != 0) {
            assert_int_equal(rc, MF_OK);
            fine++;
            continue;
        }
        assert_int_equal(rc, MF_ERR_CHANGED);
        char first[1024];
        snprintf(first, sizeof first, "%s", mf_error());
        assert_non_null(strstr(first, "__1_0.distcp"));
        mf_error_clear();
        assert_int_equal(mf_shard_locate(shards[i], &out), MF_ERR_CHANGED);   /* again, same words */
        assert_string_equal(mf_error(), first);
        changed++;
    }
    assert_true(changed > 0 && fine > 0);
    free(shards);
    mf_checkpoint_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legacy_shard_is_its_tensor),
        cmocka_unit_test(test_concurrent_first_touch),
        cmocka_unit_test(test_changed_file_fails_every_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
