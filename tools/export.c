/* mcorefs-inspect export CKPT OUTDIR: write the view to disk without FUSE.
 * Atomic: every file goes to a hidden temp name (.NAME.PID.mcorefs-partial) and is renamed only
 * after all were written, config.json last, so an interrupted export never looks complete.
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
#include "mcorefs/error.h"

#define BUF (8u << 20)
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

typedef struct {
    uint64_t done, total, last_line;
    double t0, last_draw;
    int tty;
} progress;

static void draw(progress *p, int final)
{
    double t = now(), dt = t - p->t0;
    if (!final && t - p->last_draw < 0.2)
        return;
    p->last_draw = t;
    double rate = dt > 0 ? (double)p->done / dt : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
    double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
    if (p->tty) {
        int width = 30, fill = (int)(pct / 100.0 * width);
        fprintf(stderr, "\r[%.*s%*s] %5.1f%% %8.1f MB %7.1f MB/s ETA %4.0fs", fill,
                "##############################", width - fill, "", pct, p->done / 1e6, rate / 1e6, eta);
        if (final)
            fputc('\n', stderr);
    } else if (final || p->done - p->last_line >= p->total / 10 + 1) {
        p->last_line = p->done;
        fprintf(stderr, "export: %.1f%% %.1f MB %.1f MB/s ETA %.0fs\n", pct, p->done / 1e6, rate / 1e6, eta);
    }
}

static int write_file(const mf_session *s, const mf_vfile *f, const char *tmp, char *buf, progress *p)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return mf_fail(MF_ERR_IO, "%s: %s", tmp, strerror(errno));
    for (uint64_t off = 0; off < f->size;) {
        if (interrupted()) {
            close(fd);
            return MF_ERR_IO;
        }
        ssize_t n = mf_session_read(s, f, buf, BUF, off);
        if (n <= 0) {
            close(fd);
            return n < 0 ? (int)n : mf_fail(MF_ERR_IO, "%s: short read at %llu", f->name, (unsigned long long)off);
        }
        for (ssize_t w = 0; w < n;) {
            ssize_t k = write(fd, buf + w, (size_t)(n - w));
            if (k < 0) {
                if (errno == EINTR && !stop_signal)
                    continue;
                int e = errno;
                close(fd);
                return mf_fail(MF_ERR_IO, "%s: %s", tmp, strerror(e));
            }
            w += k;
        }
        off += (uint64_t)n;
        p->done += (uint64_t)n;
        draw(p, 0);
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return mf_fail(MF_ERR_IO, "%s: %s", tmp, strerror(errno));
    return MF_OK;
}

/* The hidden .mcorefs/ folder (manifest, live stats) describes the mount, not the model. */
static int exported(const mf_vfile *f)
{
    return strchr(f->name, '/') == NULL;
}

static int export_files(const mf_session *s, const char *outdir, int force);

int mf_export(const mf_session *s, const char *outdir, int force)
{
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: a blocked write returns and the loop stops */
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = export_files(s, outdir, force);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc && stop_signal) { /* partial files are gone: now die of the signal, as the caller expects */
        fprintf(stderr, "export: interrupted, partial files removed from %s\n", outdir);
        raise(stop_signal);
    }
    return rc;
}

static int export_files(const mf_session *s, const char *outdir, int force)
{
    char path[4096], tmp[4096];
    struct stat st;
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST)
        return mf_fail(MF_ERR_IO, "%s: %s", outdir, strerror(errno));
    for (size_t i = 0; i < s->n_files && !force; i++) {
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
    char *buf = malloc(BUF);
    if (!buf)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    progress p = { 0 };
    p.t0 = now();
    p.tty = isatty(2);
    for (size_t i = 0; i < s->n_files; i++)
        p.total += exported(&s->files[i]) ? s->files[i].size : 0;
    int rc = MF_OK;
    /* config.json is files[0]: write it last */
    for (size_t k = 1; k <= s->n_files && rc == 0; k++) {
        const mf_vfile *f = &s->files[k % s->n_files];
        if (!exported(f))
            continue;
        partial_name(tmp, sizeof(tmp), outdir, f->name);
        rc = write_file(s, f, tmp, buf, &p);
    }
    if (rc == 0)
        rc = interrupted(); /* once renaming starts it finishes: it takes no time */
    for (size_t k = 1; k <= s->n_files && rc == 0; k++) {
        const mf_vfile *f = &s->files[k % s->n_files];
        if (!exported(f))
            continue;
        partial_name(tmp, sizeof(tmp), outdir, f->name);
        snprintf(path, sizeof(path), "%s/%s", outdir, f->name);
        if (rename(tmp, path) != 0)
            rc = mf_fail(MF_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (rc) {   /* leave nothing that looks like a finished export */
        for (size_t k = 0; k < s->n_files; k++) {
            if (!exported(&s->files[k]))
                continue;
            partial_name(tmp, sizeof(tmp), outdir, s->files[k].name);
            unlink(tmp);
        }
    } else {
        draw(&p, 1);
    }
    free(buf);
    return rc;
}
