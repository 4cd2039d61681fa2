/* Owner, group and mode bits of the view: every entry carries those of the real files its bytes
 * come from, so that with allow_other (and default_permissions, which makes the kernel check
 * them) nobody reads through the mount what they could not read in the checkpoint.
 *
 * Rule: a file's permission bits are the intersection of its source files' bits (the most
 * restrictive), without x bits; its owner and group those of its first source file (rank order;
 * torch_dist: .metadata, which every header and config comes from, counts as a source of all).
 * Where the sources have different owners (groups), the owner (group) class keeps only what every
 * source grants to everyone else, since that owner is a stranger to the other files. Folders
 * show the iteration folder's owner, group and bits. Write bits are shown as the checkpoint has
 * them (a `cp -r` copy is then a normal, deletable folder); the mount stays read-only (EROFS).
 * Folders on the way matter too: a class of users that cannot search a folder above the
 * iteration folder (e.g. a 0700 home), or between it and a rank file, loses every bit. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "mcorefs/error.h"
#include "mcorefs/view.h"

typedef struct {
    int n;
    uid_t uid;
    gid_t gid;
    mode_t bits;
    int uid_differs, gid_differs;
} perm_acc;

static void acc_add(perm_acc *a, const struct stat *st)
{
    if (a->n++ == 0) {
        a->uid = st->st_uid;
        a->gid = st->st_gid;
        a->bits = st->st_mode & 0777;
        return;
    }
    a->bits &= st->st_mode & 0777;
    a->uid_differs |= st->st_uid != a->uid;
    a->gid_differs |= st->st_gid != a->gid;
}

static void acc_apply(const perm_acc *a, mf_vfile *f)
{
    mode_t bits = a->bits, other = bits & 07;
    if (a->uid_differs)
        bits = (bits & ~(mode_t)0700) | (bits & (other << 6));
    if (a->gid_differs)
        bits = (bits & ~(mode_t)0070) | (bits & (other << 3));
    f->uid = a->uid;
    f->gid = a->gid;
    f->mode = bits & 0666;   /* files: never executable */
}

/* The folders a reader passes through: the iteration folder's ancestors (real path). */
typedef struct {
    struct stat *st;
    size_t n;
} dir_path;

static int collect_ancestors(const char *iter_dir, dir_path *out)
{
    char *real = realpath(iter_dir, NULL);
    if (!real)
        return mf_fail(MF_ERR_IO, "%s: cannot resolve", iter_dir);
    size_t depth = 1;
    for (const char *c = real; *c; c++)
        depth += *c == '/';
    out->st = calloc(depth, sizeof(*out->st));
    out->n = 0;
    int rc = out->st ? MF_OK : mf_fail(MF_ERR_NOMEM, "out of memory");
    while (rc == MF_OK) {
        char *slash = strrchr(real, '/');
        if (!slash)
            break;
        slash[slash == real ? 1 : 0] = 0;   /* the parent; "/" stays "/" */
        if (stat(real, &out->st[out->n++]) != 0)
            rc = mf_fail(MF_ERR_IO, "%s: cannot stat", real);
        if (strcmp(real, "/") == 0)
            break;
    }
    free(real);
    return rc;
}

/* Clear the classes (owner, group, others of an entry owned by uid:gid) that cannot search
 * folder d. Conservative: a user counts only in the class the entry's ids put them in. */
static mode_t clamp_by_dir(mode_t bits, uid_t uid, gid_t gid, const struct stat *d)
{
    mode_t m = d->st_mode;
    int other_x = (m & S_IXOTH) != 0;
    int group_x = d->st_gid == gid ? (m & S_IXGRP) != 0 : other_x;
    int owner_x = d->st_uid == uid ? (m & S_IXUSR) != 0 : group_x;
    if (!owner_x)
        bits &= ~(mode_t)0700;
    if (!group_x)
        bits &= ~(mode_t)0070;
    if (!other_x)
        bits &= ~(mode_t)0007;
    return bits;
}

static mode_t clamp_by_path(mode_t bits, uid_t uid, gid_t gid, const dir_path *p)
{
    for (size_t i = 0; i < p->n; i++)
        bits = clamp_by_dir(bits, uid, gid, &p->st[i]);
    return bits;
}

/* Each rank file's stat, taken once from its open descriptor (or its path). */
static int stat_files(const mf_session *s, struct stat *st)
{
    for (size_t i = 0; i < s->ckpt.n_files; i++) {
        const mf_rankfile *rf = &s->ckpt.files[i];
        if ((rf->fd >= 0 ? fstat(rf->fd, &st[i]) : stat(rf->path, &st[i])) != 0)
            return mf_fail(MF_ERR_IO, "%s: cannot stat", rf->path);
    }
    return MF_OK;
}

/* The folder of each rank file (the iteration folder itself, or an mp_rank_* folder in it). */
static int stat_parents(const mf_session *s, struct stat *parent)
{
    for (size_t i = 0; i < s->ckpt.n_files; i++) {
        char *dir = strdup(s->ckpt.files[i].path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash)
            *slash = 0;
        int bad = !dir || stat(slash ? dir : ".", &parent[i]) != 0;
        free(dir);
        if (bad)
            return mf_fail(MF_ERR_IO, "%s: cannot stat its folder", s->ckpt.files[i].path);
    }
    return MF_OK;
}

/* Bits of entry f narrowed by every folder on the way to the files in `used` (all when NULL). */
static void clamp_entry(const mf_session *s, mf_vfile *f, const dir_path *up, const struct stat *iter,
                        const struct stat *parent, const uint8_t *used)
{
    mode_t bits = clamp_by_dir(clamp_by_path(f->mode, f->uid, f->gid, up), f->uid, f->gid, iter);
    for (size_t k = 0; k < s->ckpt.n_files; k++)
        if (!used || used[k])
            bits = clamp_by_dir(bits, f->uid, f->gid, &parent[k]);
    f->mode = bits;
}

/* The rank files a shard's tensors come from, in `used`; owner and bits from them. */
static void apply_safetensors(const mf_session *s, mf_vfile *f, const struct stat *st, uint8_t *used,
                              const perm_acc *meta)
{
    perm_acc a = *meta;   /* torch_dist: .metadata first (its owner), then the .distcp files */
    memset(used, 0, s->ckpt.n_files ? s->ckpt.n_files : 1);
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const mf_hf_tensor *t = &s->map.tensors[f->tensors[i]];
        for (uint32_t p = 0; p < t->n_pieces; p++) {
            int k = t->pieces[p].src->file;
            if (k >= 0 && (size_t)k < s->ckpt.n_files)
                used[k] = 1;
        }
    }
    for (size_t k = 0; k < s->ckpt.n_files; k++)   /* rank order: the first file gives the owner */
        if (used[k])
            acc_add(&a, &st[k]);
    if (a.n)
        acc_apply(&a, f);
}

int mf_view_set_permissions(mf_session *s)
{
    struct stat dir;
    dir_path up = {0};
    if (stat(s->ckpt.iter_dir, &dir) != 0)
        return mf_fail(MF_ERR_IO, "%s: cannot stat", s->ckpt.iter_dir);
    int rc = collect_ancestors(s->ckpt.iter_dir, &up);
    s->dir_uid = dir.st_uid;
    s->dir_gid = dir.st_gid;
    s->dir_mode = clamp_by_path(dir.st_mode & 0777, dir.st_uid, dir.st_gid, &up);
    size_t n = s->ckpt.n_files ? s->ckpt.n_files : 1;
    struct stat *st = calloc(n, sizeof(*st)), *parent = calloc(n, sizeof(*parent));
    uint8_t *used = malloc(n);
    if (rc == MF_OK)
        rc = st && parent && used ? stat_files(s, st) : mf_fail(MF_ERR_NOMEM, "out of memory");
    if (rc == MF_OK)
        rc = stat_parents(s, parent);
    /* what describes the whole checkpoint (config, index, manifest, stats): every rank file,
     * and a torch_dist checkpoint's .metadata (names, shapes: every header comes from it) */
    perm_acc all = {0}, meta_only = {0};
    struct stat meta;
    char meta_path[4096];
    snprintf(meta_path, sizeof(meta_path), "%s/.metadata", s->ckpt.iter_dir);
    if (rc == MF_OK && s->ckpt.format == MF_FORMAT_TORCH_DIST) {
        if (stat(meta_path, &meta) != 0)
            rc = mf_fail(MF_ERR_IO, "%s: cannot stat", meta_path);
        else
            acc_add(&meta_only, &meta);
    }
    all = meta_only;
    for (size_t k = 0; rc == MF_OK && k < s->ckpt.n_files; k++)
        acc_add(&all, &st[k]);
    if (all.n == 0)
        acc_add(&all, &dir);
    for (size_t i = 0; rc == MF_OK && i < s->n_files; i++) {
        mf_vfile *f = &s->files[i];
        if (f->own_perms)
            continue;   /* tokenizer overlays: their own bits, as the mounting user chose them */
        if (f->kind == MF_VF_SAFETENSORS && f->n_tensors) {
            apply_safetensors(s, f, st, used, &meta_only);
            clamp_entry(s, f, &up, &dir, parent, used);
            continue;
        }
        if (strcmp(f->name, "config.json") == 0 && s->opts.hf_config) {
            perm_acc cfg = all;   /* its bytes also come from -o hf_config */
            acc_add(&cfg, &s->hf_config_st);
            acc_apply(&cfg, f);
        } else {
            acc_apply(&all, f);
        }
        clamp_entry(s, f, &up, &dir, parent, NULL);
    }
    free(st);
    free(parent);
    free(used);
    free(up.st);
    return rc;
}
