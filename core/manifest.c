/* .mcorefs/manifest.json (where every HF tensor's bytes come from) and .mcorefs/stats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "json_util.h"
#include "mcorefs/mapping.h"
#include "mcorefs/view.h"

char *mf_manifest_build(const mf_session *s)
{
    const mf_checkpoint *c = &s->ckpt;
    cJSON *root = cJSON_CreateObject(), *files = cJSON_CreateArray(), *ts = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "checkpoint", c->iter_dir);
    cJSON_AddStringToObject(root, "architecture", c->model.family->architecture);
    for (size_t i = 0; i < c->n_files; i++)
        cJSON_AddItemToArray(files, cJSON_CreateString(c->files[i].name));
    cJSON_AddItemToObject(root, "rank_files", files);
    cJSON_AddStringToObject(root, "piece_fields", "[rank_file_index, src_row, src_col, dst_row, dst_col, rows, cols]");
    for (size_t i = 0; i < s->map.n; i++) {
        const mf_hf_tensor *t = &s->map.tensors[i];
        cJSON *e = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *pieces = cJSON_CreateArray();
        cJSON_AddStringToObject(e, "source", t->source->name);
        cJSON_AddStringToObject(e, "split", mf_split_name(t->split));
        cJSON_AddStringToObject(e, "dtype", mf_dtype_st_name(t->dtype));
        if (t->dtype != t->src_dtype)
            cJSON_AddStringToObject(e, "source_dtype", mf_dtype_st_name(t->src_dtype));
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToObject(e, "shape", shape);
        for (uint32_t k = 0; k < t->n_pieces; k++) {
            const mf_piece *p = &t->pieces[k];
            double v[9] = { p->src->file, p->src_row, p->src_col, p->dst_row, p->dst_col, p->rows, p->cols,
                            p->transposed, p->dst_step };
            /* transposed / interleaved pieces add two fields; plain copies keep the seven */
            cJSON_AddItemToArray(pieces, cJSON_CreateDoubleArray(v, p->transposed || p->dst_step > 1 ? 9 : 7));
        }
        cJSON_AddItemToObject(e, "pieces", pieces);
        cJSON_AddItemToObject(ts, t->name, e);
    }
    cJSON_AddItemToObject(root, "tensors", ts);
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

char *mf_stats_render(const mf_session *s)
{
    const mf_checkpoint *c = &s->ckpt;
    size_t cap = 256 + c->n_files * 96, n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    /* Every number has a fixed width, so the text's length and layout never change during a
     * mount: a reader whose read is split in two (at any offset) still gets whole lines. */
    n += (size_t)snprintf(out + n, cap - n, "read_requests %20llu\nbytes_served %20llu\nread_errors %20llu\nsource_changed %20llu\n",
                          (unsigned long long)__atomic_load_n(&s->n_reads, __ATOMIC_RELAXED),
                          (unsigned long long)__atomic_load_n(&s->n_bytes, __ATOMIC_RELAXED),
                          (unsigned long long)__atomic_load_n(&s->n_errors, __ATOMIC_RELAXED),
                          (unsigned long long)__atomic_load_n(&s->n_source_changed, __ATOMIC_RELAXED));
    for (size_t i = 0; i < c->n_files && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "source_bytes %s %20llu\n", c->files[i].name,
                              (unsigned long long)__atomic_load_n(&s->file_bytes[i], __ATOMIC_RELAXED));
    return out;
}
