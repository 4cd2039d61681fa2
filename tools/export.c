/* mcorefs-inspect export CKPT OUTDIR: write the view to disk without FUSE.
 * Atomic: every file goes to a hidden temp name (.NAME.PID.mcorefs-partial) and is renamed only
 * after all were written (and, unless --no-sync, synced by one syncfs), config.json last, so an
 * interrupted export never looks complete. The bytes are written by export_pool.c.
 * SIGINT/SIGTERM remove the partial files before the process dies of the signal; partial files
 * of exports whose process is gone (killed hard, machine crash) are removed by the next export. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "export.h"
#include "export_pool.h"
#include "mcorefs/error.h"
#include "mcorefs/fileid.h"

#define PARTIAL_SUFFIX ".mcorefs-partial"

static volatile sig_atomic_t stop_signal; /* SIGINT/SIGTERM seen during the export */

static void on_stop(int sig)
{
    stop_signal = sig;
}

static int interrupted(void)
{
    return stop_signal ? mf_fail(MF_ERR_IO, "interrupted by signal %d", (int)stop_signal) : MF_OK;
}

static void partial_name(char *buf, size_t n, const char *outdir, const char *name)
{
    snprintf(buf, n, "%s/.%s.%ld%s", outdir, name, (long)getpid(), PARTIAL_SUFFIX);
}

/* Remove the partial files that exports which are no longer running left in outdir. The pid in
 * the name tells a live export (kept) from a dead one; names without a pid are from before. */
static int remove_stale_partials(const char *outdir)
{
    DIR *dir = opendir(outdir);
    if (!dir)
        return 0;
    int removed = 0;
    char path[4096];
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        size_t n = strlen(e->d_name), sl = strlen(PARTIAL_SUFFIX);
        if (e->d_name[0] != '.' || n <= sl + 1 || strcmp(e->d_name + n - sl, PARTIAL_SUFFIX) != 0)
            continue;
        const char *end = e->d_name + n - sl, *p = end;
        while (p > e->d_name && p[-1] >= '0' && p[-1] <= '9')
            p--;
        long pid = p < end && p[-1] == '.' ? strtol(p, NULL, 10) : 0;
        if (pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue; /* that export is still running */
        if (snprintf(path, sizeof path, "%s/%s", outdir, e->d_name) < (int)sizeof path && unlink(path) == 0)
            removed++;
    }
    closedir(dir);
    return removed;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The hidden .mcorefs/ folder (manifest, live stats) describes the mount, not the model. */
static int exported(const mf_vfile *f)
{
    return strchr(f->name, '/') == NULL;
}

static int export_files(const mf_session *s, const char *outdir, const mf_export_opts *o);

int mf_export(const mf_session *s, const char *outdir, const mf_export_opts *o)
{
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: a blocked write returns and the workers stop */
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = export_files(s, outdir, o);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc && stop_signal) { /* partial files are gone: now die of the signal, as the caller expects */
        fprintf(stderr, "export: interrupted, partial files removed from %s\n", outdir);
        raise(stop_signal);
    }
    return rc;
}

/* Every rank file is still the one read at mount: the kernel copied bytes after the view's own
 * checks, so a file rewritten during the export is caught here at the latest. */
static int sources_unchanged(const mf_session *s)
{
    for (size_t i = 0; i < s->ckpt.n_files; i++) {
        const mf_rankfile *f = &s->ckpt.files[i];
        if (s->fds[i] >= 0 && mf_file_id_check(s->fds[i], &f->id, f->path) != MF_OK)
            return mf_fail_ctx(MF_ERR_CHANGED, "a rank file changed during the export");
    }
    return MF_OK;
}

/* The view's files in export order: config.json (files[0]) last, the .mcorefs/ folder left out. */
static size_t export_order(const mf_session *s, size_t *order)
{
    size_t n = 0;
    for (size_t k = 1; k <= s->n_files; k++)
        if (exported(&s->files[k % s->n_files]))
            order[n++] = k % s->n_files;
    return n;
}

/* Open a partial file for each; the bytes come from the pool. */
static int open_partials(const mf_session *s, const char *outdir, const size_t *order, size_t n, export_target *t,
                         char (*tmp)[4096])
{
    for (size_t i = 0; i < n; i++) {
        partial_name(tmp[i], sizeof tmp[i], outdir, s->files[order[i]].name);
        t[i] = (export_target){ &s->files[order[i]], -1, tmp[i] };
        t[i].fd = open(tmp[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (t[i].fd < 0)
            return mf_fail(MF_ERR_IO, "%s: %s", tmp[i], strerror(errno));
    }
    return MF_OK;
}

static int close_partials(export_target *t, size_t n, int rc)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].fd >= 0 && close(t[i].fd) != 0 && rc == MF_OK)
            rc = mf_fail(MF_ERR_IO, "%s: %s", t[i].name, strerror(errno));
    return rc;
}

/* One syncfs for the whole export (instead of an fsync per file): the data of every partial
 * file is on disk before any of them gets its name. */
static int sync_data(const export_target *t, size_t n, const char *outdir, double *seconds)
{
    double t0 = now();
    int rc = MF_OK;
    if (n > 0 && syncfs(t[0].fd) != 0)
        rc = mf_fail(MF_ERR_IO, "%s: syncfs: %s", outdir, strerror(errno));
    *seconds = now() - t0;
    return rc;
}

/* The renames themselves on disk too. */
static int sync_dir(const char *outdir)
{
    int fd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return mf_fail(MF_ERR_IO, "%s: fsync: %s", outdir, strerror(e));
    }
    close(fd);
    return MF_OK;
}

static void report(const export_pool_stats *st, size_t files, const mf_export_opts *o, double sync_s)
{
    char synced[64];
    if (o->no_sync)
        snprintf(synced, sizeof synced, "not synced (--no-sync)");
    else
        snprintf(synced, sizeof synced, "synced to disk in %.1f s", sync_s);
    fprintf(stderr, "export: %zu files, %.1f MB in %.1f s with %d thread%s: %.1f MB copied by the kernel "
            "(copy_file_range), %.1f MB written from memory; %s\n", files, st->bytes / 1e6, st->seconds + sync_s,
            st->threads, st->threads == 1 ? "" : "s", st->kernel_bytes / 1e6, st->user_bytes / 1e6, synced);
}

static int export_files(const mf_session *s, const char *outdir, const mf_export_opts *o)
{
    char path[4096];
    struct stat st;
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST)
        return mf_fail(MF_ERR_IO, "%s: %s", outdir, strerror(errno));
    for (size_t i = 0; i < s->n_files && !o->force; i++) {
        if (!exported(&s->files[i]))
            continue;
        snprintf(path, sizeof(path), "%s/%s", outdir, s->files[i].name);
        if (stat(path, &st) == 0)
            return mf_fail(MF_ERR_INVALID, "%s exists (use --force to overwrite)", path);
    }
    int stale = remove_stale_partials(outdir);
    if (stale)
        fprintf(stderr, "export: removed %d partial file%s left in %s by an interrupted export\n", stale,
                stale == 1 ? "" : "s", outdir);
    size_t *order = malloc((s->n_files + 1) * sizeof *order);
    export_target *t = calloc(s->n_files + 1, sizeof *t);
    char(*tmp)[4096] = calloc(s->n_files + 1, sizeof *tmp);
    if (!order || !t || !tmp) {
        free(order);
        free(t);
        free(tmp);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    size_t n = export_order(s, order);
    for (size_t i = 0; i < n; i++)
        t[i].fd = -1;
    int rc = open_partials(s, outdir, order, n, t, tmp);
    export_pool_opts po = { o->threads, getenv("MCOREFS_EXPORT_NO_KERNEL_COPY") == NULL };
    export_pool_stats ps = { 0 };
    double sync_s = 0;
    if (rc == MF_OK)
        rc = export_pool_run(s, t, n, &po, &stop_signal, &ps);
    if (rc == MF_OK && !o->no_sync)
        rc = sync_data(t, n, outdir, &sync_s);
    rc = close_partials(t, n, rc);
    if (rc == MF_OK)
        rc = interrupted(); /* once renaming starts it finishes: it takes no time */
    if (rc == MF_OK)
        rc = sources_unchanged(s);
    for (size_t i = 0; i < n && rc == MF_OK; i++) {
        snprintf(path, sizeof(path), "%s/%s", outdir, t[i].file->name);
        if (rename(tmp[i], path) != 0)
            rc = mf_fail(MF_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (rc == MF_OK && !o->no_sync)
        rc = sync_dir(outdir);
    if (rc) {   /* leave nothing that looks like a finished export */
        for (size_t i = 0; i < n; i++)
            unlink(tmp[i]);
    } else {
        report(&ps, n, o, sync_s);
    }
    free(order);
    free(t);
    free(tmp);
    return rc;
}
