/* What a torch_dist mount reads after .metadata: detection of the format, one chunk's embedded
 * torch.save archive, and the training args (common.pt or the common_state bytes item). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "dcp_parse.h"
#include "file_io.h"
#include "open_beneath.h"

/* ---- detection ---- */

/* metadata.json's top-level "sharded_backend" is "torch_dist". */
static int json_says_torch_dist(const char *text, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *backend = cJSON_GetObjectItemCaseSensitive(root, "sharded_backend");
    int yes = cJSON_IsObject(root) && cJSON_IsString(backend) && strcmp(backend->valuestring, "torch_dist") == 0;
    cJSON_Delete(root);
    return yes;
}

int mf_dcp_detect(const char *dir)
{
    if (!dir)
        return 0;
    char *p = mf_path_join(dir, ".metadata");
    struct stat st;
    int yes = p && lstat(p, &st) == 0;   /* of any kind: opening it says what is wrong */
    free(p);
    if (yes)
        return 1;
    int fd;
    if (mf_open_beneath(dir, "metadata.json", &fd) != MF_OK) {
        mf_error_clear();   /* no readable metadata.json: not torch_dist */
        return 0;
    }
    char *buf = malloc(MAX_JSON_BYTES + 1);
    size_t got = 0;
    if (buf && mf_pread_upto(fd, "metadata.json", buf, MAX_JSON_BYTES, 0, &got) != MF_OK) {
        mf_error_clear();   /* unreadable: not torch_dist */
        got = 0;
    }
    close(fd);
    if (!buf)
        return 0;
    buf[got] = '\0';
    yes = json_says_torch_dist(buf, got);
    free(buf);
    return yes;
}

/* ---- chunk and args access ---- */

static const mf_dcp_tensor *chunk_owner(const mf_dcp *d, const mf_dcp_chunk *c)
{
    if (!d->index || !d->index->chunks || !d->index->n_chunks)
        return NULL;
    uintptr_t p = (uintptr_t)c, b = (uintptr_t)d->index->chunks, sz = sizeof *c;
    if (p < b || (p - b) % sz || (p - b) / sz >= d->index->n_chunks)
        return NULL;
    return &d->tensors[d->index->owner[(p - b) / sz]];
}

int mf_dcp_chunk_tensor(const mf_dcp *d, int fd, const mf_dcp_chunk *c, mf_tensor *out)
{
    memset(out, 0, sizeof *out);
    if (!d || !c || c->file < 0 || (size_t)c->file >= d->n_files)
        return mf_fail(MF_ERR_INVALID, "mf_dcp_chunk_tensor: chunk does not belong to this checkpoint");
    const mf_dcp_tensor *t = chunk_owner(d, c);
    int nd = t ? t->ndim : 0;
    char what[400], s1[200], s2[200];
    snprintf(what, sizeof what, "tensor '%s' chunk %s", t ? t->fqn : "?", dcp_fmt_dims(s1, sizeof s1, c->offsets, nd));
    char *path = mf_path_join(d->dir, d->files[c->file]);
    if (!path)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", d->dir);
    mf_torchfile tf;
    int rc = mf_torchfile_open_window(&tf, fd, path, c->offset, c->length, MAX_CHUNK_PKL);
    if (rc) {
        rc = mf_fail_ctx(rc, "%s", what);
        free(path);
        return rc;
    }
    if (!mf_torchfile_is_tensor(tf.root))
        rc = mf_fail(MF_ERR_FORMAT, "%s: %s: the item at [%llu, +%llu) does not hold a tensor", path, what,
                     (unsigned long long)c->offset, (unsigned long long)c->length);
    else
        rc = mf_torchfile_tensor(&tf, tf.root, what, out);
    if (!rc && t) {
        int same = out->ndim == t->ndim;
        for (int i = 0; same && i < t->ndim; i++)
            same = out->shape[i] == c->sizes[i];
        if (!same)
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s: %s: stored tensor has shape %s but .metadata says %s", path, what,
                         dcp_fmt_dims(s1, sizeof s1, out->shape, out->ndim), dcp_fmt_dims(s2, sizeof s2, c->sizes, t->ndim));
        else if (out->dtype != t->dtype)
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s: %s: stored dtype %s but .metadata says %s", path, what,
                         mf_dtype_torch_name(out->dtype), mf_dtype_torch_name(t->dtype));
    }
    mf_torchfile_close(&tf);
    free(path);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

/* The common state dict's 'args' (argparse.Namespace OBJECT) from a torch.save root. */
static int take_args(mf_torchfile *tf, const char *what, int listed, mf_pickle **pk, const mf_pv **args)
{
    const mf_pv *common = tf->root;
    if (listed && common && (common->kind == MF_PV_LIST || common->kind == MF_PV_TUPLE))
        common = common->u.seq.n ? common->u.seq.items[0] : NULL;
    if (!common || common->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: %s does not hold the common state dict", tf->path, what);
    const mf_pv *a = mf_pv_dict_get(common, "args");
    if (!a || a->kind == MF_PV_NONE)
        return mf_fail(MF_ERR_MISSING, "%s: %s has no 'args' (saved without training arguments?)", tf->path, what);
    *args = a;
    *pk = tf->pk;
    tf->pk = NULL;
    return MF_OK;
}

/* The bytes item "args" of a torch_dcp / fsdp_dtensor save: the Namespace itself. */
static int take_args_item(mf_torchfile *tf, const char *what, mf_pickle **pk, const mf_pv **args)
{
    const mf_pv *a = tf->root;
    if (!a || a->kind == MF_PV_NONE)
        return mf_fail(MF_ERR_MISSING, "%s: %s is None (saved without training arguments?)", tf->path, what);
    if (a->kind != MF_PV_DICT && !(a->kind == MF_PV_OBJECT && mf_pv_obj_state(a)))
        return mf_fail(MF_ERR_FORMAT, "%s: %s is not an argparse Namespace", tf->path, what);
    *args = a;
    *pk = tf->pk;
    tf->pk = NULL;
    return MF_OK;
}

int mf_dcp_load_args(const mf_dcp *d, mf_pickle **pk, const mf_pv **args)
{
    *pk = NULL;
    *args = NULL;
    if (!d || !d->dir)
        return mf_fail(MF_ERR_INVALID, "mf_dcp_load_args: checkpoint not open");
    const mf_dcp_bytes *b = NULL;
    int own_item = 0;   /* torch_dcp / fsdp_dtensor: torch.save(args) as the bytes item "args" */
    for (size_t i = 0; i < d->n_bytes && !b; i++)
        if (strncmp(d->bytes[i].fqn, "common_state", 12) == 0 && (d->bytes[i].fqn[12] == '/' || d->bytes[i].fqn[12] == '\0'))
            b = &d->bytes[i];
    for (size_t i = 0; i < d->n_bytes && !b; i++)
        if (strcmp(d->bytes[i].fqn, "args") == 0) {
            b = &d->bytes[i];
            own_item = 1;
        }
    mf_torchfile tf;
    int rc;
    if (b) { /* core >= 0.19: torch.save([common_state_dict]) as a bytes item */
        char *path = mf_path_join(d->dir, d->files[b->file]);
        if (!path)
            return mf_fail(MF_ERR_NOMEM, "%s: out of memory", d->dir);
        int fd;
        if ((rc = mf_open_beneath(d->dir, d->files[b->file], &fd)) != 0) {
            free(path);
            return rc;
        }
        rc = mf_torchfile_open_window(&tf, fd, path, b->offset, b->length, MAX_ARGS_PKL);
        free(path);
        if (rc) {
            close(fd);
            return mf_fail_ctx(rc, "bytes item '%s'", b->fqn);
        }
        char what[300];
        snprintf(what, sizeof what, "bytes item '%s'", b->fqn);
        rc = own_item ? take_args_item(&tf, what, pk, args) : take_args(&tf, what, 1, pk, args);
        mf_torchfile_close(&tf);
        close(fd); /* borrowed by tf */
        return rc;
    } else { /* core <= 0.18: common.pt next to .metadata */
        char *path = mf_path_join(d->dir, "common.pt");
        int fd = -1;
        if (!path)
            return mf_fail(MF_ERR_NOMEM, "%s: out of memory", d->dir);
        rc = mf_open_beneath(d->dir, "common.pt", &fd);
        if (rc == MF_ERR_MISSING)
            rc = mf_fail(MF_ERR_MISSING, "%s: a plain PyTorch DCP checkpoint, not a Megatron-Core one: no common.pt and no common_state "
                         "or args item in .metadata, so no training args; give the save folder of a Megatron-Core checkpoint, "
                         "or describe the model with -o hf_config=FILE (an HF config.json with architectures and sizes)",
                         d->dir);
        else if (rc == 0 && (rc = mf_torchfile_open_window(&tf, fd, path, 0, 0, MAX_ARGS_PKL)) != 0)
            close(fd);
        free(path);
        if (rc)
            return rc;
        rc = take_args(&tf, "common.pt", 0, pk, args);
        mf_torchfile_close(&tf);
        close(fd); /* borrowed by tf */
        return rc;
    }
}
