/* Find the iteration folder and its mp_rank_* rank files (mcore-format.md §1.2-1.4). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "discover.h"
#include "mcorefs/error.h"
#include "open_beneath.h"

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static int has_rank_dirs(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "mp_rank_", 8) == 0) {
            found = 1;
            break;
        }
    closedir(d);
    return found;
}

/* An iteration folder: legacy rank folders, or a torch_dist index. */
static int is_iter_dir(const char *dir)
{
    char p[PATH_MAX + 128];
    snprintf(p, sizeof(p), "%s/.metadata", dir);
    return has_rank_dirs(dir) || exists(p);
}

static int parse_iter_name(const char *base, int64_t *iter, int *release);

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* "10, 20, release": the iteration folders of a save folder, oldest first; only the newest 8 are named. */
static void list_iterations(const char *save_dir, char *out, size_t cap)
{
    int64_t its[4096];
    size_t n = 0, len = 0;
    int release = 0;
    DIR *d = opendir(save_dir);
    struct dirent *e;
    out[0] = 0;
    while (d && (e = readdir(d)) != NULL) {
        int64_t it;
        int rel;
        if (parse_iter_name(e->d_name, &it, &rel)) {
            if (rel)
                release = 1;
            else if (n < sizeof(its) / sizeof(its[0]))
                its[n++] = it;
        }
    }
    if (d)
        closedir(d);
    qsort(its, n, sizeof(its[0]), cmp_i64);
    size_t first = n > 8 ? n - 8 : 0;   /* the newest ones */
    if (first)
        len += (size_t)snprintf(out + len, cap - len, "%zu older, ", first);
    for (size_t i = first; i < n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", i > first ? ", " : "", (long long)its[i]);
    if (release && len < cap)
        snprintf(out + len, cap - len, "%srelease", n ? ", " : "");
}

/* A folder that holds one rank's files (mp_rank_* with model_optim_rng.pt): a common mistake. */
static int is_rank_dir(const char *path)
{
    char p[PATH_MAX + 32];
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(p, sizeof(p), "%s/model_optim_rng.pt", path);
    return strncmp(base, "mp_rank_", 8) == 0 || exists(p);
}

/* Reads the tracker: an integer iteration or "release" (whitespace stripped). Opened beneath
 * the checkpoint folder, without blocking (a FIFO there must not hang the mount). */
static int read_tracker(const char *root, const char *name, int64_t *iter, int *release)
{
    char buf[64] = { 0 }, path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", root, name);
    int fd, rc = mf_open_beneath(root, name, &fd);
    if (rc)
        return rc;
    ssize_t n;
    do
        n = read(fd, buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n < 0)
        return mf_fail(MF_ERR_IO, "%s: %s", path, strerror(errno));
    buf[n] = 0;
    char *s = buf, *end;
    while (isspace((unsigned char)*s))
        s++;
    for (end = s + strlen(s); end > s && isspace((unsigned char)end[-1]); end--)
        *(end - 1) = 0;
    if (strcmp(s, "release") == 0) {
        *release = 1;
        *iter = -1;
        return MF_OK;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == 0 || *end != 0 || errno || v < 0)
        return mf_fail(MF_ERR_FORMAT, "%s: expected an iteration number or 'release', found '%.20s'", path, s);
    *iter = v;
    *release = 0;
    return MF_OK;
}

static int parse_iter_name(const char *base, int64_t *iter, int *release)
{
    if (strcmp(base, "release") == 0) {
        *release = 1;
        *iter = -1;
        return 1;
    }
    if (strncmp(base, "iter_", 5) == 0 && isdigit((unsigned char)base[5])) {
        char *end;
        long long v = strtoll(base + 5, &end, 10);
        if (*end == 0) {
            *iter = v;
            *release = 0;
            return 1;
        }
    }
    return 0;
}

/* The iteration folder, resolved, must lie in the (resolved) checkpoint folder: the tracker
 * names it, and every file beneath it is opened relative to it. */
static int resolve_beneath(const char *root, const char *dir, char **out)
{
    char r[PATH_MAX];
    if (!realpath(dir, r))
        return mf_fail(MF_ERR_IO, "%s: %s", dir, strerror(errno));
    size_t n = strlen(root);
    if (strcmp(r, root) != 0 && (strncmp(r, root, n) != 0 || (r[n] != '/' && strcmp(root, "/") != 0)))
        return mf_fail(MF_ERR_INCONSISTENT, "%s: leads outside the checkpoint folder %s (a symlink out of it); refused", dir, root);
    *out = strdup(r);
    return *out ? MF_OK : mf_fail(MF_ERR_NOMEM, "out of memory");
}

int mf_find_iteration(const char *given, int64_t want, char **iter_dir, int64_t *iter, int *release)
{
    char buf[PATH_MAX + 64], path[PATH_MAX];
    *iter_dir = NULL;
    struct stat st;
    if (stat(given, &st) != 0)
        return mf_fail(MF_ERR_IO, "%s: %s", given, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return mf_fail(MF_ERR_IO, "%s: not a directory", given);
    if (is_rank_dir(given) && !is_iter_dir(given)) {
        char iter_path[PATH_MAX], save_path[PATH_MAX];
        if (realpath(given, iter_path) == NULL)
            snprintf(iter_path, sizeof(iter_path), "%s", given);
        char *slash = strrchr(iter_path, '/');
        if (slash && slash != iter_path)
            *slash = 0;   /* the iteration folder */
        snprintf(save_path, sizeof(save_path), "%s", iter_path);
        slash = strrchr(save_path, '/');
        if (slash && slash != save_path)
            *slash = 0;   /* the save folder */
        return mf_fail(MF_ERR_INVALID, "%s is a rank folder of a checkpoint (the files of one rank); give the save "
                       "folder %s or the iteration folder %s", given, save_path, iter_path);
    }
    /* the folder given may itself be a symlink: resolve it once; all else stays beneath it */
    if (!realpath(given, path))
        return mf_fail(MF_ERR_IO, "%s: %s", given, strerror(errno));
    if (is_iter_dir(path)) {
        /* mounted an iter_* folder directly */
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (!parse_iter_name(base, iter, release)) {
            *iter = 0;
            *release = 0;
        }
        if (want >= 0 && *iter != want)
            return mf_fail(MF_ERR_INVALID, "%s: is the folder of one iteration; iteration=%lld does not apply", given, (long long)want);
        *iter_dir = strdup(path);
        return *iter_dir ? MF_OK : mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    snprintf(buf, sizeof(buf), "%s/weights", path);
    char ctx[PATH_MAX + 64];
    snprintf(ctx, sizeof(ctx), "%s/context", path);
    if (is_iter_dir(buf) && is_dir(ctx)) {
        /* a NeMo 2.0 checkpoint: weights/ (torch_dist) beside context/; "...-step=N-..." names it */
        const char *base = strrchr(path, '/'), *step = strstr(base ? base : path, "step=");
        *iter = step ? strtoll(step + 5, NULL, 10) : 0;
        *release = 0;
        if (want >= 0 && *iter != want)
            return mf_fail(MF_ERR_INVALID, "%s: is one NeMo checkpoint (step %lld); iteration=%lld does not apply", given,
                           (long long)*iter, (long long)want);
        return resolve_beneath(path, buf, iter_dir);
    }
    if (want >= 0) {
        *iter = want;
        *release = 0;
    } else {
        snprintf(buf, sizeof(buf), "%s/latest_checkpointed_iteration.txt", path);
        if (!exists(buf)) {
            char have[256];
            list_iterations(path, have, sizeof(have));
            if (have[0])
                return mf_fail(MF_ERR_MISSING, "%s: no latest_checkpointed_iteration.txt; iterations here: %s (pick one "
                               "with -o iteration=N, or give its iter_* folder)", path, have);
            return mf_fail(MF_ERR_MISSING, "%s: no latest_checkpointed_iteration.txt and no mp_rank_* folders; give a checkpoint root, an iter_* folder, or -o iteration=N", path);
        }
        int rc = read_tracker(path, "latest_checkpointed_iteration.txt", iter, release);
        if (rc)
            return rc;
    }
    if (*release)
        snprintf(buf, sizeof(buf), "%s/release", path);
    else
        snprintf(buf, sizeof(buf), "%s/iter_%07lld", path, (long long)*iter);
    if (!is_dir(buf)) {
        char have[256];
        list_iterations(path, have, sizeof(have));
        if (want >= 0)
            return mf_fail(MF_ERR_MISSING, "%s: no iteration %lld (no folder %s); iterations here: %s", path,
                           (long long)want, buf, have[0] ? have : "none");
        return mf_fail(MF_ERR_MISSING, "%s: iteration folder missing; iterations here: %s", buf, have[0] ? have : "none");
    }
    if (!is_iter_dir(buf))
        return mf_fail(MF_ERR_MISSING, "%s: no mp_rank_* folders and no torch_dist .metadata", buf);
    return resolve_beneath(path, buf, iter_dir);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int mf_list_rank_dirs(const char *iter_dir, char ***names, size_t *n)
{
    DIR *d = opendir(iter_dir);
    struct dirent *e;
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    if (!d)
        return mf_fail(MF_ERR_IO, "%s: %s", iter_dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "mp_rank_", 8) != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(*names, cap * sizeof(char *));
            if (!nn)
                break;
            *names = nn;
        }
        (*names)[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof(char *), cmp_str);
    return MF_OK;
}

int mf_parse_rank_name(const char *name, int64_t pp_size, int64_t ep_size, int *tp, int *pp, int *ep)
{
    int fields[3], nf = 0;
    const char *s = name + 8;
    int widths[3] = { 2, 3, 3 };
    while (nf < 3) {
        int w = 0, v = 0;
        while (isdigit((unsigned char)s[w])) {
            v = v * 10 + (s[w] - '0');
            w++;
            if (w > 6)
                return -1;
        }
        if (w != widths[nf])
            return -1;
        fields[nf++] = v;
        s += w;
        if (*s == 0)
            break;
        if (*s != '_')
            return -1;
        s++;
    }
    if (*s != 0)
        return -1;
    int want = 1 + (pp_size > 1) + (ep_size > 1);
    if (nf != want)
        return -1;
    *tp = fields[0];
    *pp = pp_size > 1 ? fields[1] : 0;
    *ep = ep_size > 1 ? fields[nf - 1] : 0;
    return 0;
}

