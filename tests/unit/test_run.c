/* Unit tests of a mounted training run (core/run_*.c): which iterations a scan shows (the tracker
 * confirms them, the save is finished, no file newer than the tracker), generations when an
 * iteration is re-saved in place, deletions, the LRU of built views, and the inotify watcher.
 * Runs are copies of the real fixtures in tests/data, changed in a scratch folder. */
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
#include "mcorefs/run.h"
#include "unit_support.h"

#define LEGACY "megatron/head_gpt_tp2pp2_torch"
#define DIST "megatron/head_gpt_tp2pp2_torch_dist"

static void sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static void sleep_ms(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* A fresh run folder `name` in the scratch dir; returns its path (static buffer per call site). */
static const char *new_run(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", us_tmp(name));
    sh("rm -rf '%s' && mkdir -p '%s'", buf, buf);
    return buf;
}

/* Copy the fixture's iter_0000010 as iteration `it` of the run (old mtimes kept: cp -a). */
static void add_iteration(const char *run, const char *fixture, int it)
{
    sh("cp -a '%s/iter_0000010' '%s/iter_%07d'", us_data(fixture), run, it);
}

static void write_tracker(const char *run, const char *text)
{
    char p[8192];
    snprintf(p, sizeof p, "%s/latest_checkpointed_iteration.txt", run);
    assert_int_equal(us_write_file(p, text, strlen(text)), 0);
}

/* Set a file's mtime `secs` from now. */
static void set_mtime(const char *path, int secs)
{
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec += secs;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static size_t shown(mf_run *r, char names[][MF_RUN_NAME_MAX], char *latest)
{
    char **v, l[MF_RUN_NAME_MAX];
    size_t n;
    assert_int_equal(mf_run_list(r, &v, &n, l), MF_OK);
    for (size_t i = 0; i < n; i++) {
        if (names)
            snprintf(names[i], MF_RUN_NAME_MAX, "%s", v[i]);
        free(v[i]);
    }
    free(v);
    if (latest)
        snprintf(latest, MF_RUN_NAME_MAX, "%s", l);
    return n;
}

static const mf_run_params NO_WATCH = { 4, 3600 * 1000, 0 };

/* An iteration folder given instead of the run's save folder is refused, naming it. */
static void test_iteration_folder_refused(void **state)
{
    (void)state;
    char run[4096], p[8192];
    mf_options o;
    mf_options_init(&o);
    new_run("not_a_run", run, sizeof run);
    add_iteration(run, LEGACY, 10);
    snprintf(p, sizeof p, "%s/iter_0000010", run);
    mf_run *r = NULL;
    assert_int_equal(mf_run_open(&r, p, &o, &NO_WATCH), MF_ERR_INVALID);
    assert_null(r);
    assert_non_null(strstr(mf_error(), "iter_0000010: is the folder of one iteration"));
    mf_options_free(&o);
}

/* Only iterations the tracker confirms are shown; latest follows the tracker. */
static void test_tracker_confirms(void **state)
{
    (void)state;
    char run[4096], names[8][MF_RUN_NAME_MAX], latest[MF_RUN_NAME_MAX];
    mf_options o;
    mf_options_init(&o);
    new_run("confirm", run, sizeof run);
    add_iteration(run, LEGACY, 10);
    add_iteration(run, LEGACY, 20);
    mf_run *r;
    assert_int_equal(mf_run_open(&r, run, &o, &NO_WATCH), MF_OK);
    assert_int_equal(shown(r, NULL, latest), 0);   /* no tracker: nothing confirmed */
    assert_string_equal(latest, "");

    write_tracker(run, "10\n");
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(shown(r, names, latest), 1);
    assert_string_equal(names[0], "iter_0000010");
    assert_string_equal(latest, "iter_0000010");
    assert_int_equal(mf_run_visible(r, "iter_0000020", NULL), 0);

    write_tracker(run, "");   /* Megatron's open('w') truncates first: keep what we had */
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(shown(r, NULL, latest), 1);
    assert_string_equal(latest, "iter_0000010");

    write_tracker(run, "20");
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(shown(r, names, latest), 2);
    assert_string_equal(names[1], "iter_0000020");
    assert_string_equal(latest, "iter_0000020");
    mf_run_close(r);
    mf_options_free(&o);
}

/* A save in progress is never shown: a missing rank, an unfinished zip, an unfinished .metadata,
 * a file newer than the tracker. */
static void test_unfinished_saves(void **state)
{
    (void)state;
    char run[4096], p[8192], p2[16384];
    new_run("unfinished", run, sizeof run);
    add_iteration(run, LEGACY, 10);
    snprintf(p, sizeof p, "%s/iter_0000010", run);
    assert_int_equal(mf_run_check_structure(p), 1);
    sh("mv '%s/mp_rank_01_001' '%s/../rank_aside'", p, p);   /* one rank missing */
    assert_int_equal(mf_run_check_structure(p), 0);
    sh("mv '%s/../rank_aside' '%s/mp_rank_01_001'", p, p);
    snprintf(p2, sizeof p2, "%s/mp_rank_01_001/model_optim_rng.pt", p);
    sh("truncate -s -30 '%s'", p2);   /* torch.save still writing: no end record */
    assert_int_equal(mf_run_check_structure(p), 0);

    new_run("unfinished_dist", run, sizeof run);
    add_iteration(run, DIST, 10);
    snprintf(p, sizeof p, "%s/iter_0000010", run);
    assert_int_equal(mf_run_check_structure(p), 1);
    snprintf(p2, sizeof p2, "%s/.metadata", p);
    sh("truncate -s -1 '%s'", p2);   /* .metadata cut before its STOP byte */
    assert_int_equal(mf_run_check_structure(p), 0);

    /* finished, confirmed, but a file newer than the tracker: a re-save in progress */
    new_run("newer", run, sizeof run);
    add_iteration(run, DIST, 10);
    write_tracker(run, "10");
    mf_run_tracker t;
    mf_run_dir *d;
    size_t n;
    assert_int_equal(mf_run_read_tracker(run, &t), MF_OK);
    assert_int_equal(mf_run_list_dirs(run, &t, NULL, 0, &d, &n), MF_OK);
    assert_int_equal(n, 1);
    assert_int_equal(mf_run_dir_complete(&d[0], &t), 1);
    mf_run_dirs_free(d, n);
    snprintf(p, sizeof p, "%s/iter_0000010/__0_0.distcp", run);
    set_mtime(p, 5);
    assert_int_equal(mf_run_list_dirs(run, &t, NULL, 0, &d, &n), MF_OK);
    assert_int_equal(mf_run_dir_complete(&d[0], &t), 0);
    mf_run_dirs_free(d, n);
}

/* A release folder is shown when finished, whatever the tracker says. */
static void test_release(void **state)
{
    (void)state;
    char run[4096], names[4][MF_RUN_NAME_MAX], latest[MF_RUN_NAME_MAX];
    mf_options o;
    mf_options_init(&o);
    new_run("release", run, sizeof run);
    add_iteration(run, LEGACY, 10);
    sh("cp -a '%s/iter_0000010' '%s/release'", run, run);
    write_tracker(run, "10");
    mf_run *r;
    assert_int_equal(mf_run_open(&r, run, &o, &NO_WATCH), MF_OK);
    assert_int_equal(shown(r, names, latest), 2);
    assert_string_equal(names[0], "iter_0000010");
    assert_string_equal(names[1], "release");
    assert_string_equal(latest, "iter_0000010");
    write_tracker(run, "release");
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(shown(r, names, latest), 1);   /* 'release' confirms no numbered iteration */
    assert_string_equal(latest, "release");
    mf_run_view *v;
    assert_int_equal(mf_run_acquire(r, "release", &v), MF_OK);
    assert_non_null(mf_session_lookup(v->s, "config.json"));
    mf_run_release(r, v);
    mf_run_close(r);
    mf_options_free(&o);
}

/* Re-saved in place: hidden while being written, then a new generation; the old view is stale.
 * Deleted: gone, its (pinned) view stale, acquire refused. */
static void test_generations_and_deletion(void **state)
{
    (void)state;
    char run[4096], p[8192];
    mf_options o;
    mf_options_init(&o);
    new_run("gens", run, sizeof run);
    add_iteration(run, DIST, 10);
    add_iteration(run, DIST, 20);
    write_tracker(run, "20");
    mf_run *r;
    mf_run_view *v1, *v2, *v3;
    assert_int_equal(mf_run_open(&r, run, &o, &NO_WATCH), MF_OK);
    assert_int_equal(mf_run_acquire(r, "iter_0000020", &v1), MF_OK);
    uint64_t gen1 = v1->gen;
    assert_int_equal(mf_run_view_stale(v1), 0);

    /* a rank file rewritten after the tracker: hidden, the open view stale */
    snprintf(p, sizeof p, "%s/iter_0000020/__0_0.distcp", run);
    set_mtime(p, 2);
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(mf_run_view_stale(v1), 1);
    assert_int_equal(mf_run_visible(r, "iter_0000020", NULL), 0);
    assert_int_equal(mf_run_acquire(r, "iter_0000020", &v2), MF_ERR_MISSING);

    /* the save finishes: the tracker is written again, after the files */
    write_tracker(run, "20");
    snprintf(p, sizeof p, "%s/latest_checkpointed_iteration.txt", run);
    set_mtime(p, 3);
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(mf_run_acquire(r, "iter_0000020", &v2), MF_OK);
    assert_true(v2 != v1);
    assert_true(v2->gen != gen1);
    assert_int_equal(mf_run_view_stale(v2), 0);
    mf_run_release(r, v1);   /* the stale one goes now */

    /* deleted under a pinned view */
    assert_int_equal(mf_run_acquire(r, "iter_0000010", &v3), MF_OK);
    sh("rm -rf '%s/iter_0000010'", run);
    assert_int_equal(mf_run_refresh(r, 1), MF_OK);
    assert_int_equal(mf_run_view_stale(v3), 1);
    assert_int_equal(mf_run_visible(r, "iter_0000010", NULL), 0);
    mf_run_view *again;
    assert_int_equal(mf_run_acquire(r, "iter_0000010", &again), MF_ERR_MISSING);
    mf_run_release(r, v3);
    mf_run_stats st;
    mf_run_get_stats(r, &st);
    assert_int_equal(st.n_views, 1);   /* only v2 is left */
    mf_run_release(r, v2);
    mf_run_close(r);
    mf_options_free(&o);
}

/* At most max_views built; views in use are never closed; views are built on first use. */
static void test_lru(void **state)
{
    (void)state;
    char run[4096];
    mf_options o;
    mf_options_init(&o);
    new_run("lru", run, sizeof run);
    for (int it = 10; it <= 40; it += 10)
        add_iteration(run, DIST, it);
    write_tracker(run, "40");
    mf_run_params p = { 2, 3600 * 1000, 0 };
    mf_run *r;
    mf_run_stats st;
    assert_int_equal(mf_run_open(&r, run, &o, &p), MF_OK);
    mf_run_get_stats(r, &st);
    assert_int_equal(st.n_visible, 4);
    assert_int_equal(st.n_builds, 0);   /* nothing built at mount */

    mf_run_view *pinned, *v;
    assert_int_equal(mf_run_acquire(r, "iter_0000010", &pinned), MF_OK);
    const char *others[] = { "iter_0000020", "iter_0000030", "iter_0000040", "iter_0000020" };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mf_run_acquire(r, others[i], &v), MF_OK);
        mf_run_release(r, v);
        mf_run_get_stats(r, &st);
        assert_true(st.n_views <= 2);
    }
    assert_int_equal(mf_run_view_stale(pinned), 0);
    assert_non_null(mf_session_lookup(pinned->s, "config.json"));   /* still alive */
    mf_run_get_stats(r, &st);
    assert_int_equal(st.n_builds, 5);   /* 10 (pinned), 20, 30 (evicts 20), 40 (evicts 30), 20 (evicts 40) */
    assert_int_equal(st.n_evictions, 3);
    assert_int_equal(st.n_pinned, 1);
    /* a built view is reused, not rebuilt */
    assert_int_equal(mf_run_acquire(r, "iter_0000010", &v), MF_OK);
    assert_ptr_equal(v, pinned);
    mf_run_release(r, v);
    mf_run_release(r, pinned);
    mf_run_close(r);
    mf_options_free(&o);
}

/* A broken iteration fails its own acquire with a message naming it; others keep working. */
static void test_broken_iteration(void **state)
{
    (void)state;
    char run[4096], p[8192];
    mf_options o;
    mf_options_init(&o);
    new_run("broken", run, sizeof run);
    add_iteration(run, LEGACY, 10);
    add_iteration(run, LEGACY, 20);
    snprintf(p, sizeof p, "%s/iter_0000020/mp_rank_00_000/model_optim_rng.pt", run);
    sh("dd if=/dev/zero of='%s' bs=1 count=64 seek=0 conv=notrunc status=none", p);   /* header gone, end record kept */
    sh("touch -d '2000-01-01' '%s'", p);
    write_tracker(run, "20");
    mf_run *r;
    mf_run_view *v;
    assert_int_equal(mf_run_open(&r, run, &o, &NO_WATCH), MF_OK);
    assert_int_not_equal(mf_run_acquire(r, "iter_0000020", &v), MF_OK);
    assert_non_null(strstr(mf_error(), "iter_0000020"));
    assert_int_not_equal(mf_run_acquire(r, "iter_0000020", &v), MF_OK);   /* not rebuilt each time */
    mf_run_stats st;
    mf_run_get_stats(r, &st);
    assert_int_equal(st.n_builds, 1);
    assert_int_equal(mf_run_acquire(r, "iter_0000010", &v), MF_OK);
    mf_run_release(r, v);
    mf_run_close(r);
    mf_options_free(&o);
}

/* The watcher sees a new save (tracker written) without any re-check being due. */
static void test_watcher(void **state)
{
    (void)state;
    char run[4096], latest[MF_RUN_NAME_MAX];
    mf_options o;
    mf_options_init(&o);
    new_run("watch", run, sizeof run);
    add_iteration(run, DIST, 10);
    write_tracker(run, "10");
    mf_run_params p = { 4, 3600 * 1000, 1 };
    mf_run *r;
    assert_int_equal(mf_run_open(&r, run, &o, &p), MF_OK);
    mf_run_stats st;
    mf_run_get_stats(r, &st);
    if (!st.watching) {
        mf_run_close(r);
        mf_options_free(&o);
        skip();
    }
    add_iteration(run, DIST, 20);
    write_tracker(run, "20");
    int seen = 0;
    for (int i = 0; i < 200 && !seen; i++) {
        sleep_ms(10);
        shown(r, NULL, latest);
        seen = strcmp(latest, "iter_0000020") == 0;
    }
    assert_true(seen);
    sh("rm -rf '%s/iter_0000010'", run);
    for (int i = 0; i < 200 && mf_run_visible(r, "iter_0000010", NULL); i++)
        sleep_ms(10);
    assert_int_equal(mf_run_visible(r, "iter_0000010", NULL), 0);
    mf_run_close(r);
    mf_options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iteration_folder_refused),
        cmocka_unit_test(test_tracker_confirms),
        cmocka_unit_test(test_unfinished_saves),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_generations_and_deletion),
        cmocka_unit_test(test_lru),
        cmocka_unit_test(test_broken_iteration),
        cmocka_unit_test(test_watcher),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
