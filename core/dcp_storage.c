/* storage_data of .metadata: MetadataIndex(fqn, offset) -> _StorageInfo(relative_path, offset,
 * length), hashed once so matching chunks to their bytes is linear; file names interned and
 * checked (relative, beneath the folder, inside the file); the memory cap of one .metadata. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "dcp_parse.h"
#include "file_io.h"
#include "hash_slots.h"
#include "open_beneath.h"

static uint64_t key_hash(const char *fqn, int has_off, int nd, const int64_t *off)
{
    uint8_t key[1 + MF_MAX_DIMS * sizeof(int64_t)];   /* a tag (offset or not, rank), the offsets */
    size_t n = 1;
    key[0] = has_off ? (uint8_t)(0x80 | nd) : 0;
    if (has_off && nd > 0 && nd <= MF_MAX_DIMS) {
        memcpy(key + 1, off, (size_t)nd * sizeof *off);
        n += (size_t)nd * sizeof *off;
    }
    return XXH64(key, n, XXH64(fqn, strlen(fqn), 0));
}

/* Count `bytes` against the cap before allocating them; the refusal says which limit was hit. */
int dcp_charge(ctx *x, size_t bytes, const char *what)
{
    if (bytes > METADATA_MEMORY_CAP - x->mem_used)
        return mf_fail(MF_ERR_LIMIT,
                       "%s: refused: reading it needs more than %zu MiB of memory, mcorefs' fixed limit for a "
                       ".metadata (reached building %s)",
                       x->mpath, METADATA_MEMORY_CAP >> 20, what);
    x->mem_used += bytes;
    return MF_OK;
}

void dcp_release(ctx *x, size_t bytes)
{
    x->mem_used -= bytes;
}

void dcp_ctx_free(ctx *x)
{
    free(x->sd_fqn);
    free(x->sd_off);
    free(x->sd_info);
    free(x->sd_hash);
    free(x->sd_tab);
    free(x->f_tab);
    free(x->f_hash);
}

static int sd_same(const ctx *x, size_t i, const char *fqn, int has_off, int nd, const int64_t *off)
{
    if (strcmp(x->sd_fqn[i], fqn) != 0 || (x->sd_off[i] != NULL) != (has_off != 0))
        return 0;
    if (!has_off)
        return 1;
    int64_t o[MF_MAX_DIMS];
    int n;
    if (dcp_get_dims(x->sd_off[i], o, &n) || n != nd)
        return 0;
    return nd == 0 || memcmp(o, off, (size_t)nd * sizeof *o) == 0;
}

typedef struct {
    const ctx *x;
    uint64_t h;
    const char *fqn;
    int has_off, nd;
    const int64_t *off;
} sd_key;

static int sd_matches(const void *k, size_t i)
{
    const sd_key *q = k;
    return q->x->sd_hash[i] == q->h && sd_same(q->x, i, q->fqn, q->has_off, q->nd, q->off);
}

/* Slot for a key: either the slot holding an equal key or the empty slot where it belongs. */
static size_t sd_slot(const ctx *x, uint64_t h, const char *fqn, int has_off, int nd, const int64_t *off)
{
    sd_key q = { x, h, fqn, has_off, nd, off };
    return mf_slots_find(x->sd_tab, x->n_sd_slots, h, sd_matches, &q);
}

const mf_pv *dcp_sd_find(const ctx *x, const char *fqn, int has_off, int nd, const int64_t *off)
{
    if (!x->sd_tab)
        return NULL;
    uint64_t h = key_hash(fqn, has_off, nd, off);
    size_t s = sd_slot(x, h, fqn, has_off, nd, off);
    return x->sd_tab[s] ? x->sd_info[x->sd_tab[s] - 1] : NULL;
}

/* Entries the view never shows are neither indexed nor validated: optimizer state (Adam
 * moments, possibly with flattened ranges that change the global shape; a checkpoint saved with
 * its optimizer must still mount) and TransformerEngine's per-module _extra_state objects (FP8
 * scaling state; tens of thousands in a large MoE). */
int dcp_skipped(const char *fqn)
{
    return strncmp(fqn, "optimizer.", 10) == 0 || strstr(fqn, "._extra_state") != NULL;
}

int dcp_build_storage_index(ctx *x, const mf_pv *sd)
{
    if (!sd || sd->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: Metadata.storage_data is missing or not a dict", x->mpath);
    size_t n = sd->u.dict.n;
    if (n >= UINT32_MAX / 4)
        return mf_fail(MF_ERR_LIMIT, "%s: %zu storage_data entries (too many)", x->mpath, n);
    x->n_sd = n;
    size_t tab = 16;
    while (tab < 2 * n + 2)
        tab <<= 1;   /* what mf_slots_new allocates, charged first */
    int rc = dcp_charge(x, (n + 1) * (sizeof *x->sd_fqn + sizeof *x->sd_off + sizeof *x->sd_info + 2 * sizeof *x->sd_hash) +
                           tab * (sizeof *x->sd_tab + sizeof *x->f_tab),
                    "the storage_data index");
    if (rc)
        return rc;
    x->sd_fqn = calloc(n + 1, sizeof *x->sd_fqn);
    x->sd_off = calloc(n + 1, sizeof *x->sd_off);
    x->sd_info = calloc(n + 1, sizeof *x->sd_info);
    x->sd_hash = calloc(n + 1, sizeof *x->sd_hash);
    x->sd_tab = mf_slots_new(n, &x->n_sd_slots);
    if (!x->sd_fqn || !x->sd_off || !x->sd_info || !x->sd_hash || !x->sd_tab)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory (storage_data index)", x->mpath);
    for (size_t i = 0; i < n; i++) {
        const mf_pv *k = sd->u.dict.keys[i];
        const char *fqn = mf_pv_get_str(dcp_field(k, "fqn"));
        if (!dcp_is_class(k, "MetadataIndex") || !fqn)
            return mf_fail(MF_ERR_FORMAT, "%s: storage_data key #%zu is not a MetadataIndex with an fqn", x->mpath, i);
        if (dcp_skipped(fqn))
            continue; /* never looked up */
        const mf_pv *ov = dcp_field(k, "offset");
        if (ov && ov->kind == MF_PV_NONE)
            ov = NULL;
        int64_t off[MF_MAX_DIMS];
        int nd = 0;
        if (ov && (rc = dcp_get_dims(ov, off, &nd)))
            return mf_fail(MF_ERR_FORMAT, "%s: storage_data entry for '%s': offset %s", x->mpath, fqn, dcp_dims_problem(rc));
        x->sd_fqn[i] = fqn;
        x->sd_off[i] = ov;
        x->sd_info[i] = sd->u.dict.vals[i];
        x->sd_hash[i] = key_hash(fqn, ov != NULL, nd, off);
        size_t s = sd_slot(x, x->sd_hash[i], fqn, ov != NULL, nd, off);
        x->sd_tab[s] = (uint32_t)(i + 1); /* an equal key again: the later one wins, like a Python dict */
    }
    x->f_tab = mf_slots_new(n, &x->n_f_slots);
    x->f_hash = calloc(n + 1, sizeof *x->f_hash);
    if (!x->f_tab || !x->f_hash)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory (file index)", x->mpath);
    return MF_OK;
}

static int safe_rel_path(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n >= MAX_REL_PATH || p[0] == '/')
        return 0;
    for (const char *c = p; *c;) { /* no "." or ".." component */
        const char *e = strchr(c, '/');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += l + (e ? 1 : 0);
    }
    return 1;
}


const char *dcp_item_name(const item_ref *it, char *buf, size_t n)
{
    char dims[200];
    if (it->offsets)
        snprintf(buf, n, "tensor '%s' chunk %s", it->fqn, dcp_fmt_dims(dims, sizeof dims, it->offsets, it->ndim));
    else
        snprintf(buf, n, "bytes item '%s'", it->fqn);
    return buf;
}

typedef struct {
    const ctx *x;
    uint64_t h;
    const char *rel;
} file_key;

static int file_matches(const void *k, size_t i)
{
    const file_key *q = k;
    return q->x->f_hash[i] == q->h && strcmp(q->x->d->files[i], q->rel) == 0;
}

/* Index of file `rel` in d->files, adding (and stat-ing) it on first use. `what` names the
 * item that refers to it for error messages. */
static int intern_file(ctx *x, const char *rel, const item_ref *it, int *idx)
{
    char what[400];
    mf_dcp *d = x->d;
    file_key q = { x, XXH64(rel, strlen(rel), 0), rel };
    uint64_t h = q.h;
    size_t s = mf_slots_find(x->f_tab, x->n_f_slots, h, file_matches, &q);
    if (x->f_tab[s])
        return *idx = (int)mf_slots_entry(x->f_tab, s), MF_OK;
    if (!safe_rel_path(rel))
        return mf_fail(MF_ERR_FORMAT, "%s: %s: unsafe storage file name '%s'", x->mpath, dcp_item_name(it, what, sizeof what), rel);
    if (d->n_files >= x->n_sd || d->n_files >= INT32_MAX)
        return mf_fail(MF_ERR_LIMIT, "%s: too many storage files", x->mpath);
    size_t i = d->n_files;
    if (dcp_charge(x, strlen(rel) + 1 + 2 * (sizeof *d->files + sizeof *d->file_sizes), "the list of data files"))
        return MF_ERR_LIMIT;
    if (i == x->files_alloc) {
        size_t cap = x->files_alloc ? 2 * x->files_alloc : 16;
        char **nf = realloc(d->files, cap * sizeof *nf);
        if (nf)
            d->files = nf;
        uint64_t *ns = nf ? realloc(d->file_sizes, cap * sizeof *ns) : NULL;
        if (ns)
            d->file_sizes = ns;
        if (!nf || !ns)
            return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
        x->files_alloc = cap;
    }
    if (!(d->files[i] = strdup(rel)))
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    d->file_sizes[i] = 0;
    d->n_files++;
    char *full = mf_path_join(d->dir, rel);
    if (!full)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    struct stat st;
    int fd, rc = mf_open_beneath(d->dir, rel, &fd);   /* beneath the folder, a regular file */
    if (rc == MF_ERR_MISSING)
        rc = mf_fail(MF_ERR_MISSING, "%s: storage file is missing (named by .metadata for %s)", full,
                     dcp_item_name(it, what, sizeof what));
    else if (rc)
        rc = mf_fail_ctx(rc, "named by .metadata for %s", dcp_item_name(it, what, sizeof what));
    else if (fstat(fd, &st) != 0)
        rc = mf_fail(MF_ERR_IO, "%s: %s", full, strerror(errno));
    else
        d->file_sizes[i] = (uint64_t)st.st_size;
    if (fd >= 0)
        close(fd);
    free(full);
    if (rc)
        return rc;
    x->f_hash[i] = h;
    x->f_tab[s] = (uint32_t)(i + 1);
    *idx = (int)i;
    return MF_OK;
}

/* _StorageInfo -> (file, offset, length), window checked against the file size. */
int dcp_resolve_info(ctx *x, const mf_pv *info, const item_ref *it, int *file, uint64_t *off, uint64_t *len)
{
    char what[400];
    const char *rel = mf_pv_get_str(dcp_field(info, "relative_path"));
    int64_t o, l;
    if (!dcp_is_class(info, "_StorageInfo") || !rel || mf_pv_get_int(dcp_field(info, "offset"), &o) ||
        mf_pv_get_int(dcp_field(info, "length"), &l) || o < 0 || l < 0)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: malformed _StorageInfo (relative_path, offset, length)", x->mpath,
                       dcp_item_name(it, what, sizeof what));
    const mf_pv *td = dcp_field(info, "transform_descriptors");
    if (td && (td->kind == MF_PV_LIST || td->kind == MF_PV_TUPLE) && td->u.seq.n > 0)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s: stored with transforms (e.g. compression); not supported", x->mpath,
                       dcp_item_name(it, what, sizeof what));
    int rc = intern_file(x, rel, it, file);
    if (rc)
        return rc;
    uint64_t size = x->d->file_sizes[*file];
    if ((uint64_t)o > size || (uint64_t)l > size - (uint64_t)o)
        return mf_fail(MF_ERR_FORMAT, "%s/%s: %s: window [%lld, +%lld) exceeds the file (%llu bytes; truncated?)", x->d->dir,
                       rel, dcp_item_name(it, what, sizeof what), (long long)o, (long long)l, (unsigned long long)size);
    *off = (uint64_t)o;
    *len = (uint64_t)l;
    return MF_OK;
}
