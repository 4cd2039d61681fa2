/* Scanning a training run's save folder: the tracker, the iteration folders it confirms, their
 * fingerprints and whether each holds a finished save.
 *
 * How Megatron finishes a save (megatron/training/checkpointing.py, save_checkpoint): every rank
 * writes its files (legacy: torch.save of mp_rank_NN/model_optim_rng.pt; torch_dist: the DCP
 * writer's __R_K.distcp, then the coordinator's .metadata, common.pt, metadata.json), all ranks
 * meet at a barrier (async saves: in the finalize step), and only then rank 0 writes
 * latest_checkpointed_iteration.txt. So an iteration is finished when the tracker names it or a
 * later one and none of its files is newer than the tracker. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "mcorefs/error.h"
#include "mcorefs/run.h"

#define TRACKER "latest_checkpointed_iteration.txt"

static int64_t ts_ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

/* Read at most cap-1 bytes of a small regular file without blocking (a FIFO must not hang us). */
static ssize_t read_small(const char *path, char *buf, size_t cap, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    ssize_t n = -1;
    if (fstat(fd, st) == 0 && S_ISREG(st->st_mode)) {
        do
            n = read(fd, buf, cap - 1);
        while (n < 0 && errno == EINTR);
    }
    close(fd);
    if (n >= 0)
        buf[n] = 0;
    return n;
}

int mf_run_read_tracker(const char *save_dir, mf_run_tracker *t)
{
    char path[PATH_MAX], buf[64];
    struct stat st;
    memset(t, 0, sizeof(*t));
    snprintf(path, sizeof(path), "%s/" TRACKER, save_dir);
    if (read_small(path, buf, sizeof(buf), &st) < 0)
        return MF_OK;   /* no tracker (yet): nothing is confirmed */
    char *s = buf, *end;
    while (isspace((unsigned char)*s))
        s++;
    for (end = s + strlen(s); end > s && isspace((unsigned char)end[-1]); end--)
        end[-1] = 0;
    t->mtime_ns = ts_ns(st.st_mtim);
    t->exists = 1;
    if (strcmp(s, "release") == 0) {
        t->present = t->release = 1;
        t->iter = -1;
        return MF_OK;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == 0 || *end != 0 || errno || v < 0)
        return MF_OK;   /* being written (empty) or not a number: confirms nothing */
    t->present = 1;
    t->iter = v;
    return MF_OK;
}

/* "iter_0000020" -> 20, "release" -> -1; 0 when the name is neither. */
static int parse_dir_name(const char *name, int64_t *iter)
{
    if (strcmp(name, "release") == 0) {
        *iter = -1;
        return 1;
    }
    if (strncmp(name, "iter_", 5) != 0 || !isdigit((unsigned char)name[5]) || strlen(name) >= MF_RUN_NAME_MAX)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(name + 5, &end, 10);
    if (*end != 0 || errno)
        return 0;
    *iter = v;
    return 1;
}

typedef struct {
    XXH64_state_t *h;
    int64_t newest;
    size_t n;
} fp_acc;

static void fp_add(fp_acc *a, const char *name, const struct stat *st)
{
    uint64_t f[5] = { (uint64_t)st->st_ino, (uint64_t)st->st_size, (uint64_t)ts_ns(st->st_mtim),
                      (uint64_t)ts_ns(st->st_ctim), (uint64_t)st->st_dev };
    XXH64_update(a->h, name, strlen(name) + 1);
    XXH64_update(a->h, f, sizeof(f));
    if (ts_ns(st->st_mtim) > a->newest)
        a->newest = ts_ns(st->st_mtim);
    a->n++;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names of a folder's entries starting with `prefix` (NULL: all but . and ..). */
static char **sorted_entries(const char *dir, const char *prefix, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **v = NULL;
    size_t cap = 0;
    *n = 0;
    if (!d)
        return NULL;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0)))
            continue;
        if (prefix && strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof(*v));
            if (!nv)
                break;
            v = nv;
        }
        if ((v[*n] = strdup(e->d_name)) != NULL)
            (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(v, *n, sizeof(*v), cmp_str);
    return v;
}

static void free_entries(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int mf_run_fingerprint(const char *iter_dir, uint64_t *fp, int64_t *newest_mtime_ns)
{
    char path[PATH_MAX];
    struct stat st;
    size_t n;
    char **names = sorted_entries(iter_dir, NULL, &n);
    fp_acc a = { XXH64_createState(), 0, 0 };
    if (!a.h) {
        free_entries(names, n);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    XXH64_reset(a.h, 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", iter_dir, names[i]);
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISREG(st.st_mode)) {   /* torch_dist: .metadata, *.distcp, common.pt, metadata.json */
            fp_add(&a, names[i], &st);
        } else if (S_ISDIR(st.st_mode) && strncmp(names[i], "mp_rank_", 8) == 0) {
            snprintf(path, sizeof(path), "%s/%s/model_optim_rng.pt", iter_dir, names[i]);
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
                fp_add(&a, names[i], &st);
        }
    }
    free_entries(names, n);
    *fp = XXH64_digest(a.h);
    *newest_mtime_ns = a.newest;
    XXH64_freeState(a.h);
    return a.n ? MF_OK : mf_fail(MF_ERR_MISSING, "%s: no rank files", iter_dir);
}

/* The last `n` bytes of a regular file are `tail` (at its very end). */
static int file_ends_with(const char *path, const void *tail, size_t n, size_t at_from_end)
{
    char buf[64];
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW), ok = 0;
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size >= at_from_end && n <= sizeof(buf))
        ok = pread(fd, buf, n, st.st_size - (off_t)at_from_end) == (ssize_t)n && memcmp(buf, tail, n) == 0;
    close(fd);
    return ok;
}

/* mp_rank_TT[_PPP][_EEE]: up to three number fields. 0 on success. */
static int rank_fields(const char *name, int f[3], int *nf)
{
    const char *s = name + 8;
    *nf = 0;
    while (*nf < 3) {
        if (!isdigit((unsigned char)*s))
            return -1;
        char *end;
        long v = strtol(s, &end, 10);
        if (end - s > 6 || v < 0)
            return -1;
        f[(*nf)++] = (int)v;
        s = end;
        if (*s == 0)
            return 0;
        if (*s++ != '_')
            return -1;
    }
    return -1;
}

/* Legacy: the rank folders form a full grid (every combination of the fields up to their largest
 * value present, one field count for all) and every model_optim_rng.pt is a finished zip (its
 * end-of-central-directory record, which torch.save writes last, is the file's last 22 bytes). */
static int legacy_complete(const char *iter_dir, char **ranks, size_t n)
{
    int nf0 = -1, max[3] = { 0, 0, 0 };
    char path[PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        int f[3], nf;
        if (rank_fields(ranks[i], f, &nf) != 0 || (nf0 >= 0 && nf != nf0))
            return 0;
        nf0 = nf;
        for (int k = 0; k < nf; k++)
            if (f[k] + 1 > max[k])
                max[k] = f[k] + 1;
    }
    uint64_t cells = 1;
    for (int k = 0; k < nf0; k++)
        cells *= (uint64_t)max[k];
    if (cells != n)   /* names are distinct and inside the grid: as many as cells means all */
        return 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s/model_optim_rng.pt", iter_dir, ranks[i]);
        if (!file_ends_with(path, "PK\x05\x06", 4, 22))
            return 0;
    }
    return 1;
}

int mf_run_check_structure(const char *iter_dir)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof(path), "%s/.metadata", iter_dir);
    if (lstat(path, &st) == 0)   /* torch_dist: the pickle's STOP opcode is its last byte */
        return file_ends_with(path, ".", 1, 1);
    size_t n;
    char **ranks = sorted_entries(iter_dir, "mp_rank_", &n);
    int ok = n > 0 && legacy_complete(iter_dir, ranks, n);
    free_entries(ranks, n);
    return ok;
}

int mf_run_dir_complete(const mf_run_dir *d, const mf_run_tracker *t)
{
    if (!d->structure_ok)
        return 0;
    if (d->iter < 0)   /* release: written by a conversion, not by the run; finished is enough */
        return 1;
    if (!t->present || t->release || d->iter > t->iter)
        return 0;
    return d->newest_mtime_ns <= t->mtime_ns;
}

static int cmp_dir(const void *a, const void *b)
{
    const mf_run_dir *x = a, *y = b;
    if ((x->iter < 0) != (y->iter < 0))
        return x->iter < 0 ? 1 : -1;   /* release last */
    return (x->iter > y->iter) - (x->iter < y->iter);
}

int mf_run_list_dirs(const char *save_dir, const mf_run_tracker *t, const mf_run_dir *prev, size_t n_prev,
                     mf_run_dir **out, size_t *n)
{
    size_t n_names;
    char **names = sorted_entries(save_dir, NULL, &n_names);
    char path[PATH_MAX];
    struct stat st;
    *out = NULL;
    *n = 0;
    if (!names && n_names == 0) {
        DIR *d = opendir(save_dir);   /* empty, or unreadable? */
        if (!d)
            return mf_fail(MF_ERR_IO, "%s: %s", save_dir, strerror(errno));
        closedir(d);
        return MF_OK;
    }
    mf_run_dir *v = calloc(n_names ? n_names : 1, sizeof(*v));
    if (!v) {
        free_entries(names, n_names);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_names; i++) {
        int64_t it;
        if (!parse_dir_name(names[i], &it))
            continue;
        if (it >= 0 && (!t->present || t->release || it > t->iter))
            continue;   /* not confirmed: not even looked at (a save in progress) */
        snprintf(path, sizeof(path), "%s/%s", save_dir, names[i]);
        if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;   /* a symlink out of the run, or gone */
        mf_run_dir *d = &v[*n];
        snprintf(d->name, sizeof(d->name), "%s", names[i]);
        d->iter = it;
        if (mf_run_fingerprint(path, &d->fingerprint, &d->newest_mtime_ns) != MF_OK)
            continue;
        const mf_run_dir *old = NULL;
        for (size_t k = 0; k < n_prev && !old; k++)
            if (strcmp(prev[k].name, d->name) == 0 && prev[k].fingerprint == d->fingerprint)
                old = &prev[k];
        d->structure_ok = old ? old->structure_ok : mf_run_check_structure(path);
        (*n)++;
    }
    mf_error_clear();
    free_entries(names, n_names);
    qsort(v, *n, sizeof(*v), cmp_dir);
    *out = v;
    return MF_OK;
}

void mf_run_dirs_free(mf_run_dir *d, size_t n)
{
    (void)n;
    free(d);
}

int mf_run_is_iteration_dir(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    size_t n;
    snprintf(path, sizeof(path), "%s/.metadata", dir);
    if (lstat(path, &st) == 0)
        return 1;
    char **ranks = sorted_entries(dir, "mp_rank_", &n);
    free_entries(ranks, n);
    return n > 0;
}
