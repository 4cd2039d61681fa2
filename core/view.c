/* Lay HF tensors out into safetensors shards exactly as huggingface_hub + safetensors would:
 * greedy packing in HF order with whole layers kept together, tensors inside a file sorted by
 * (alignment desc, name), header JSON padded with spaces to 8 bytes, no trailing bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "json_python.h"
#include "json_util.h"
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"
#include "mcorefs/view.h"

int mf_view_add_file(mf_session *s, const char *name, mf_vfile **out)
{
    mf_vfile *nf = realloc(s->files, (s->n_files + 1) * sizeof(*nf));
    if (!nf)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    s->files = nf;
    *out = &s->files[s->n_files++];
    memset(*out, 0, sizeof(**out));
    if (name && !((*out)->name = strdup(name))) {
        s->n_files--;   /* never leave a nameless entry behind */
        *out = NULL;
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    return MF_OK;
}

int mf_view_add_memory_file(mf_session *s, const char *name, char *data, size_t size)
{
    mf_vfile *f = NULL;
    if (!data || mf_view_add_file(s, name, &f) != MF_OK) {
        free(data);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    f->kind = MF_VF_MEMORY;
    f->data = data;
    f->size = size;
    return MF_OK;
}

static const mf_mapping *sort_map;

static int cmp_in_file(const void *a, const void *b)
{
    const mf_hf_tensor *x = &sort_map->tensors[*(const uint32_t *)a];
    const mf_hf_tensor *y = &sort_map->tensors[*(const uint32_t *)b];
    size_t ax = mf_dtype_size(x->dtype), ay = mf_dtype_size(y->dtype);
    if (ax != ay)
        return ax > ay ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(sort_map->tensors[*(const uint32_t *)a].name, sort_map->tensors[*(const uint32_t *)b].name);
}

/* Header JSON for one shard (compact, as safetensors writes it); fills each tensor's offset. */
static int build_header(mf_session *s, mf_vfile *f)
{
    mf_jbuf j = {0};
    uint64_t off = 0;
    mf_jbuf_reserve(&j, 64 + (size_t)f->n_tensors * 128); /* one growth step for typical names */
    mf_jbuf_add(&j, "        {\"__metadata__\":{\"format\":\"pt\"}", 8 + 31);
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        mf_hf_tensor *t = &s->map.tensors[f->tensors[i]];
        mf_jbuf_add(&j, ",", 1);
        mf_jbuf_str(&j, t->name);
        mf_jbuf_printf(&j, ":{\"dtype\":\"%s\",\"shape\":[", mf_dtype_st_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            mf_jbuf_printf(&j, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        t->offset = off;
        off += t->nbytes;
        mf_jbuf_printf(&j, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset, (unsigned long long)off);
    }
    mf_jbuf_add(&j, "}", 1);
    size_t n = j.n - 8, padded = (n + 7) / 8 * 8;
    for (size_t k = n; k < padded; k++)
        mf_jbuf_add(&j, " ", 1);
    if (j.failed)
        return mf_fail(MF_ERR_NOMEM, "out of memory (safetensors header)");
    uint64_t le = padded; /* the first 8 bytes were reserved for the length */
    for (int i = 0; i < 8; i++)
        j.p[i] = (char)((le >> (8 * i)) & 0xff);
    f->data = j.p;
    f->header_len = 8 + padded;
    f->size = f->header_len + off;
    return MF_OK;
}

/* Groups: a whole layer, or one non-layer tensor. Greedy: start a new shard when the group
 * would overflow it; a group bigger than a shard is split per tensor. */
static int plan(const mf_mapping *m, uint64_t limit, uint32_t *file_of, uint32_t *n_files)
{
    uint32_t cur = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < m->n;) {
        size_t j = i + 1;
        uint64_t gsize = m->tensors[i].nbytes;
        if (m->tensors[i].layer >= 0)
            while (j < m->n && m->tensors[j].layer == m->tensors[i].layer)
                gsize += m->tensors[j++].nbytes;
        if (gsize <= limit) {
            if (used > 0 && used + gsize > limit) {
                cur++;
                used = 0;
            }
            for (size_t k = i; k < j; k++)
                file_of[k] = cur;
            used += gsize;
        } else {
            for (size_t k = i; k < j; k++) {
                if (used > 0 && used + m->tensors[k].nbytes > limit) {
                    cur++;
                    used = 0;
                }
                file_of[k] = cur;
                used += m->tensors[k].nbytes;
            }
        }
        i = j;
    }
    *n_files = m->n ? cur + 1 : 1;
    return MF_OK;
}

static int build_index(mf_session *s, uint32_t first, uint32_t n)
{
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *wm = cJSON_CreateObject();
    char num[32];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)s->map.total_bytes);
    cJSON_AddItemToObject(meta, "total_size", cJSON_CreateRaw(num));
    cJSON_AddItemToObject(root, "metadata", meta);
    /* weight_map sorted by tensor name, as transformers writes it */
    uint32_t *order = malloc(s->map.n * sizeof(uint32_t) + 1);
    if (!order) {
        cJSON_Delete(root);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < s->map.n; i++)
        order[i] = i;
    sort_map = &s->map;
    qsort(order, s->map.n, sizeof(uint32_t), cmp_name);
    for (uint32_t i = 0; i < s->map.n; i++) {
        const mf_hf_tensor *t = &s->map.tensors[order[i]];
        cJSON_AddStringToObject(wm, t->name, s->files[first + t->file].name);
    }
    free(order);
    cJSON_AddItemToObject(root, "weight_map", wm);
    char *json = mf_json_print_python(root);   /* as save_pretrained writes it */
    cJSON_Delete(root);
    (void)n;
    return mf_view_add_memory_file(s, "model.safetensors.index.json", json, json ? strlen(json) : 0);
}

int mf_view_build_shards(mf_session *s)
{
    mf_mapping *m = &s->map;
    uint32_t n_files = 0;
    int qrc = mf_fp8_add_to_view(s);   /* -o quant=fp8: FP8 weights and their scales */
    if (qrc != MF_OK)
        return qrc;
    uint32_t *file_of = malloc((m->n ? m->n : 1) * sizeof(uint32_t));
    if (!file_of)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    plan(m, s->opts.shard_size, file_of, &n_files);
    uint32_t first = (uint32_t)s->n_files;
    int rc = MF_OK;
    for (uint32_t k = 0; k < n_files && rc == 0; k++) {
        mf_vfile *f = NULL;
        char name[64];
        if ((rc = mf_view_add_file(s, NULL, &f)) != 0)
            break;
        if (n_files == 1)
            snprintf(name, sizeof(name), "model.safetensors");
        else
            snprintf(name, sizeof(name), "model-%05u-of-%05u.safetensors", k + 1, n_files);
        f->name = strdup(name);
        f->kind = MF_VF_SAFETENSORS;
        f->tensors = malloc((m->n ? m->n : 1) * sizeof(uint32_t));
        if (!f->name || !f->tensors) {
            rc = mf_fail(MF_ERR_NOMEM, "out of memory");
            break;
        }
        for (uint32_t i = 0; i < m->n; i++)
            if (file_of[i] == k) {
                f->tensors[f->n_tensors++] = i;
                m->tensors[i].file = k;
            }
        sort_map = m;
        qsort(f->tensors, f->n_tensors, sizeof(uint32_t), cmp_in_file);
        rc = build_header(s, f);
    }
    free(file_of);
    if (rc == 0 && n_files > 1)
        rc = build_index(s, first, n_files);
    return rc;
}
