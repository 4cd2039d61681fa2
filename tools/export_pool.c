/* Ranges of the output files handed out to a few worker threads; the main thread only draws the
 * progress and waits. Each worker stays on a file of its own while there is one: writes to one
 * file serialise on its inode lock in the kernel (and the waiter spins), and a file written front
 * to back by one thread stays sequential on disk. One mutex hands out the next range. */
#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "export_copy.h"
#include "export_pool.h"
#include "mcorefs/error.h"

/* One worker's unit. Small enough that gathered bytes are still in the CPU cache when they are
 * written: with 16 MiB units, writing gathered bytes from memory cost twice the system time of
 * 256 KiB units (3.15 GB dense export: 2.8 s vs 1.4 s); copy_file_range does not care. */
#define RANGE (256u << 10)
#define MAX_THREADS 64

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

typedef struct {
    const mf_session *s;
    const export_target *t;
    size_t n;
    const volatile sig_atomic_t *stop;
    export_copier copier;
    pthread_mutex_t lock;
    pthread_cond_t changed;     /* a worker finished */
    uint64_t *next_off;         /* per file: the next range to hand out (under lock) */
    int *workers;               /* per file: workers on it now (under lock) */
    int running;                /* workers not finished (under lock) */
    int rc;                     /* the first failure (under lock), its message in err */
    char err[1024];
    uint64_t done;              /* bytes written; atomic */
} pool;

/* The next range for the worker now on *file (SIZE_MAX: none yet): the rest of its file while no
 * other worker is on it, else the file with the fewest workers (then the first in order).
 * 0 when there is no range left or the export is stopping. */
static int claim(pool *p, size_t *file, uint64_t *off, size_t *len)
{
    int got = 0;
    pthread_mutex_lock(&p->lock);
    size_t cur = *file;
    if (cur != SIZE_MAX && (p->workers[cur] > 1 || p->next_off[cur] >= p->t[cur].file->size)) {
        p->workers[cur]--;
        cur = SIZE_MAX;
    }
    if (cur == SIZE_MAX) {
        for (size_t i = 0; i < p->n; i++)
            if (p->next_off[i] < p->t[i].file->size && (cur == SIZE_MAX || p->workers[i] < p->workers[cur]))
                cur = i;
        if (cur != SIZE_MAX)
            p->workers[cur]++;
    }
    if (cur != SIZE_MAX && p->rc == MF_OK && !*p->stop) {
        uint64_t size = p->t[cur].file->size;
        *off = p->next_off[cur];
        *len = size - *off < RANGE ? (size_t)(size - *off) : RANGE;
        p->next_off[cur] += *len;
        got = 1;
    }
    *file = cur;
    pthread_mutex_unlock(&p->lock);
    return got;
}

static void finish(pool *p, int rc)
{
    pthread_mutex_lock(&p->lock);
    if (rc != MF_OK && p->rc == MF_OK) {
        p->rc = rc;
        snprintf(p->err, sizeof p->err, "%s", mf_error());
    }
    p->running--;
    pthread_cond_signal(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

static void *worker(void *arg)
{
    pool *p = arg;
    export_scratch sc;
    int rc = export_scratch_init(&sc, RANGE);
    size_t file = SIZE_MAX, len;
    uint64_t off;
    while (rc == MF_OK && claim(p, &file, &off, &len)) {
        const export_target *t = &p->t[file];
        rc = export_copy_range(&p->copier, t->file, t->fd, t->name, off, len, &sc, p->stop);
        if (rc == MF_OK)
            __atomic_fetch_add(&p->done, len, __ATOMIC_RELAXED);
    }
    export_scratch_free(&sc);
    finish(p, rc);
    return NULL;
}

int export_pool_default_threads(void)
{
    /* 4 even on 2 CPUs: the workers stay on files of their own (no lock between them), and on a
     * busy machine more threads get more of its time; measured on the 2-CPU box under load 10,
     * 3.15 GB dense, --no-sync: 1 thread 6.0-6.9 s, 2 threads 4.4-5.6 s, 4 threads 4.0-5.1 s */
    return 4;
}

int export_pool_run(const mf_session *s, const export_target *t, size_t n, const export_pool_opts *o,
                    const volatile sig_atomic_t *stop, export_pool_stats *st)
{
    pool p = { .s = s, .t = t, .n = n, .stop = stop };
    p.next_off = calloc(n ? n : 1, sizeof *p.next_off);
    p.workers = calloc(n ? n : 1, sizeof *p.workers);
    if (!p.next_off || !p.workers) {
        free(p.next_off);
        free(p.workers);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.changed, NULL);
    export_copier_init(&p.copier, s, o->kernel_copy);
    progress pr = { .t0 = now(), .tty = isatty(2) };
    for (size_t i = 0; i < n; i++)
        pr.total += t[i].file->size;
    int want = o->threads > 0 ? o->threads : export_pool_default_threads();
    want = want > MAX_THREADS ? MAX_THREADS : want;
    pthread_t tids[MAX_THREADS];
    int started = 0;
    pthread_mutex_lock(&p.lock);
    for (; started < want; started++) {
        p.running++;
        if (pthread_create(&tids[started], NULL, worker, &p) != 0) {
            p.running--;
            break;   /* fewer workers, still correct */
        }
    }
    pthread_mutex_unlock(&p.lock);
    if (started == 0) {   /* no thread at all: do the work here */
        p.running = 1;
        worker(&p);
    }
    for (;;) {   /* draw outside the lock: workers claim ranges meanwhile */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&p.lock);
        if (p.running > 0)
            pthread_cond_timedwait(&p.changed, &p.lock, &until);
        int running = p.running, failed = p.rc != MF_OK;
        pthread_mutex_unlock(&p.lock);
        if (running == 0)
            break;
        pr.done = __atomic_load_n(&p.done, __ATOMIC_RELAXED);
        if (!failed && !*stop)
            draw(&pr, 0);
    }
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    int rc = p.rc;
    if (rc != MF_OK)
        mf_fail(rc, "%s", p.err);
    else if (*stop)
        rc = mf_fail(MF_ERR_IO, "interrupted by signal %d", (int)*stop);
    pr.done = p.done;
    if (rc == MF_OK)
        draw(&pr, 1);
    st->bytes = p.done;
    st->kernel_bytes = p.copier.kernel_bytes;
    st->user_bytes = p.copier.user_bytes;
    st->threads = started ? started : 1;
    st->seconds = now() - pr.t0;
    pthread_cond_destroy(&p.changed);
    pthread_mutex_destroy(&p.lock);
    free(p.next_off);
    free(p.workers);
    return rc;
}
