/* PyTorch Distributed Checkpoint reader (Megatron --ckpt-format torch_dist, mcore-format.md §7).
 *
 * .metadata is a pickle of Metadata(state_dict_metadata, planner_data, storage_data, ...). The
 * safe pickle VM turns every dataclass into an inert OBJECT whose BUILD state holds the fields
 * (a dict; TensorProperties uses a 5-tuple). storage_data maps MetadataIndex(fqn, offset) to
 * _StorageInfo(relative_path, offset, length); it is hashed once so that matching chunks to
 * their bytes is linear in the number of chunks. Chunk tiling (inside the global shape, no
 * overlap, full cover) is checked per tensor on the grid spanned by the chunk boundaries, with a
 * sorted sweep as fallback for layouts whose grid would be too large. */
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "bigmem.h"
#include "open_beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* Everything reading a .metadata holds at once (the file, its pickle values, the index tables)
 * stays under this fixed cap, so a crafted file of any size cannot take the process much past
 * it. A Kimi-K2-sized .metadata (61 layers x 384 experts, 35 MB) needs about 100 MiB. */
#define METADATA_MEMORY_CAP ((size_t)512 << 20)
#define MAX_METADATA_BYTES ((uint64_t)METADATA_MEMORY_CAP - ((uint64_t)1 << 20)) /* leaves the pickle >= 1 MiB */
#define MAX_CHUNK_PKL ((size_t)1 << 20)         /* data.pkl of one chunk: a single tensor record */
#define MAX_ARGS_PKL ((size_t)256 << 20)        /* data.pkl of common.pt / the common_state item */
#define MAX_JSON_BYTES 65536
#define MAX_REL_PATH 4096
#define GRID_MIN_CELLS ((uint64_t)1 << 20)      /* grid check allowed up to max(this, 8 x chunks) */
#define SWEEP_MAX_PAIRS ((uint64_t)1 << 28)     /* fallback overlap sweep work limit per tensor */

struct mf_dcp_index {
    mf_dcp_chunk *chunks;  /* all chunks, tensor after tensor; tensors[i].chunks points inside */
    size_t n_chunks;
    uint32_t *owner;       /* owner[j]: tensor index of chunks[j] */
    size_t *by_name;       /* tensor indices sorted by fqn */
};

/* ---- small helpers ---- */

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* "(0, 64, 0)", "(5,)" or "()" like Python prints a tuple. */
static const char *fmt_dims(char *buf, size_t n, const int64_t *v, int nd)
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < nd && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (used < n)
        snprintf(buf + used, n - used, nd == 1 ? ",)" : ")");
    return buf;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t key_hash(const char *fqn, int has_off, int nd, const int64_t *off)
{
    uint64_t h = XXH64(fqn, strlen(fqn), 0);
    uint8_t tag = has_off ? (uint8_t)(0x80 | nd) : 0;
    h = fnv(h, &tag, 1);
    for (int i = 0; has_off && i < nd; i++)
        h = fnv(h, &off[i], sizeof off[i]);
    return h ^ (h >> 31);
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

/* Class name of an inert object made by NEWOBJ/REDUCE (module is not checked: the dataclasses
 * moved between torch.distributed modules across releases). */
static const char *class_name(const mf_pv *v)
{
    if (!v || v->kind != MF_PV_OBJECT || !v->u.obj.callable || v->u.obj.callable->kind != MF_PV_GLOBAL)
        return NULL;
    return v->u.obj.callable->u.global.name;
}

static int is_class(const mf_pv *v, const char *name)
{
    const char *c = class_name(v);
    return c && strcmp(c, name) == 0;
}

/* A field of a dataclass instance: BUILD state dict, or (dict, slots dict). */
static const mf_pv *field(const mf_pv *obj, const char *key)
{
    if (!obj || obj->kind != MF_PV_OBJECT || !obj->u.obj.state)
        return NULL;
    const mf_pv *s = obj->u.obj.state;
    if (s->kind == MF_PV_DICT)
        return mf_pv_dict_get(s, key);
    if (s->kind == MF_PV_TUPLE && s->u.seq.n == 2) {
        const mf_pv *v = mf_pv_dict_get(s->u.seq.items[0], key);
        return v ? v : mf_pv_dict_get(s->u.seq.items[1], key);
    }
    return NULL;
}

/* A tuple/list of non-negative ints (torch.Size folds to a tuple). 0 ok, <0 bad. */
static int get_dims(const mf_pv *t, int64_t *out, int *nd)
{
    if (!t || (t->kind != MF_PV_TUPLE && t->kind != MF_PV_LIST))
        return -1;
    if (t->u.seq.n > MF_MAX_DIMS)
        return -2;
    for (size_t i = 0; i < t->u.seq.n; i++) {
        const mf_pv *e = t->u.seq.items[i];
        if (e->kind != MF_PV_INT || e->u.i < 0)
            return -3;
        out[i] = e->u.i;
    }
    *nd = (int)t->u.seq.n;
    return 0;
}

static const char *dims_problem(int rc)
{
    return rc == -1 ? "is not a tuple" : rc == -2 ? "has more than 8 dimensions" : "holds a negative or non-int value";
}

/* ---- parse context ---- */

typedef struct {
    mf_dcp *d;
    const char *mpath;       /* dir/.metadata */
    size_t n_sd;
    const char **sd_fqn;
    const mf_pv **sd_off;    /* offset tuple, NULL for None/absent */
    const mf_pv **sd_info;
    uint64_t *sd_hash;
    uint32_t *sd_tab;        /* open addressing: entry index + 1, 0 = empty */
    size_t sd_mask;
    uint32_t *f_tab;         /* file name interning: file index + 1 */
    uint64_t *f_hash;
    size_t f_mask, f_cap;
    size_t files_alloc;      /* capacity of d->files / d->file_sizes */
    size_t mem_used;         /* bytes held for this .metadata, against METADATA_MEMORY_CAP */
} ctx;

/* Count `bytes` against the cap before allocating them; the refusal says which limit was hit. */
static int charge(ctx *x, size_t bytes, const char *what)
{
    if (bytes > METADATA_MEMORY_CAP - x->mem_used)
        return mf_fail(MF_ERR_LIMIT,
                       "%s: refused: reading it needs more than %zu MiB of memory, mcorefs' fixed limit for a "
                       ".metadata (reached building %s)",
                       x->mpath, METADATA_MEMORY_CAP >> 20, what);
    x->mem_used += bytes;
    return MF_OK;
}

static void release(ctx *x, size_t bytes)
{
    x->mem_used -= bytes;
}

static void ctx_free(ctx *x)
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
    if (get_dims(x->sd_off[i], o, &n) || n != nd)
        return 0;
    return nd == 0 || memcmp(o, off, (size_t)nd * sizeof *o) == 0;
}

/* Slot for a key: either the slot holding an equal key or the empty slot where it belongs. */
static size_t sd_slot(const ctx *x, uint64_t h, const char *fqn, int has_off, int nd, const int64_t *off)
{
    size_t s = (size_t)h & x->sd_mask;
    while (x->sd_tab[s]) {
        size_t i = x->sd_tab[s] - 1;
        if (x->sd_hash[i] == h && sd_same(x, i, fqn, has_off, nd, off))
            return s;
        s = (s + 1) & x->sd_mask;
    }
    return s;
}

static const mf_pv *sd_find(const ctx *x, const char *fqn, int has_off, int nd, const int64_t *off)
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
static int skipped(const char *fqn)
{
    return strncmp(fqn, "optimizer.", 10) == 0 || strstr(fqn, "._extra_state") != NULL;
}

static int build_storage_index(ctx *x, const mf_pv *sd)
{
    if (!sd || sd->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: Metadata.storage_data is missing or not a dict", x->mpath);
    size_t n = sd->u.dict.n;
    if (n >= UINT32_MAX / 4)
        return mf_fail(MF_ERR_LIMIT, "%s: %zu storage_data entries (too many)", x->mpath, n);
    x->n_sd = n;
    size_t tab = pow2_at_least(2 * n + 2);
    int rc = charge(x, (n + 1) * (sizeof *x->sd_fqn + sizeof *x->sd_off + sizeof *x->sd_info + 2 * sizeof *x->sd_hash) +
                           tab * (sizeof *x->sd_tab + sizeof *x->f_tab),
                    "the storage_data index");
    if (rc)
        return rc;
    x->sd_fqn = calloc(n + 1, sizeof *x->sd_fqn);
    x->sd_off = calloc(n + 1, sizeof *x->sd_off);
    x->sd_info = calloc(n + 1, sizeof *x->sd_info);
    x->sd_hash = calloc(n + 1, sizeof *x->sd_hash);
    x->sd_tab = calloc(tab, sizeof *x->sd_tab);
    if (!x->sd_fqn || !x->sd_off || !x->sd_info || !x->sd_hash || !x->sd_tab)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory (storage_data index)", x->mpath);
    x->sd_mask = tab - 1;
    for (size_t i = 0; i < n; i++) {
        const mf_pv *k = sd->u.dict.keys[i];
        const char *fqn = mf_pv_get_str(field(k, "fqn"));
        if (!is_class(k, "MetadataIndex") || !fqn)
            return mf_fail(MF_ERR_FORMAT, "%s: storage_data key #%zu is not a MetadataIndex with an fqn", x->mpath, i);
        if (skipped(fqn))
            continue; /* never looked up */
        const mf_pv *ov = field(k, "offset");
        if (ov && ov->kind == MF_PV_NONE)
            ov = NULL;
        int64_t off[MF_MAX_DIMS];
        int nd = 0;
        if (ov && (rc = get_dims(ov, off, &nd)))
            return mf_fail(MF_ERR_FORMAT, "%s: storage_data entry for '%s': offset %s", x->mpath, fqn, dims_problem(rc));
        x->sd_fqn[i] = fqn;
        x->sd_off[i] = ov;
        x->sd_info[i] = sd->u.dict.vals[i];
        x->sd_hash[i] = key_hash(fqn, ov != NULL, nd, off);
        size_t s = sd_slot(x, x->sd_hash[i], fqn, ov != NULL, nd, off);
        x->sd_tab[s] = (uint32_t)(i + 1); /* an equal key again: the later one wins, like a Python dict */
    }
    x->f_cap = pow2_at_least(2 * n + 2);
    x->f_mask = x->f_cap - 1;
    x->f_tab = calloc(x->f_cap, sizeof *x->f_tab);
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

/* What an item is, for messages; formatted only when one is needed. */
typedef struct {
    const char *fqn;
    const int64_t *offsets;  /* a tensor chunk's offsets, NULL for a bytes item */
    int ndim;
} item_ref;

static const char *item_name(const item_ref *it, char *buf, size_t n)
{
    char dims[200];
    if (it->offsets)
        snprintf(buf, n, "tensor '%s' chunk %s", it->fqn, fmt_dims(dims, sizeof dims, it->offsets, it->ndim));
    else
        snprintf(buf, n, "bytes item '%s'", it->fqn);
    return buf;
}

/* Index of file `rel` in d->files, adding (and stat-ing) it on first use. `what` names the
 * item that refers to it for error messages. */
static int intern_file(ctx *x, const char *rel, const item_ref *it, int *idx)
{
    char what[400];
    mf_dcp *d = x->d;
    uint64_t h = fnv(0xcbf29ce484222325ULL, rel, strlen(rel));
    size_t s = (size_t)h & x->f_mask;
    while (x->f_tab[s]) {
        size_t i = x->f_tab[s] - 1;
        if (x->f_hash[i] == h && strcmp(d->files[i], rel) == 0)
            return *idx = (int)i, MF_OK;
        s = (s + 1) & x->f_mask;
    }
    if (!safe_rel_path(rel))
        return mf_fail(MF_ERR_FORMAT, "%s: %s: unsafe storage file name '%s'", x->mpath, item_name(it, what, sizeof what), rel);
    if (d->n_files >= x->n_sd || d->n_files >= INT32_MAX)
        return mf_fail(MF_ERR_LIMIT, "%s: too many storage files", x->mpath);
    size_t i = d->n_files;
    if (charge(x, strlen(rel) + 1 + 2 * (sizeof *d->files + sizeof *d->file_sizes), "the list of data files"))
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
    char *full = join(d->dir, rel);
    if (!full)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    struct stat st;
    int fd, rc = mf_open_beneath(d->dir, rel, &fd);   /* beneath the folder, a regular file */
    if (rc == MF_ERR_MISSING)
        rc = mf_fail(MF_ERR_MISSING, "%s: storage file is missing (named by .metadata for %s)", full,
                     item_name(it, what, sizeof what));
    else if (rc)
        rc = mf_fail_ctx(rc, "named by .metadata for %s", item_name(it, what, sizeof what));
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
static int resolve_info(ctx *x, const mf_pv *info, const item_ref *it, int *file, uint64_t *off, uint64_t *len)
{
    char what[400];
    const char *rel = mf_pv_get_str(field(info, "relative_path"));
    int64_t o, l;
    if (!is_class(info, "_StorageInfo") || !rel || mf_pv_get_int(field(info, "offset"), &o) ||
        mf_pv_get_int(field(info, "length"), &l) || o < 0 || l < 0)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: malformed _StorageInfo (relative_path, offset, length)", x->mpath,
                       item_name(it, what, sizeof what));
    const mf_pv *td = field(info, "transform_descriptors");
    if (td && (td->kind == MF_PV_LIST || td->kind == MF_PV_TUPLE) && td->u.seq.n > 0)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: %s: stored with transforms (e.g. compression); not supported", x->mpath,
                       item_name(it, what, sizeof what));
    int rc = intern_file(x, rel, it, file);
    if (rc)
        return rc;
    uint64_t size = x->d->file_sizes[*file];
    if ((uint64_t)o > size || (uint64_t)l > size - (uint64_t)o)
        return mf_fail(MF_ERR_FORMAT, "%s/%s: %s: window [%lld, +%lld) exceeds the file (%llu bytes; truncated?)", x->d->dir,
                       rel, item_name(it, what, sizeof what), (long long)o, (long long)l, (unsigned long long)size);
    *off = (uint64_t)o;
    *len = (uint64_t)l;
    return MF_OK;
}

/* ---- tiling check ---- */

typedef struct {
    int64_t key;
    uint32_t idx;
} keyed;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return (x->key > y->key) - (x->key < y->key);
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static size_t find_bound(const int64_t *b, size_t n, int64_t v)
{
    size_t lo = 0, hi = n; /* first index with b[i] >= v */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int chunk_empty(const mf_dcp_chunk *c, int nd)
{
    for (int i = 0; i < nd; i++)
        if (c->sizes[i] == 0)
            return 1;
    return 0;
}

static int boxes_overlap(const mf_dcp_chunk *a, const mf_dcp_chunk *b, int nd)
{
    for (int i = 0; i < nd; i++)
        if (a->offsets[i] >= b->offsets[i] + b->sizes[i] || b->offsets[i] >= a->offsets[i] + a->sizes[i])
            return 0;
    return 1;
}

static int overlap_error(const ctx *x, const mf_dcp_tensor *t, const mf_dcp_chunk *a, const mf_dcp_chunk *b)
{
    char s1[200], s2[200];
    return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunks at %s (sizes %s) and %s overlap", x->mpath, t->fqn,
                   fmt_dims(s1, sizeof s1, a->offsets, t->ndim), fmt_dims(s2, sizeof s2, a->sizes, t->ndim),
                   fmt_dims((char[200]){0}, 200, b->offsets, t->ndim));
}

/* Fallback: sort by the start on dimension `dim`, compare each chunk with the chunks that start
 * inside its extent on that dimension, then compare covered volume with the global volume. */
static int check_sweep(const ctx *x, const mf_dcp_tensor *t, const uint32_t *ne, size_t k, int dim, uint64_t total)
{
    keyed *s = malloc((k + 1) * sizeof *s);
    if (!s)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    for (size_t i = 0; i < k; i++)
        s[i] = (keyed){t->chunks[ne[i]].offsets[dim], ne[i]};
    qsort(s, k, sizeof *s, cmp_keyed);
    uint64_t work = 0, covered = 0;
    int rc = MF_OK;
    for (size_t i = 0; i < k && !rc; i++) {
        const mf_dcp_chunk *a = &t->chunks[s[i].idx];
        int64_t end = a->offsets[dim] + a->sizes[dim];
        for (size_t j = i + 1; j < k && s[j].key < end; j++) {
            if (++work > SWEEP_MAX_PAIRS) {
                rc = mf_fail(MF_ERR_LIMIT, "%s: tensor '%s': %zu chunks in a layout too irregular to verify", x->mpath,
                             t->fqn, k);
                break;
            }
            if (boxes_overlap(a, &t->chunks[s[j].idx], t->ndim)) {
                rc = overlap_error(x, t, a, &t->chunks[s[j].idx]);
                break;
            }
        }
        uint64_t v = 1;
        for (int dd = 0; dd < t->ndim; dd++)
            v *= (uint64_t)a->sizes[dd]; /* <= total (inside the shape), no overflow */
        covered += v;                     /* disjoint boxes inside the shape: <= total */
    }
    free(s);
    if (!rc && covered != total) {
        char sh[200];
        rc = mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunks cover %llu of the %llu elements of shape %s", x->mpath,
                     t->fqn, (unsigned long long)covered, (unsigned long long)total, fmt_dims(sh, sizeof sh, t->size, t->ndim));
    }
    return rc;
}

/* Chunks (already known to lie inside the shape) must not overlap and must cover it. */
static int check_tiling(const ctx *x, const mf_dcp_tensor *t)
{
    int nd = t->ndim;
    uint64_t total = 1;
    for (int i = 0; i < nd; i++)
        if (__builtin_mul_overflow(total, (uint64_t)t->size[i], &total) || total > (uint64_t)INT64_MAX)
            return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': global shape is too large", x->mpath, t->fqn);
    if (total == 0)
        return MF_OK; /* every chunk inside an empty shape is empty */
    if (t->n_chunks >= UINT32_MAX / 4)
        return mf_fail(MF_ERR_LIMIT, "%s: tensor '%s': too many chunks", x->mpath, t->fqn);
    char sh[200], at[200];
    uint32_t *ne = malloc((t->n_chunks + 1) * sizeof *ne); /* the non-empty chunks */
    size_t k = 0;
    if (!ne)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    for (size_t i = 0; i < t->n_chunks; i++)
        if (!chunk_empty(&t->chunks[i], nd))
            ne[k++] = (uint32_t)i;
    if (k == 0) {
        free(ne);
        return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': no chunk holds any of its %llu elements (shape %s)", x->mpath,
                       t->fqn, (unsigned long long)total, fmt_dims(sh, sizeof sh, t->size, nd));
    }

    /* Per-dimension sorted, unique chunk boundaries: the grid. */
    size_t per = 2 * k + 2, m[MF_MAX_DIMS];
    int64_t *bd = malloc((size_t)(nd ? nd : 1) * per * sizeof *bd);
    if (!bd) {
        free(ne);
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    }
    uint64_t cells = 1;
    int cells_ok = 1, best = 0, rc = MF_OK;
    for (int dd = 0; dd < nd; dd++) {
        int64_t *b = bd + (size_t)dd * per;
        size_t n = 0;
        b[n++] = 0;
        b[n++] = t->size[dd];
        for (size_t i = 0; i < k; i++) {
            b[n++] = t->chunks[ne[i]].offsets[dd];
            b[n++] = t->chunks[ne[i]].offsets[dd] + t->chunks[ne[i]].sizes[dd];
        }
        qsort(b, n, sizeof *b, cmp_i64);
        size_t u = 0;
        for (size_t i = 0; i < n; i++)
            if (u == 0 || b[i] != b[u - 1])
                b[u++] = b[i];
        m[dd] = u; /* boundaries; u - 1 intervals */
        if (cells_ok && __builtin_mul_overflow(cells, (uint64_t)(u - 1), &cells))
            cells_ok = 0;
        if (u > m[best])
            best = dd;
    }
    uint64_t limit = 8 * (uint64_t)k > GRID_MIN_CELLS ? 8 * (uint64_t)k : GRID_MIN_CELLS;
    if (!cells_ok || cells > limit) {
        rc = check_sweep(x, t, ne, k, best, total);
        free(bd);
        free(ne);
        return rc;
    }

    uint32_t *grid = calloc((size_t)cells, sizeof *grid); /* chunk index + 1 owning each cell */
    if (!grid) {
        free(bd);
        free(ne);
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    }
    uint64_t stride[MF_MAX_DIMS];
    for (int dd = nd - 1; dd >= 0; dd--)
        stride[dd] = dd == nd - 1 ? 1 : stride[dd + 1] * (uint64_t)(m[dd + 1] - 1);
    for (size_t i = 0; i < k && !rc; i++) {
        const mf_dcp_chunk *c = &t->chunks[ne[i]];
        size_t lo[MF_MAX_DIMS], hi[MF_MAX_DIMS], cur[MF_MAX_DIMS];
        for (int dd = 0; dd < nd; dd++) {
            const int64_t *b = bd + (size_t)dd * per;
            lo[dd] = cur[dd] = find_bound(b, m[dd], c->offsets[dd]);
            hi[dd] = find_bound(b, m[dd], c->offsets[dd] + c->sizes[dd]);
        }
        for (;;) {
            uint64_t cell = 0;
            for (int dd = 0; dd < nd; dd++)
                cell += (uint64_t)cur[dd] * stride[dd];
            if (grid[cell]) {
                rc = overlap_error(x, t, &t->chunks[grid[cell] - 1], c);
                break;
            }
            grid[cell] = ne[i] + 1;
            int dd = nd - 1;
            for (; dd >= 0; dd--) {
                if (++cur[dd] < hi[dd])
                    break;
                cur[dd] = lo[dd];
            }
            if (dd < 0)
                break;
        }
    }
    for (uint64_t cell = 0; !rc && cell < cells; cell++) {
        if (grid[cell])
            continue;
        int64_t coord[MF_MAX_DIMS];
        uint64_t r = cell;
        for (int dd = 0; dd < nd; dd++) {
            coord[dd] = bd[(size_t)dd * per + r / stride[dd]];
            r %= stride[dd];
        }
        rc = mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunks do not cover shape %s (no chunk holds element %s)",
                     x->mpath, t->fqn, fmt_dims(sh, sizeof sh, t->size, nd), fmt_dims(at, sizeof at, coord, nd));
    }
    free(grid);
    free(bd);
    free(ne);
    return rc;
}

/* ---- .metadata ---- */

static int read_whole(const char *dir, const char *rel, const char *path, uint64_t max, uint8_t **buf, size_t *len)
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
    while (!rc && got < (size_t)st.st_size) {
        ssize_t r = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            rc = r < 0 ? mf_fail(MF_ERR_IO, "%s: read: %s", path, strerror(errno))
                       : mf_fail(MF_ERR_IO, "%s: file shrank while reading", path);
        else
            got += (size_t)r;
    }
    close(fd);
    if (rc) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = got;
    return MF_OK;
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
            dt = field(props, "dtype");
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
    if ((rc = charge(x, strlen(fqn) + 1, "the tensor names")))
        return rc;
    if (!(t->fqn = strdup(fqn)))
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
    t->chunks = chunks;
    t->dtype = prop_dtype(field(tsm, "properties"), &dtn);
    if (t->dtype == MF_DT_INVALID)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported or missing dtype torch.%s", x->mpath, fqn, dtn);
    if ((rc = get_dims(field(tsm, "size"), t->size, &t->ndim)))
        return mf_fail(rc == -2 ? MF_ERR_UNSUPPORTED : MF_ERR_FORMAT, "%s: tensor '%s': size %s", x->mpath, fqn,
                       dims_problem(rc));
    const mf_pv *cl = field(tsm, "chunks");
    for (size_t j = 0; j < cl->u.seq.n; j++) { /* cl checked by the caller */
        const mf_pv *cv = cl->u.seq.items[j];
        mf_dcp_chunk *c = &chunks[j];
        int no = 0, ns = 0;
        if (!is_class(cv, "ChunkStorageMetadata"))
            return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': chunk #%zu is not a ChunkStorageMetadata", x->mpath, fqn, j);
        if ((rc = get_dims(field(cv, "offsets"), c->offsets, &no)) || (rc = get_dims(field(cv, "sizes"), c->sizes, &ns)))
            return mf_fail(rc == -2 ? MF_ERR_UNSUPPORTED : MF_ERR_FORMAT, "%s: tensor '%s': chunk #%zu offsets/sizes %s",
                           x->mpath, fqn, j, dims_problem(rc));
        t->n_chunks = j + 1; /* chunk j is now initialised enough for messages */
        if (no != t->ndim || ns != t->ndim)
            return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': chunk #%zu has %d/%d dims, the tensor %d", x->mpath, fqn, j, no, ns,
                           t->ndim);
        for (int d = 0; d < t->ndim; d++)
            if (c->offsets[d] > t->size[d] || c->sizes[d] > t->size[d] - c->offsets[d])
                return mf_fail(MF_ERR_INCONSISTENT, "%s: tensor '%s': chunk at %s with sizes %s lies outside the shape %s",
                               x->mpath, fqn, fmt_dims(s1, sizeof s1, c->offsets, t->ndim),
                               fmt_dims(s2, sizeof s2, c->sizes, t->ndim), fmt_dims((char[200]){0}, 200, t->size, t->ndim));
        item_ref it = {fqn, c->offsets, t->ndim};
        const mf_pv *info = sd_find(x, fqn, 1, t->ndim, c->offsets);
        if (!info)
            return mf_fail(MF_ERR_MISSING, "%s: %s has no storage_data entry", x->mpath, item_name(&it, what, sizeof what));
        if ((rc = resolve_info(x, info, &it, &c->file, &c->offset, &c->length)))
            return rc;
    }
    /* check_tiling's scratch at most: non-empty list, boundaries, grid or sweep keys */
    size_t n = t->n_chunks + 1, grid = 8 * n > GRID_MIN_CELLS ? 8 * n : GRID_MIN_CELLS;
    size_t scratch = n * (sizeof(uint32_t) + sizeof(keyed)) + (size_t)t->ndim * (2 * n) * sizeof(int64_t) +
                     grid * sizeof(uint32_t);
    if ((rc = charge(x, scratch, "the check that its chunks tile each tensor")))
        return rc;
    rc = check_tiling(x, t);
    release(x, scratch);
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
    int rc = charge(x, (d->n_tensors + 1) * (sizeof(named) + sizeof *d->index->by_name), "the tensor name index");
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
    if (!is_class(root, "Metadata") || !root->u.obj.state || root->u.obj.state->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: not a torch.distributed.checkpoint Metadata pickle", x->mpath);
    const mf_pv *sdm = field(root, "state_dict_metadata");
    if (!sdm || sdm->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: Metadata.state_dict_metadata is missing or not a dict", x->mpath);
    int rc = build_storage_index(x, field(root, "storage_data"));
    if (rc)
        return rc;

    /* Pass 1: count and check entry kinds. */
    size_t nt = 0, nb = 0, nc = 0;
    for (size_t i = 0; i < sdm->u.dict.n; i++) {
        const char *fqn = mf_pv_get_str(sdm->u.dict.keys[i]);
        const mf_pv *v = sdm->u.dict.vals[i];
        if (!fqn)
            return mf_fail(MF_ERR_FORMAT, "%s: state_dict_metadata key #%zu is not a string", x->mpath, i);
        if (skipped(fqn))
            continue;
        if (is_class(v, "TensorStorageMetadata")) {
            const mf_pv *cl = field(v, "chunks");
            if (!cl || (cl->kind != MF_PV_LIST && cl->kind != MF_PV_TUPLE))
                return mf_fail(MF_ERR_FORMAT, "%s: tensor '%s': chunks is missing or not a list", x->mpath, fqn);
            nt++;
            nc += cl->u.seq.n; /* bounded by the pickle arena */
        } else if (is_class(v, "BytesStorageMetadata")) {
            nb++;
        } else {
            const char *cn = class_name(v);
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: entry '%s' is a %s, not tensor or bytes metadata", x->mpath, fqn,
                           cn ? cn : "plain value");
        }
    }
    if (nt >= UINT32_MAX || nc >= SIZE_MAX / sizeof(mf_dcp_chunk) / 2)
        return mf_fail(MF_ERR_LIMIT, "%s: too many tensors or chunks", x->mpath);
    if ((rc = charge(x, (nc + 1) * (sizeof *d->index->chunks + sizeof *d->index->owner) + (nt + 1) * sizeof *d->tensors +
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
        if (skipped(fqn))
            continue;
        if (is_class(v, "TensorStorageMetadata")) {
            size_t n = field(v, "chunks")->u.seq.n;
            mf_dcp_tensor *t = &d->tensors[d->n_tensors++];
            for (size_t j = 0; j < n; j++)
                d->index->owner[ci + j] = (uint32_t)(d->n_tensors - 1);
            if ((rc = parse_tensor(x, fqn, v, t, d->index->chunks + ci)))
                return rc;
            ci += n;
        } else {
            mf_dcp_bytes *b = &d->bytes[d->n_bytes++];
            item_ref it = {fqn, NULL, 0};
            if ((rc = charge(x, strlen(fqn) + 1, "the item names")))
                return rc;
            if (!(b->fqn = strdup(fqn)))
                return mf_fail(MF_ERR_NOMEM, "%s: out of memory", x->mpath);
            const mf_pv *info = sd_find(x, fqn, 0, 0, NULL);
            if (!info)
                return mf_fail(MF_ERR_MISSING, "%s: bytes item '%s' has no storage_data entry", x->mpath, fqn);
            if ((rc = resolve_info(x, info, &it, &b->file, &b->offset, &b->length)))
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
    int rc;
    if (!(d->dir = strdup(dir)) || !(mpath = join(dir, ".metadata")) || !(d->index = calloc(1, sizeof *d->index))) {
        rc = mf_fail(MF_ERR_NOMEM, "%s: out of memory", dir);
        goto out;
    }
    x.mpath = mpath;
    if ((rc = read_whole(dir, ".metadata", mpath, MAX_METADATA_BYTES, &buf, &len)))
        goto out;
    /* Megatron keeps a copy of every rank's save plan in .metadata (all_local_plans, about half
     * of it, written last), which says nothing the reader needs. */
    static const char *const unused_fields[] = {"all_local_plans", NULL};
    mf_pickle_limits lim = {.max_bytes = METADATA_MEMORY_CAP - len, .max_depth = 1000, .skip_keys = unused_fields};
    if ((rc = mf_pickle_load(buf, len, mpath, &lim, &pk, &root))) {
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
    ctx_free(&x);
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

/* ---- detection ---- */

/* metadata.json has "sharded_backend": "torch_dist" (a tiny scan; the file is flat JSON). */
static int json_says_torch_dist(const char *s)
{
    const char *k = "\"sharded_backend\"";
    for (const char *p = strstr(s, k); p; p = strstr(p + 1, k)) {
        const char *q = p + strlen(k);
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (*q++ != ':')
            continue;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (strncmp(q, "\"torch_dist\"", 12) == 0)
            return 1;
    }
    return 0;
}

int mf_dcp_detect(const char *dir)
{
    if (!dir)
        return 0;
    char *p = join(dir, ".metadata");
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
    while (buf && got < MAX_JSON_BYTES) {
        ssize_t r = pread(fd, buf + got, MAX_JSON_BYTES - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf)
        return 0;
    buf[got] = '\0';
    yes = json_says_torch_dist(buf);
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
    snprintf(what, sizeof what, "tensor '%s' chunk %s", t ? t->fqn : "?", fmt_dims(s1, sizeof s1, c->offsets, nd));
    char *path = join(d->dir, d->files[c->file]);
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
                         fmt_dims(s1, sizeof s1, out->shape, out->ndim), fmt_dims(s2, sizeof s2, c->sizes, t->ndim));
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

int mf_dcp_load_args(const mf_dcp *d, mf_pickle **pk, const mf_pv **args)
{
    *pk = NULL;
    *args = NULL;
    if (!d || !d->dir)
        return mf_fail(MF_ERR_INVALID, "mf_dcp_load_args: checkpoint not open");
    const mf_dcp_bytes *b = NULL;
    for (size_t i = 0; i < d->n_bytes && !b; i++)
        if (strncmp(d->bytes[i].fqn, "common_state", 12) == 0 && (d->bytes[i].fqn[12] == '/' || d->bytes[i].fqn[12] == '\0'))
            b = &d->bytes[i];
    mf_torchfile tf;
    int rc;
    if (b) { /* core >= 0.19: torch.save([common_state_dict]) as a bytes item */
        char *path = join(d->dir, d->files[b->file]);
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
        rc = take_args(&tf, what, 1, pk, args);
        mf_torchfile_close(&tf);
        close(fd); /* borrowed by tf */
        return rc;
    } else { /* core <= 0.18: common.pt next to .metadata */
        char *path = join(d->dir, "common.pt");
        int fd = -1;
        if (!path)
            return mf_fail(MF_ERR_NOMEM, "%s: out of memory", d->dir);
        rc = mf_open_beneath(d->dir, "common.pt", &fd);
        if (rc == MF_ERR_MISSING)
            rc = mf_fail(MF_ERR_MISSING, "%s: a plain PyTorch DCP checkpoint, not a Megatron-Core one: no common.pt and no common_state item "
                         "in .metadata, so no training args; give the save folder of a Megatron-Core torch_dist checkpoint",
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
