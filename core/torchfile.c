/* torch.save archives: zip + data.pkl, and resolving tensor values to byte locations. */
#include "mcorefs/torchfile.h"
#include "mcorefs/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_PKL ((size_t)1 << 30)

/* Start of a pre-1.6 torch.save file: protocol-2 pickle of LONG1 magic 0x1950a86a20f9469cfc6c. */
static const uint8_t legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static int open_impl(mf_torchfile *tf, uint64_t base, uint64_t len, size_t max_pkl)
{
    int rc = mf_zip_open(&tf->zip, tf->fd, tf->path, base, len);
    if (rc) { /* not a zip: say so more helpfully when it is the pre-1.6 format */
        uint8_t head[sizeof legacy_magic];
        ssize_t n = pread(tf->fd, head, sizeof head, (off_t)base);
        if (n == (ssize_t)sizeof head && memcmp(head, legacy_magic, sizeof head) == 0)
            return mf_fail(MF_ERR_UNSUPPORTED,
                           "%s: legacy (pre-1.6, non-zip) torch.save file; re-save it with torch >= 1.6", tf->path);
        return rc;
    }
    const mf_zip_entry *e = mf_zip_find(&tf->zip, "byteorder");
    if (e) {
        uint8_t *bo;
        size_t bl;
        if ((rc = mf_zip_read(&tf->zip, e, 16, &bo, &bl)))
            return rc;
        int little = bl == 6 && memcmp(bo, "little", 6) == 0;
        free(bo);
        if (!little)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: tensors were saved in big-endian byte order; only little-endian is supported",
                           tf->path);
    }
    if (!(e = mf_zip_find(&tf->zip, "data.pkl")))
        return mf_fail(MF_ERR_MISSING, "%s: no %s/data.pkl in the archive", tf->path, tf->zip.prefix);
    uint8_t *pkl;
    size_t pl;
    if ((rc = mf_zip_read(&tf->zip, e, max_pkl ? max_pkl : DEFAULT_MAX_PKL, &pkl, &pl)))
        return rc;
    rc = mf_pickle_load(pkl, pl, tf->path, NULL, &tf->pk, &tf->root);
    free(pkl);
    return rc;
}

static int finish_open(mf_torchfile *tf, uint64_t base, uint64_t len, size_t max_pkl)
{
    int rc = open_impl(tf, base, len, max_pkl);
    if (rc)
        mf_torchfile_close(tf);
    return rc;
}

int mf_torchfile_open(mf_torchfile *tf, const char *path, size_t max_pkl)
{
    memset(tf, 0, sizeof *tf);
    tf->fd = -1;
    tf->zip.fd = -1;
    if (!(tf->path = strdup(path)))
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", path);
    tf->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (tf->fd < 0) {
        int rc = mf_fail(errno == ENOENT ? MF_ERR_MISSING : MF_ERR_IO, "%s: open: %s", path, strerror(errno));
        mf_torchfile_close(tf);
        return rc;
    }
    return finish_open(tf, 0, 0, max_pkl);
}

int mf_torchfile_open_window(mf_torchfile *tf, int fd, const char *path, uint64_t base, uint64_t len, size_t max_pkl)
{
    memset(tf, 0, sizeof *tf);
    tf->fd = -1;
    tf->zip.fd = -1;
    if (!(tf->path = strdup(path)))
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", path);
    tf->fd = fd;
    tf->borrowed_fd = 1;
    return finish_open(tf, base, len, max_pkl);
}

/* Safe after a failed open (which leaves fd = -1); do not call on a never-opened struct. */
void mf_torchfile_close(mf_torchfile *tf)
{
    if (!tf)
        return;
    mf_pickle_free(tf->pk);
    mf_zip_close(&tf->zip);
    if (tf->fd >= 0 && !tf->borrowed_fd)
        close(tf->fd);
    free(tf->path);
    memset(tf, 0, sizeof *tf);
    tf->fd = -1;
    tf->zip.fd = -1;
}

static const mf_pv *arg(const mf_pv *obj, size_t i)
{
    const mf_pv *a = obj->u.obj.args;
    return a && a->kind == MF_PV_TUPLE && i < a->u.seq.n ? a->u.seq.items[i] : NULL;
}

static int is_rebuild(const mf_pv *v)
{
    return mf_pv_is_call_of(v, "torch._utils", "_rebuild_tensor_v2") || mf_pv_is_call_of(v, "torch._utils", "_rebuild_tensor_v3");
}

static int is_param(const mf_pv *v)
{
    return mf_pv_is_call_of(v, "torch._utils", "_rebuild_parameter") ||
           mf_pv_is_call_of(v, "torch._utils", "_rebuild_parameter_with_state");
}

int mf_torchfile_is_tensor(const mf_pv *v)
{
    return is_rebuild(v) || (is_param(v) && is_rebuild(arg(v, 0)));
}

/* Read a tuple of non-negative ints (size or stride). */
static int int_tuple(const mf_torchfile *tf, const char *what, const char *field, const mf_pv *t, int64_t *out, int *n)
{
    if (!t || t->kind != MF_PV_TUPLE)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: tensor %s is not a tuple", tf->path, what, field);
    if (t->u.seq.n > MF_MAX_DIMS)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s: tensor has %zu dimensions (at most %d supported)", tf->path, what,
                       t->u.seq.n, MF_MAX_DIMS);
    for (size_t i = 0; i < t->u.seq.n; i++) {
        if (t->u.seq.items[i]->kind != MF_PV_INT)
            return mf_fail(MF_ERR_FORMAT, "%s: %s: tensor %s[%zu] is not an int", tf->path, what, field, i);
        out[i] = t->u.seq.items[i]->u.i;
        if (out[i] < 0)
            return mf_fail(MF_ERR_FORMAT, "%s: %s: negative tensor %s[%zu] = %lld", tf->path, what, field, i,
                           (long long)out[i]);
    }
    *n = (int)t->u.seq.n;
    return MF_OK;
}

int mf_torchfile_tensor(const mf_torchfile *tf, const mf_pv *v, const char *what, mf_tensor *out)
{
    memset(out, 0, sizeof *out);
    what = what ? what : "tensor";
    if (is_param(v))
        v = arg(v, 0);
    if (!is_rebuild(v))
        return mf_fail(MF_ERR_FORMAT, "%s: %s: not a tensor", tf->path, what);
    int v3 = mf_pv_is_call_of(v, "torch._utils", "_rebuild_tensor_v3");
    const mf_pv *st = arg(v, 0), *off = arg(v, 1), *dtv = v3 ? arg(v, 6) : NULL;
    if (!st || st->kind != MF_PV_PERSID || !arg(v, 5) || (v3 && !dtv))
        return mf_fail(MF_ERR_FORMAT, "%s: %s: malformed tensor record", tf->path, what);
    const mf_pv *pid = st->u.persid.pid;
    if (pid->kind != MF_PV_TUPLE || pid->u.seq.n < 5 || !mf_pv_get_str(pid->u.seq.items[0]) ||
        strcmp(mf_pv_get_str(pid->u.seq.items[0]), "storage") != 0)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: malformed storage persistent id", tf->path, what);
    const mf_pv *stype = pid->u.seq.items[1];
    const char *key = mf_pv_get_str(pid->u.seq.items[2]);
    int64_t numel, soff;
    if (stype->kind != MF_PV_GLOBAL || !key || mf_pv_get_int(pid->u.seq.items[4], &numel) || numel < 0)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: malformed storage persistent id", tf->path, what);

    /* Storage element size, and the tensor dtype (from the storage for v2, from args[6] for v3). */
    size_t st_esize;
    mf_dtype dt;
    if (mf_pv_is_global(stype, "torch.storage", "UntypedStorage") || mf_pv_is_global(stype, "torch", "UntypedStorage")) {
        st_esize = 1;
        dt = MF_DT_INVALID;
    } else {
        dt = strcmp(stype->u.global.module, "torch") == 0 ? mf_dtype_from_storage(stype->u.global.name) : MF_DT_INVALID;
        if (dt == MF_DT_INVALID)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s: unsupported storage type %s.%s", tf->path, what,
                           stype->u.global.module, stype->u.global.name);
        st_esize = mf_dtype_size(dt);
    }
    if (v3) {
        if (dtv->kind != MF_PV_GLOBAL || strcmp(dtv->u.global.module, "torch") != 0)
            return mf_fail(MF_ERR_FORMAT, "%s: %s: malformed dtype in tensor record", tf->path, what);
        dt = mf_dtype_from_torch(dtv->u.global.name);
        if (dt == MF_DT_INVALID)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s: unsupported dtype torch.%s", tf->path, what, dtv->u.global.name);
    } else if (dt == MF_DT_INVALID) {
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s: untyped storage in a _rebuild_tensor_v2 record", tf->path, what);
    }
    size_t esize = mf_dtype_size(dt);

    int rc, nd_size, nd_stride;
    if ((rc = int_tuple(tf, what, "size", arg(v, 2), out->shape, &nd_size)) ||
        (rc = int_tuple(tf, what, "stride", arg(v, 3), out->stride, &nd_stride)))
        return rc;
    if (nd_size != nd_stride)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: size has %d dims but stride has %d", tf->path, what, nd_size, nd_stride);
    if (mf_pv_get_int(off, &soff))
        return mf_fail(MF_ERR_FORMAT, "%s: %s: storage offset is not an int", tf->path, what);
    if (soff < 0)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: negative storage offset %lld", tf->path, what, (long long)soff);

    char rel[300];
    if (snprintf(rel, sizeof rel, "data/%s", key) >= (int)sizeof rel)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: storage key too long", tf->path, what);
    const mf_zip_entry *e = mf_zip_find(&tf->zip, rel);
    if (!e)
        return mf_fail(MF_ERR_MISSING, "%s: %s: storage record %s/%s is missing", tf->path, what, tf->zip.prefix, rel);
    uint64_t st_bytes;
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)st_esize, &st_bytes) || st_bytes > e->size)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: storage '%s' of %lld x %zu bytes exceeds its record (%llu bytes)", tf->path,
                       what, key, (long long)numel, st_esize, (unsigned long long)e->size);
    uint64_t cap = st_bytes / esize; /* storage capacity in tensor elements */

    /* Highest element index touched: offset + sum((shape-1)*stride), overflow-checked. */
    uint64_t hi = (uint64_t)soff;
    int empty = 0;
    for (int i = 0; i < nd_size; i++) {
        uint64_t t;
        if (out->shape[i] == 0)
            empty = 1;
        else if (__builtin_mul_overflow((uint64_t)(out->shape[i] - 1), (uint64_t)out->stride[i], &t) ||
                 __builtin_add_overflow(hi, t, &hi))
            return mf_fail(MF_ERR_FORMAT, "%s: %s: tensor extent overflows", tf->path, what);
    }
    if (empty ? (uint64_t)soff > cap : hi >= cap)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: view (offset %lld, max element %llu) lies outside storage '%s' of %llu elements",
                       tf->path, what, (long long)soff, (unsigned long long)hi, key, (unsigned long long)cap);
    out->dtype = dt;
    out->ndim = nd_size;
    out->offset = e->data_offset + (uint64_t)soff * esize; /* soff <= cap, cannot overflow */
    out->storage_begin = e->data_offset;
    out->storage_bytes = e->size;
    return MF_OK;
}
