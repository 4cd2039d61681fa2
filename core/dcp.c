/* PyTorch Distributed Checkpoint reader (Megatron --ckpt-format torch_dist, mcore-format.md §7).
 *
 * .metadata is a pickle of Metadata(state_dict_metadata, planner_data, storage_data, ...). The
 * safe pickle VM turns every dataclass into an inert OBJECT whose BUILD state holds the fields
 * (a dict; TensorProperties uses a 5-tuple). storage_data maps MetadataIndex(fqn, offset) to
 * _StorageInfo(relative_path, offset, length); it is hashed once so that matching chunks to
 * their bytes is linear in the number of chunks. Chunk tiling (inside the global shape, no
 * overlap, full cover) is checked per tensor on the grid spanned by the chunk boundaries, with a
 * sorted sweep as fallback for layouts whose grid would be too large. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "bigmem.h"
#include "dcp_parse.h"
#include "file_io.h"
#include "open_beneath.h"

/* ---- .metadata ---- */

/* Open dir/rel (a regular file of at most max bytes) and allocate a buffer for all of it. With
 * keep_fd the file is left open there, unread (read on demand); else it is read whole. */
static int read_whole(const char *dir, const char *rel, const char *path, uint64_t max, uint8_t **buf, size_t *len,
                      int *keep_fd)
{
    *buf = NULL;
    *len = 0;
    int fd, rc = mf_open_beneath(dir, rel, &fd);
    if (rc == MF_ERR_MISSING)
        return mf_fail(MF_ERR_MISSING, "%s: missing (not a complete torch_dist checkpoint)", path);
    if (rc)
        return rc;
    struct stat st;
    if (fstat(fd, &st) != 0)
        rc = mf_fail(MF_ERR_IO, "%s: stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = mf_fail(MF_ERR_FORMAT, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size > max)
        rc = mf_fail(MF_ERR_LIMIT, "%s: refused: the file is %lld bytes, over mcorefs' fixed limit of %llu MiB for a .metadata",
                     path, (long long)st.st_size, (unsigned long long)(max >> 20));
    else if (st.st_size == 0)
        rc = mf_fail(MF_ERR_FORMAT, "%s: empty file", path);
    uint8_t *b = rc ? NULL : mf_big_alloc((size_t)st.st_size, NULL);
    if (!rc && !b)
        rc = mf_fail(MF_ERR_NOMEM, "%s: out of memory", path);
    size_t got = 0;
    if (!rc && keep_fd) {
        *keep_fd = fd;
        *buf = b;
        *len = (size_t)st.st_size;
        return MF_OK;
    }
    if (!rc && (rc = mf_pread_upto(fd, path, b, (size_t)st.st_size, 0, &got)) == MF_OK && got < (size_t)st.st_size)
        rc = mf_fail(MF_ERR_IO, "%s: file shrank while reading", path);
    close(fd);
    if (rc) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = got;
    return MF_OK;
}

typedef struct {
    int fd;
    const char *path;
} metadata_file;

/* The pickle VM reads .metadata on demand: only a window of it is in memory at a time. */
static int fill_metadata(void *file, uint8_t *dst, size_t off, size_t n)
{
    const metadata_file *f = file;
    size_t got = 0;
    int rc = mf_pread_upto(f->fd, f->path, dst, n, off, &got);
    if (rc == MF_OK && got < n)
        rc = mf_fail(MF_ERR_IO, "%s: file shrank while reading", f->path);
    return rc;
}

static mf_dtype prop_dtype(const mf_pv *props, const char **name)
{
    const mf_pv *dt = NULL;
    *name = "?";
    if (props && props->kind == MF_PV_OBJECT && props->u.obj.state) {
        const mf_pv *s = props->u.obj.state; /* __getstate__: (dtype, layout, requires_grad, memory_format, pin_memory) */
        if (s->kind == MF_PV_TUPLE && s->u.seq.n >= 1 && s->u.seq.items[0]->kind == MF_PV_GLOBAL)
            dt = s->u.seq.items[0];
        else
            dt = dcp_field(props, "dtype");
    } else if (props && props->kind == MF_PV_DICT) {
        dt = mf_pv_dict_get(props, "dtype");
    }
    if (!dt || dt->kind != MF_PV_GLOBAL)
        return MF_DT_INVALID;
    *name = dt->u.global.name;
    return strcmp(dt->u.global.module, "torch") == 0 ? mf_dtype_from_torch(dt->u.global.name) : MF_DT_INVALID;
}

static int parse_tensor(ctx *x, const char *fqn, const mf_pv *tsm, mf_dcp_tensor *t, mf_dcp_chunk *chunks)
{
    char s1[200], s2[200], what[400];
    int rc;
    const char *dtn;
    if ((rc = dcp_charge(x, strlen(fqn) + 1, "the tensor names")))
        return rc;
    if (!(t->fqn = strdup(fqn)))
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    t->chunks = chunks;
    t->dtype = prop_dtype(dcp_field(tsm, "properties"), &dtn);
    if (t->dtype == MF_DT_INVALID)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported or missing dtype torch.%s", x->mpath, fqn, dtn);
    if ((rc = dcp_get_dims(dcp_field(tsm, "size"), t->size, &t->ndim)))
        return mf_fail(rc == -2 ? MF_ERR_UNSUPPORTED : MF_ERR_FORMAT, "%s: tensor '%s': size %s", x->mpath, fqn,
                       dcp_dims_problem(rc));
    const mf_pv *cl = dcp_field(tsm, "chunks");
    for (size_t j = 0; j < cl->u.seq.n; j++) { /* cl checked by the caller */
        const mf_pv *cv = cl->u.seq.items[j];
        mf_dcp_chunk *c = &chunks[j];
        int no = 0, ns = 0;
        if (!dcp_is_class(cv, "ChunkStorageMetadata"))
            return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': chunk #%zu is not a ChunkStorageMetadata", x->mpath, fqn, j);
        if ((rc = dcp_get_dims(dcp_field(cv, "offsets"), c->offsets, &no)) || (rc = dcp_get_dims(dcp_field(cv, "sizes"), c->sizes, &ns)))
            return mf_fail(rc == -2 ? MF_ERR_UNSUPPORTED : MF_ERR_FORMAT, "%s: tensor '%s': chunk #%zu offsets/sizes %s",
                           x->mpath, fqn, j, dcp_dims_problem(rc));
        t->n_chunks = j + 1; /* chunk j is now initialised enough for messages */
        if (no != t->ndim || ns != t->ndim)
            return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': chunk #%zu has %d/%d dims, the tensor %d", x->mpath, fqn, j, no, ns,
                           t->ndim);
        for (int d = 0; d < t->ndim; d++)
            if (c->offsets[d] > t->size[d] || c->sizes[d] > t->size[d] - c->offsets[d])
                return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunk at %s with sizes %s lies outside the shape %s",
                               x->mpath, fqn, dcp_fmt_dims(s1, sizeof s1, c->offsets, t->ndim),
                               dcp_fmt_dims(s2, sizeof s2, c->sizes, t->ndim), dcp_fmt_dims((char[200]){0}, 200, t->size, t->ndim));
        item_ref it = {fqn, c->offsets, t->ndim};
        const mf_pv *info = dcp_sd_find(x, fqn, 1, t->ndim, c->offsets);
        if (!info)
            return mf_fail(MF_ERR_MISSING, "%s: %s has no storage_data entry", x->mpath, dcp_item_name(&it, what, sizeof what));
        if ((rc = dcp_resolve_info(x, info, &it, &c->file, &c->offset, &c->length)))
            return rc;
    }
    /* check_tiling's scratch at most: non-empty list, boundaries, grid or sweep keys */
    size_t scratch = dcp_tiling_scratch(t);
    if ((rc = dcp_charge(x, scratch, "the check that its chunks tile each tensor")))
        return rc;
    rc = dcp_check_tiling(x, t);
    dcp_release(x, scratch);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

static int build_name_index(ctx *x)
{
    mf_dcp *d = x->d;
    typedef struct {
        const char *fqn;
        size_t idx;
    } named;
    int rc = dcp_charge(x, (d->n_tensors + 1) * (sizeof(named) + sizeof *d->index->by_name), "the tensor name index");
    if (rc)
        return rc;
    named *v = malloc((d->n_tensors + 1) * sizeof *v);
    d->index->by_name = malloc((d->n_tensors + 1) * sizeof *d->index->by_name);
    if (!v || !d->index->by_name) {
        free(v);
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    }
    for (size_t i = 0; i < d->n_tensors; i++)
        v[i] = (named){d->tensors[i].fqn, i};
    qsort(v, d->n_tensors, sizeof *v, cmp_name); /* fqn is the first member */
    for (size_t i = 0; i < d->n_tensors; i++) {
        d->index->by_name[i] = v[i].idx;
        if (i && strcmp(v[i].fqn, v[i - 1].fqn) == 0 && !rc)
            rc = mf_fail(MF_ERR_FORMAT, "%s: tensor '%s' is listed twice", x->mpath, v[i].fqn);
    }
    free(v);
    return rc;
}

static int parse_metadata(ctx *x, const mf_pv *root)
{
    mf_dcp *d = x->d;
    if (!dcp_is_class(root, "Metadata") || !root->u.obj.state || root->u.obj.state->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: not a torch.distributed.checkpoint Metadata pickle", x->mpath);
    const mf_pv *sdm = dcp_field(root, "state_dict_metadata");
    if (!sdm || sdm->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: Metadata.state_dict_metadata is missing or not a dict", x->mpath);
    int rc = dcp_build_storage_index(x, dcp_field(root, "storage_data"));
    if (rc)
        return rc;

    /* Pass 1: count and check entry kinds. */
    size_t nt = 0, nb = 0, nc = 0;
    for (size_t i = 0; i < sdm->u.dict.n; i++) {
        const char *fqn = mf_pv_get_str(sdm->u.dict.keys[i]);
        const mf_pv *v = sdm->u.dict.vals[i];
        if (!fqn)
            return mf_fail(MF_ERR_FORMAT, "%s: state_dict_metadata key #%zu is not a string", x->mpath, i);
        if (dcp_skipped(fqn))
            continue;
        if (dcp_is_class(v, "TensorStorageMetadata")) {
            const mf_pv *cl = dcp_field(v, "chunks");
            if (!cl || (cl->kind != MF_PV_LIST && cl->kind != MF_PV_TUPLE))
                return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': chunks is missing or not a list", x->mpath, fqn);
            nt++;
            nc += cl->u.seq.n; /* bounded by the pickle arena */
        } else if (dcp_is_class(v, "BytesStorageMetadata")) {
            nb++;
        } else {
            const char *cn = dcp_class_name(v);
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: entry '%s' is a %s, not tensor or bytes metadata", x->mpath, fqn,
                           cn ? cn : "plain value");
        }
    }
    if (nt >= UINT32_MAX || nc >= SIZE_MAX / sizeof(mf_dcp_chunk) / 2)
        return mf_fail(MF_ERR_LIMIT, "%s: too many tensors or chunks", x->mpath);
    if ((rc = dcp_charge(x, (nc + 1) * (sizeof *d->index->chunks + sizeof *d->index->owner) + (nt + 1) * sizeof *d->tensors +
                            (nb + 1) * sizeof *d->bytes,
                     "the table of tensors and chunks")))
        return rc;
    d->index->chunks = calloc(nc + 1, sizeof *d->index->chunks);
    d->index->owner = calloc(nc + 1, sizeof *d->index->owner);
    d->tensors = calloc(nt + 1, sizeof *d->tensors);
    d->bytes = calloc(nb + 1, sizeof *d->bytes);
    if (!d->index->chunks || !d->index->owner || !d->tensors || !d->bytes)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory (%zu tensors, %zu chunks)", x->mpath, nt, nc);
    d->index->n_chunks = nc;

    /* Pass 2: fill in .metadata order. */
    size_t ci = 0;
    for (size_t i = 0; i < sdm->u.dict.n; i++) {
        const char *fqn = mf_pv_get_str(sdm->u.dict.keys[i]);
        const mf_pv *v = sdm->u.dict.vals[i];
        if (dcp_skipped(fqn))
            continue;
        if (dcp_is_class(v, "TensorStorageMetadata")) {
            size_t n = dcp_field(v, "chunks")->u.seq.n;
            mf_dcp_tensor *t = &d->tensors[d->n_tensors++];
            for (size_t j = 0; j < n; j++)
                d->index->owner[ci + j] = (uint32_t)(d->n_tensors - 1);
            if ((rc = parse_tensor(x, fqn, v, t, d->index->chunks + ci)))
                return rc;
            ci += n;
        } else {
            mf_dcp_bytes *b = &d->bytes[d->n_bytes++];
            item_ref it = {fqn, NULL, 0};
            if ((rc = dcp_charge(x, strlen(fqn) + 1, "the item names")))
                return rc;
            if (!(b->fqn = strdup(fqn)))
                return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
            const mf_pv *info = dcp_sd_find(x, fqn, 0, 0, NULL);
            if (!info)
                return mf_fail(MF_ERR_MISSING, "%s: bytes item '%s' has no storage_data entry", x->mpath, fqn);
            if ((rc = dcp_resolve_info(x, info, &it, &b->file, &b->offset, &b->length)))
                return rc;
        }
    }
    return build_name_index(x);
}

/* The pickle VM's limit message, said as the .metadata limit it is. */
static int pickle_limit_error(const char *mpath)
{
    char detail[600];
    const char *e = mf_error();
    size_t n = strlen(mpath);
    if (strncmp(e, mpath, n) == 0 && strncmp(e + n, ": ", 2) == 0)
        e += n + 2; /* the path comes first again below */
    snprintf(detail, sizeof detail, "%s", e);
    return mf_fail(MF_ERR_LIMIT, "%s: refused: over mcorefs' fixed limits for reading a .metadata (%zu MiB of memory, "
                   "file included): %s",
                   mpath, METADATA_MEMORY_CAP >> 20, detail);
}

int mf_dcp_open(mf_dcp *d, const char *dir)
{
    memset(d, 0, sizeof *d);
    if (!dir)
        return mf_fail(MF_ERR_INVALID, "mf_dcp_open: no directory");
    ctx x = {.d = d};
    char *mpath = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    mf_pickle *pk = NULL;
    mf_pv *root = NULL;
    metadata_file mf = {-1, NULL};
    int rc;
    if (!(d->dir = strdup(dir)) || !(mpath = mf_path_join(dir, ".metadata")) || !(d->index = calloc(1, sizeof *d->index))) {
        rc = mf_fail(MF_ERR_NOMEM, "%s: out of memory", dir);
        goto out;
    }
    x.mpath = mpath;
    mf.path = mpath;
    if ((rc = read_whole(dir, ".metadata", mpath, MAX_METADATA_BYTES, &buf, &len, &mf.fd)))
        goto out;
    /* Megatron keeps a copy of every rank's save plan in .metadata (all_local_plans, about half
     * of it, written last), which says nothing the reader needs. */
    static const char *const unused_fields[] = {"all_local_plans", NULL};
    mf_pickle_limits lim = {.max_bytes = METADATA_MEMORY_CAP - len, .max_depth = 1000, .skip_keys = unused_fields,
                            .release_input = 1, .fill = fill_metadata, .fill_ctx = &mf};
    rc = mf_pickle_load(buf, len, mpath, &lim, &pk, &root);
    close(mf.fd);
    if (rc) {
        if (rc == MF_ERR_LIMIT)
            rc = pickle_limit_error(mpath);
        goto out;
    }
    free(buf);
    buf = NULL;
    x.mem_used = mf_pickle_bytes(pk); /* the values stay until the index is built */
    rc = parse_metadata(&x, root);
out:
    mf_pickle_free(pk);
    free(buf);
    dcp_ctx_free(&x);
    free(mpath);
    if (rc)
        mf_dcp_close(d);
    return rc;
}

void mf_dcp_close(mf_dcp *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_files; i++)
        free(d->files[i]);
    free(d->files);
    free(d->file_sizes);
    for (size_t i = 0; i < d->n_tensors; i++)
        free(d->tensors[i].fqn);
    free(d->tensors);
    for (size_t i = 0; i < d->n_bytes; i++)
        free(d->bytes[i].fqn);
    free(d->bytes);
    if (d->index) {
        free(d->index->chunks);
        free(d->index->owner);
        free(d->index->by_name);
        free(d->index);
    }
    free(d->dir);
    memset(d, 0, sizeof *d);
}

const mf_dcp_tensor *mf_dcp_find(const mf_dcp *d, const char *fqn)
{
    if (!d || !fqn || !d->index || !d->index->by_name)
        return NULL;
    size_t lo = 0, hi = d->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mf_dcp_tensor *t = &d->tensors[d->index->by_name[mid]];
        int c = strcmp(t->fqn, fqn);
        if (c == 0)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
