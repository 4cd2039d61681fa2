/* A mounted training run: the shown iterations, their generations, and an LRU of built views.
 *
 * Generations: an iteration shown with one fingerprint (the identity of every file its view
 * reads) is one generation. When its files change (re-saved in place) it is hidden until the
 * save is finished again (mf_run_dir_complete) and then shown as a new generation with a fresh
 * view; a view of an older generation, or of a deleted iteration, is stale: its reads fail. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "mcorefs/error.h"
#include "mcorefs/run.h"

typedef struct {
    char name[MF_RUN_NAME_MAX];
    uint64_t fingerprint;
    uint64_t gen;
    int64_t mtime_ns;
} shown_iter;

typedef struct {
    char name[MF_RUN_NAME_MAX];
    uint64_t gen;
    size_t n_files;
} gone_iter;

struct mf_run {
    char *save_dir;
    mf_options opts;
    mf_run_params p;
    pthread_mutex_t lock;        /* everything below */
    pthread_mutex_t scan_lock;   /* one scan at a time */
    pthread_mutex_t build_lock;  /* one view build at a time (builds are heavy; lookups of built views go on) */
    mf_run_tracker tracker;
    mf_run_dir *dirs;            /* the last scan */
    size_t n_dirs;
    shown_iter *shown;
    size_t n_shown;
    uint64_t next_gen;
    mf_run_view *views;
    size_t n_views;
    uint64_t clock;              /* LRU ticks */
    int64_t last_scan_ms;
    int dirty;                   /* the watcher saw a change */
    mf_run_watch *watch;
    mf_run_stats st;
    void (*on_gone)(void *, const char *, uint64_t, size_t);
    void *on_gone_arg;
    gone_iter *gone;             /* to hand to on_gone (watcher running only) */
    size_t n_gone;
};

#define MAX_PENDING_GONE 1024

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void view_free(mf_run_view *v)
{
    while (v) {
        mf_run_view *next = v->next;
        mf_session_close(v->s);
        free(v->error);
        free(v);
        v = next;
    }
}

static const shown_iter *find_shown(const mf_run *r, const char *name)
{
    for (size_t i = 0; i < r->n_shown; i++)
        if (strcmp(r->shown[i].name, name) == 0)
            return &r->shown[i];
    return NULL;
}

/* Unlink views to close (lock held): stale ones nobody uses, then the least recently used
 * unpinned ones while more than max_views are built. Returns them as a list to close unlocked. */
static mf_run_view *take_evictable(mf_run *r)
{
    mf_run_view *out = NULL, **pp = &r->views;
    while (*pp) {
        mf_run_view *v = *pp;
        if (v->refs == 0 && mf_run_view_stale(v)) {
            *pp = v->next;
            v->next = out;
            out = v;
            r->n_views--;
        } else {
            pp = &v->next;
        }
    }
    while (r->n_views > r->p.max_views) {
        mf_run_view **oldest = NULL;
        for (pp = &r->views; *pp; pp = &(*pp)->next)
            if ((*pp)->refs == 0 && (!oldest || (*pp)->last_use < (*oldest)->last_use))
                oldest = pp;
        if (!oldest)
            break;   /* all pinned by open files: they go when released */
        mf_run_view *v = *oldest;
        *oldest = v->next;
        v->next = out;
        out = v;
        r->n_views--;
        r->st.n_evictions++;
    }
    return out;
}

/* A new scan's result becomes the state (lock held). */
static void apply_scan(mf_run *r, const mf_run_tracker *t, mf_run_dir *dirs, size_t n)
{
    shown_iter *shown = calloc(n ? n : 1, sizeof(*shown));
    size_t n_shown = 0;
    if (!shown) {
        free(dirs);
        return;   /* keep the old state; the next scan tries again */
    }
    for (size_t i = 0; i < n; i++) {
        if (!mf_run_dir_complete(&dirs[i], t))
            continue;
        shown_iter *s = &shown[n_shown++];
        const shown_iter *old = find_shown(r, dirs[i].name);
        snprintf(s->name, sizeof(s->name), "%s", dirs[i].name);
        s->fingerprint = dirs[i].fingerprint;
        s->mtime_ns = dirs[i].newest_mtime_ns;
        if (old && old->fingerprint == dirs[i].fingerprint) {
            s->gen = old->gen;
        } else {
            s->gen = ++r->next_gen;
            r->st.n_generations++;
        }
    }
    for (size_t k = 0; k < r->n_shown && r->watch && r->on_gone; k++) {
        int same = 0;
        for (size_t i = 0; i < n_shown && !same; i++)
            same = strcmp(shown[i].name, r->shown[k].name) == 0 && shown[i].gen == r->shown[k].gen;
        if (!same && r->n_gone < MAX_PENDING_GONE) {
            if (!r->gone)
                r->gone = calloc(MAX_PENDING_GONE, sizeof(*r->gone));
            if (r->gone) {
                gone_iter *g = &r->gone[r->n_gone++];
                snprintf(g->name, sizeof(g->name), "%s", r->shown[k].name);
                g->gen = r->shown[k].gen;
                g->n_files = 0;
                for (mf_run_view *v = r->views; v; v = v->next)
                    if (v->gen == g->gen && v->s)
                        g->n_files = v->s->n_files;
            }
        }
    }
    for (mf_run_view *v = r->views; v; v = v->next) {
        int current = 0;
        for (size_t i = 0; i < n_shown && !current; i++)
            current = strcmp(shown[i].name, v->name) == 0 && shown[i].gen == v->gen;
        if (!current)
            __atomic_store_n(&v->stale, 1, __ATOMIC_RELEASE);
    }
    free(r->shown);
    r->shown = shown;
    r->n_shown = n_shown;
    free(r->dirs);
    r->dirs = dirs;
    r->n_dirs = n;
    r->tracker = *t;
    r->st.n_visible = n_shown;
}

int mf_run_refresh(mf_run *r, int force)
{
    /* the common case, on every read of a run mount: not due, decided without the lock */
    int64_t now = now_ms();
    int due = force || __atomic_load_n(&r->dirty, __ATOMIC_ACQUIRE) ||
              now - __atomic_load_n(&r->last_scan_ms, __ATOMIC_ACQUIRE) >= (int64_t)r->p.recheck_ms;
    if (!due)
        return MF_OK;
    pthread_mutex_lock(&r->scan_lock);
    pthread_mutex_lock(&r->lock);
    /* threads that saw it due at once queue on scan_lock: the first scans, the rest find it done */
    if (!force && !__atomic_load_n(&r->dirty, __ATOMIC_ACQUIRE) &&
        now_ms() - __atomic_load_n(&r->last_scan_ms, __ATOMIC_ACQUIRE) < (int64_t)r->p.recheck_ms) {
        pthread_mutex_unlock(&r->lock);
        pthread_mutex_unlock(&r->scan_lock);
        return MF_OK;
    }
    __atomic_store_n(&r->dirty, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&r->last_scan_ms, now_ms(), __ATOMIC_RELEASE);
    mf_run_tracker t;
    mf_run_dir *prev = NULL;
    size_t n_prev = r->n_dirs;
    if (n_prev && (prev = malloc(n_prev * sizeof(*prev))) != NULL)
        memcpy(prev, r->dirs, n_prev * sizeof(*prev));
    else
        n_prev = 0;
    mf_run_tracker old_t = r->tracker;
    mf_run_watch *watch = r->watch;
    pthread_mutex_unlock(&r->lock);

    mf_run_read_tracker(r->save_dir, &t);
    if (!t.present && t.exists && old_t.present)
        t = old_t;   /* the tracker is being rewritten (open 'w' truncates first): keep the last one */
    mf_run_dir *dirs;
    size_t n;
    int rc = mf_run_list_dirs(r->save_dir, &t, prev, n_prev, &dirs, &n);
    free(prev);
    if (rc == MF_OK && watch)
        for (size_t i = 0; i < n; i++) {
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s", r->save_dir, dirs[i].name);
            mf_run_watch_add(watch, path);
        }
    pthread_mutex_lock(&r->lock);
    r->st.n_scans++;
    if (rc == MF_OK)
        apply_scan(r, &t, dirs, n);
    else
        apply_scan(r, &t, calloc(1, sizeof(mf_run_dir)), 0);   /* the save folder is gone: nothing shown */
    mf_run_view *dead = take_evictable(r);
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&r->scan_lock);
    view_free(dead);
    return rc;
}

static void on_watch_change(void *arg)
{
    mf_run *r = arg;
    __atomic_store_n(&r->dirty, 1, __ATOMIC_RELEASE);
    mf_run_refresh(r, 1);
    for (;;) {   /* outside the lock: the callback talks to the kernel */
        gone_iter g;
        pthread_mutex_lock(&r->lock);
        int have = r->n_gone > 0;
        if (have)
            g = r->gone[--r->n_gone];
        pthread_mutex_unlock(&r->lock);
        if (!have)
            break;
        r->on_gone(r->on_gone_arg, g.name, g.gen, g.n_files);
    }
}

void mf_run_on_gone(mf_run *r, void (*cb)(void *arg, const char *name, uint64_t gen, size_t n_files), void *arg)
{
    pthread_mutex_lock(&r->lock);
    r->on_gone = cb;
    r->on_gone_arg = arg;
    pthread_mutex_unlock(&r->lock);
}

int mf_run_open(mf_run **out, const char *save_dir, const mf_options *o, const mf_run_params *p)
{
    char real[PATH_MAX];
    struct stat st;
    *out = NULL;
    if (stat(save_dir, &st) != 0 || !S_ISDIR(st.st_mode) || !realpath(save_dir, real))
        return mf_fail(MF_ERR_IO, "%s: not a folder (iterations=all needs the save folder of a run)", save_dir);
    if (mf_run_is_iteration_dir(real))
        return mf_fail(MF_ERR_INVALID, "%s: is the folder of one iteration; iterations=all needs the save folder of the "
                       "run (the one with latest_checkpointed_iteration.txt)", save_dir);
    mf_run *r = calloc(1, sizeof(*r));
    if (!r || !(r->save_dir = strdup(real))) {
        free(r);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    r->opts = *o;
    r->opts.iteration = -1;   /* each view is one iteration folder */
    r->opts.arch = o->arch ? strdup(o->arch) : NULL;
    r->opts.hf_config = o->hf_config ? strdup(o->hf_config) : NULL;
    r->opts.tokenizer = o->tokenizer ? strdup(o->tokenizer) : NULL;
    r->p = *p;
    if (r->p.max_views == 0)
        r->p.max_views = MF_RUN_DEFAULT_MAX_VIEWS;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->scan_lock, NULL);
    pthread_mutex_init(&r->build_lock, NULL);
    int rc = mf_run_refresh(r, 1);
    if (rc != MF_OK) {
        mf_run_close(r);
        return rc;
    }
    if (p->watch)
        mf_run_watch_begin(r);
    *out = r;
    return MF_OK;
}

void mf_run_watch_begin(mf_run *r)
{
    pthread_mutex_lock(&r->lock);
    int already = r->watch != NULL;
    pthread_mutex_unlock(&r->lock);
    if (already)
        return;
    mf_run_watch *w = mf_run_watch_start(r->save_dir, on_watch_change, r);
    pthread_mutex_lock(&r->lock);
    r->watch = w;
    r->st.watching = w != NULL;
    pthread_mutex_unlock(&r->lock);
    mf_run_refresh(r, 1);   /* a save that landed before the watch existed; also adds the folder watches */
}

void mf_run_watch_end(mf_run *r)
{
    pthread_mutex_lock(&r->lock);
    mf_run_watch *w = r->watch;
    r->watch = NULL;
    r->on_gone = NULL;
    r->st.watching = 0;
    pthread_mutex_unlock(&r->lock);
    mf_run_watch_stop(w);   /* joins the thread: no callback runs after this returns */
}

void mf_run_close(mf_run *r)
{
    if (!r)
        return;
    mf_run_watch_stop(r->watch);   /* first: its thread calls back into r */
    view_free(r->views);
    free(r->gone);
    free(r->shown);
    free(r->dirs);
    mf_options_free(&r->opts);
    free(r->save_dir);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->scan_lock);
    pthread_mutex_destroy(&r->build_lock);
    free(r);
}

int mf_run_list(mf_run *r, char ***names, size_t *n, char latest[MF_RUN_NAME_MAX])
{
    return mf_run_list_gens(r, names, NULL, n, latest);
}

int mf_run_list_gens(mf_run *r, char ***names, uint64_t **gens, size_t *n, char latest[MF_RUN_NAME_MAX])
{
    pthread_mutex_lock(&r->lock);
    *names = calloc(r->n_shown ? r->n_shown : 1, sizeof(char *));
    uint64_t *g = gens ? calloc(r->n_shown ? r->n_shown : 1, sizeof(uint64_t)) : NULL;
    *n = 0;
    latest[0] = 0;
    if (gens && !g) {
        free(*names);
        *names = NULL;
    }
    for (size_t i = 0; *names && i < r->n_shown; i++)
        if (((*names)[*n] = strdup(r->shown[i].name)) != NULL) {
            if (g)
                g[*n] = r->shown[i].gen;
            (*n)++;
        }
    if (gens)
        *gens = g;
    if (r->tracker.present) {
        char want[MF_RUN_NAME_MAX];
        if (r->tracker.release)
            snprintf(want, sizeof(want), "release");
        else
            snprintf(want, sizeof(want), "iter_%07lld", (long long)r->tracker.iter);
        if (find_shown(r, want))
            snprintf(latest, MF_RUN_NAME_MAX, "%s", want);
    }
    pthread_mutex_unlock(&r->lock);
    return *names ? MF_OK : mf_fail(MF_ERR_NOMEM, "out of memory");
}

int mf_run_visible(mf_run *r, const char *name, struct stat *st)
{
    pthread_mutex_lock(&r->lock);
    int shown = find_shown(r, name) != NULL;
    pthread_mutex_unlock(&r->lock);
    if (shown && st) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", r->save_dir, name);
        if (stat(path, st) != 0)
            return 0;
    }
    return shown;
}

/* A built, current view of (name, gen), pinned; lock held. */
static mf_run_view *pin_built(mf_run *r, const char *name, uint64_t gen)
{
    for (mf_run_view *v = r->views; v; v = v->next)
        if (v->gen == gen && strcmp(v->name, name) == 0 && !mf_run_view_stale(v)) {
            v->refs++;
            v->last_use = ++r->clock;
            return v;
        }
    return NULL;
}

static int build_failed(mf_run *r, mf_run_view *v)
{
    int rc = mf_fail(MF_ERR_INVALID, "%s", v->error);
    mf_run_release(r, v);
    return rc;
}

int mf_run_acquire(mf_run *r, const char *name, mf_run_view **out)
{
    *out = NULL;
    pthread_mutex_lock(&r->lock);
    const shown_iter *it = find_shown(r, name);
    uint64_t gen = it ? it->gen : 0;
    int64_t mtime_ns = it ? it->mtime_ns : 0;
    mf_run_view *v = it ? pin_built(r, name, gen) : NULL;
    pthread_mutex_unlock(&r->lock);
    if (!it)
        return mf_fail(MF_ERR_MISSING, "%s/%s: no such iteration shown", r->save_dir, name);
    if (v) {
        if (!v->s)
            return build_failed(r, v);
        *out = v;
        return MF_OK;
    }
    pthread_mutex_lock(&r->build_lock);
    pthread_mutex_lock(&r->lock);
    v = pin_built(r, name, gen);   /* built by another thread while we waited */
    pthread_mutex_unlock(&r->lock);
    if (!v) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", r->save_dir, name);
        v = calloc(1, sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&r->build_lock);
            return mf_fail(MF_ERR_NOMEM, "out of memory");
        }
        snprintf(v->name, sizeof(v->name), "%s", name);
        v->gen = gen;
        v->mtime_ns = mtime_ns;
        v->refs = 1;
        if (mf_session_open(&v->s, path, &r->opts) != MF_OK)
            v->error = strdup(mf_error()[0] ? mf_error() : "building the view failed");
        pthread_mutex_lock(&r->lock);
        const shown_iter *now = find_shown(r, name);
        if (!now || now->gen != gen)   /* re-saved or deleted while we built it */
            v->stale = 1;
        v->last_use = ++r->clock;
        v->next = r->views;
        r->views = v;
        r->n_views++;
        r->st.n_builds++;
        mf_run_view *dead = take_evictable(r);
        pthread_mutex_unlock(&r->lock);
        view_free(dead);
    }
    pthread_mutex_unlock(&r->build_lock);
    if (!v->s)
        return build_failed(r, v);
    *out = v;
    return MF_OK;
}

void mf_run_release(mf_run *r, mf_run_view *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&r->lock);
    v->refs--;
    mf_run_view *dead = take_evictable(r);
    pthread_mutex_unlock(&r->lock);
    view_free(dead);
}

void mf_run_get_stats(mf_run *r, mf_run_stats *st)
{
    pthread_mutex_lock(&r->lock);
    *st = r->st;
    st->n_views = r->n_views;
    st->n_pinned = 0;
    for (mf_run_view *v = r->views; v; v = v->next)
        st->n_pinned += v->refs > 0;
    pthread_mutex_unlock(&r->lock);
}

const char *mf_run_save_dir(const mf_run *r) { return r->save_dir; }
const mf_options *mf_run_options(const mf_run *r) { return &r->opts; }

uint64_t mf_run_generation(mf_run *r, const char *name, struct stat *st)
{
    pthread_mutex_lock(&r->lock);
    const shown_iter *it = find_shown(r, name);
    uint64_t gen = it ? it->gen : 0;
    pthread_mutex_unlock(&r->lock);
    if (gen && st) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", r->save_dir, name);
        if (stat(path, st) != 0)
            return 0;
    }
    return gen;
}

int mf_run_acquire_gen(mf_run *r, uint64_t gen, mf_run_view **out)
{
    char name[MF_RUN_NAME_MAX] = "";
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n_shown && !name[0]; i++)
        if (r->shown[i].gen == gen)
            snprintf(name, sizeof(name), "%s", r->shown[i].name);
    pthread_mutex_unlock(&r->lock);
    *out = NULL;
    if (!name[0])
        return mf_fail(MF_ERR_MISSING, "%s: generation %llu is no longer shown", r->save_dir, (unsigned long long)gen);
    int rc = mf_run_acquire(r, name, out);
    if (rc == MF_OK && (*out)->gen != gen) {   /* re-saved meanwhile: not the one asked for */
        mf_run_release(r, *out);
        *out = NULL;
        return mf_fail(MF_ERR_MISSING, "%s/%s: re-saved meanwhile", r->save_dir, name);
    }
    return rc;
}

mf_run_view *mf_run_pinned(mf_run *r, uint64_t gen)
{
    mf_run_view *found = NULL;
    pthread_mutex_lock(&r->lock);
    for (mf_run_view *v = r->views; v && !found; v = v->next)
        if (v->gen == gen && v->refs > 0 && v->s)
            found = v;
    pthread_mutex_unlock(&r->lock);
    return found;
}

mf_run_view *mf_run_pin_again(mf_run *r, uint64_t gen)
{
    mf_run_view *found = NULL;
    pthread_mutex_lock(&r->lock);
    for (mf_run_view *v = r->views; v && !found; v = v->next)
        if (v->gen == gen && v->refs > 0 && v->s) {
            found = v;
            v->refs++;
        }
    pthread_mutex_unlock(&r->lock);
    return found;
}

