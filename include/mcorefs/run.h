/* A training run's save folder mounted whole (-o iterations=all): which iterations are complete,
 * their views built on first use (at most max_views kept), following saves as they land.
 * FUSE-free: fs/run_ops.c is the adapter. */
#ifndef MCOREFS_RUN_H
#define MCOREFS_RUN_H

#include <stddef.h>
#include <stdint.h>
#include "mcorefs/options.h"
#include "mcorefs/view.h"

#define MF_RUN_NAME_MAX 32   /* "iter_NNNNNNN" or "release" */

/* ---- scanning a save folder (core/run_scan.c) ---- */

/* One iteration folder as a scan saw it. */
typedef struct {
    char name[MF_RUN_NAME_MAX];
    int64_t iter;            /* -1: release */
    uint64_t fingerprint;    /* XXH64 of the identity (inode, size, mtime, ctime) of every file the view reads */
    int64_t newest_mtime_ns; /* newest mtime among those files */
    int structure_ok;        /* every rank file of the layout present and finished (see mf_run_check_structure) */
} mf_run_dir;

/* The tracker file latest_checkpointed_iteration.txt. */
typedef struct {
    int present;             /* 0: none, or not a number (then nothing is confirmed) */
    int exists;              /* the file is there, even if present is 0 (being rewritten: empty) */
    int release;
    int64_t iter;
    int64_t mtime_ns;
} mf_run_tracker;

int mf_run_read_tracker(const char *save_dir, mf_run_tracker *t);
/* Every iter_* / release folder of save_dir whose number the tracker confirms (the tracker names
 * it or a later one), with its fingerprint; structure_ok only computed when `prev` (a previous
 * scan's list, may be NULL) does not hold the same name with the same fingerprint (then copied). */
int mf_run_list_dirs(const char *save_dir, const mf_run_tracker *t, const mf_run_dir *prev, size_t n_prev,
                     mf_run_dir **out, size_t *n);
/* The fingerprint of one iteration folder (and the newest mtime of its files). MF_OK, or
 * MF_ERR_MISSING when it holds no rank files. */
int mf_run_fingerprint(const char *iter_dir, uint64_t *fp, int64_t *newest_mtime_ns);
/* 1 when the folder holds a finished save: torch_dist: .metadata ends with the pickle STOP byte
 * (DCP writes it last, after every chunk file); legacy: mp_rank_* folders forming a full
 * TP x PP x EP grid, each model_optim_rng.pt ending in a zip end record (torch.save writes it
 * last). 0 otherwise. */
int mf_run_check_structure(const char *iter_dir);
/* Whether a scanned folder is shown: confirmed by the tracker, structure finished, and no file
 * newer than the tracker (Megatron writes the tracker after every rank's files: a newer file is
 * a save in progress, e.g. an iteration re-saved in place). */
int mf_run_dir_complete(const mf_run_dir *d, const mf_run_tracker *t);
void mf_run_dirs_free(mf_run_dir *d, size_t n);
/* 1 when dir holds rank folders or a .metadata itself (one iteration, not a run's save folder). */
int mf_run_is_iteration_dir(const char *dir);

/* ---- the run: generations, views, LRU (core/run_views.c) ---- */

typedef struct mf_run mf_run;

/* One built view of one generation of an iteration. Valid while acquired. */
typedef struct mf_run_view {
    char name[MF_RUN_NAME_MAX];
    uint64_t gen;
    int64_t mtime_ns;        /* newest mtime of the generation's files: shown for its entries, so a
                              * new generation differs from the old one in the kernel's attributes */
    mf_session *s;           /* NULL when building failed (error kept in `error`) */
    char *error;
    int refs;                /* acquisitions not yet released (open files pin their view) */
    int stale;               /* atomic: deleted, superseded or being re-saved: reads fail with EIO */
    uint64_t last_use;
    struct mf_run_view *next;
} mf_run_view;

typedef struct {
    unsigned max_views;      /* views kept built (LRU); views in use are never closed */
    unsigned recheck_ms;     /* fallback re-scan on lookup/readdir when this much time passed */
    int watch;               /* 1: start the inotify watcher in mf_run_open (0: later, with
                              * mf_run_watch_begin, or never: re-checks only) */
} mf_run_params;

typedef struct {
    size_t n_visible, n_views, n_pinned;
    uint64_t n_scans, n_builds, n_evictions, n_generations;
    int watching;            /* inotify active */
} mf_run_stats;

#define MF_RUN_DEFAULT_MAX_VIEWS 4
#define MF_RUN_DEFAULT_RECHECK_MS 1000

/* Open a run at save_dir: one scan, no view built. Fails (one line) if save_dir is no folder. */
int mf_run_open(mf_run **out, const char *save_dir, const mf_options *o, const mf_run_params *p);
void mf_run_close(mf_run *r);
/* Called on the watcher's thread (never inside a request) with each name that stopped being
 * shown or got a new generation since the last call: the FUSE side drops the kernel's cached
 * entry for it, so a deleted iteration is not found by name from its cached entry, and the
 * cached pages of the n_files files of its view (0 when never built) of generation gen. */
void mf_run_on_gone(mf_run *r, void (*cb)(void *arg, const char *name, uint64_t gen, size_t n_files), void *arg);
/* Start the inotify watcher now (a daemon calls this after it forked: threads do not survive a
 * fork). No-op when already watching. Without inotify, re-checks on lookup still follow the run. */
void mf_run_watch_begin(mf_run *r);
/* Stop the watcher and forget the on_gone callback (a daemon calls this before the FUSE session
 * the callback notifies is destroyed). Re-checks on lookup keep working. */
void mf_run_watch_end(mf_run *r);
/* Re-scan now (force) or when the watcher saw a change or recheck_ms passed. */
int mf_run_refresh(mf_run *r, int force);
/* The shown iteration names (sorted, release last; caller frees each and the array) and the
 * `latest` target ("" when the tracker names nothing shown). */
int mf_run_list(mf_run *r, char ***names, size_t *n, char latest[MF_RUN_NAME_MAX]);
/* Like mf_run_list, with each name's current generation (gens: caller frees). */
int mf_run_list_gens(mf_run *r, char ***names, uint64_t **gens, size_t *n, char latest[MF_RUN_NAME_MAX]);
/* The current generation of a shown iteration (0 when not shown) and its folder's stat. */
uint64_t mf_run_generation(mf_run *r, const char *name, struct stat *st);
/* mf_run_acquire by generation: MF_ERR_MISSING once that generation is no longer shown. */
int mf_run_acquire_gen(mf_run *r, uint64_t gen, mf_run_view **out);
/* The built view of a generation while something pins it (an open file), without pinning it
 * again; NULL when none. Its stale flag says whether reads may still be answered. */
mf_run_view *mf_run_pinned(mf_run *r, uint64_t gen);
/* One more pin of the view of generation gen while something else pins it (an open file),
 * also when that generation is no longer shown; NULL when none. Release with mf_run_release. */
mf_run_view *mf_run_pin_again(mf_run *r, uint64_t gen);
/* The options every view is opened with. */
const mf_options *mf_run_options(const mf_run *r);
/* 1 when `name` is a shown iteration now; its folder's stat into *st when st is not NULL. */
int mf_run_visible(mf_run *r, const char *name, struct stat *st);
/* The current generation's view of a shown iteration, built on first use, pinned until released.
 * MF_ERR_MISSING when not shown; the build's own error when it failed. */
int mf_run_acquire(mf_run *r, const char *name, mf_run_view **out);
void mf_run_release(mf_run *r, mf_run_view *v);
static inline int mf_run_view_stale(const mf_run_view *v) { return __atomic_load_n(&v->stale, __ATOMIC_ACQUIRE); }
void mf_run_get_stats(mf_run *r, mf_run_stats *st);
const char *mf_run_save_dir(const mf_run *r);

/* ---- the watcher (core/run_watch.c), used by run_views.c ---- */
typedef struct mf_run_watch mf_run_watch;
/* Start an inotify watcher on save_dir calling on_change(arg) after changes (debounced). NULL
 * when inotify is unavailable: the caller relies on re-checks. */
mf_run_watch *mf_run_watch_start(const char *save_dir, void (*on_change)(void *), void *arg);
/* Also watch one iteration folder (files written in place there); idempotent by name. */
void mf_run_watch_add(mf_run_watch *w, const char *iter_dir);
void mf_run_watch_stop(mf_run_watch *w);

#endif
