/* Owner, group and mode bits of the view: every entry carries those of the real files its bytes
 * come from, so that with allow_other (and default_permissions, which makes the kernel check
 * them) nobody reads through the mount what they could not read in the checkpoint.
 *
 * Rule: a file's permission bits are the intersection of its source files' bits (the most
 * restrictive), without x bits; its owner and group those of its first source file (rank order).
 * Where the sources have different owners (groups), the owner (group) class keeps only what every
 * source grants to everyone else, since that owner is a stranger to the other files. Folders
 * show the iteration folder's owner, group and bits. Write bits are shown as the checkpoint has
 * them (a `cp -r` copy is then a normal, deletable folder); the mount stays read-only (EROFS). */
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

static void apply_safetensors(const mf_session *s, mf_vfile *f, const struct stat *st, uint8_t *seen)
{
    perm_acc a = {0};
    memset(seen, 0, s->ckpt.n_files ? s->ckpt.n_files : 1);
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const mf_hf_tensor *t = &s->map.tensors[f->tensors[i]];
        for (uint32_t p = 0; p < t->n_pieces; p++) {
            int k = t->pieces[p].src->file;
            if (k >= 0 && (size_t)k < s->ckpt.n_files)
                seen[k] = 1;
        }
    }
    for (size_t k = 0; k < s->ckpt.n_files; k++)   /* rank order: the first file gives the owner */
        if (seen[k])
            acc_add(&a, &st[k]);
    if (a.n)
        acc_apply(&a, f);
}

int mf_view_set_permissions(mf_session *s)
{
    struct stat dir;
    if (stat(s->ckpt.iter_dir, &dir) != 0)
        return mf_fail(MF_ERR_IO, "%s: cannot stat", s->ckpt.iter_dir);
    s->dir_uid = dir.st_uid;
    s->dir_gid = dir.st_gid;
    s->dir_mode = dir.st_mode & 0777;
    size_t n = s->ckpt.n_files ? s->ckpt.n_files : 1;
    struct stat *st = calloc(n, sizeof(*st));
    uint8_t *seen = malloc(n);
    int rc = st && seen ? stat_files(s, st) : mf_fail(MF_ERR_NOMEM, "out of memory");
    /* what describes the whole checkpoint (config, index, manifest, stats): every rank file */
    perm_acc all = {0};
    for (size_t k = 0; rc == MF_OK && k < s->ckpt.n_files; k++)
        acc_add(&all, &st[k]);
    if (all.n == 0)
        acc_add(&all, &dir);
    for (size_t i = 0; rc == MF_OK && i < s->n_files; i++) {
        mf_vfile *f = &s->files[i];
        if (f->own_perms)
            continue;
        if (f->kind == MF_VF_SAFETENSORS && f->n_tensors) {
            apply_safetensors(s, f, st, seen);
        } else if (strcmp(f->name, "config.json") == 0 && s->opts.hf_config) {
            perm_acc cfg = all;   /* its bytes also come from -o hf_config */
            acc_add(&cfg, &s->hf_config_st);
            acc_apply(&cfg, f);
        } else {
            acc_apply(&all, f);
        }
    }
    free(st);
    free(seen);
    return rc;
}
