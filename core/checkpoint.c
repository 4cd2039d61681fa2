/* Open a legacy checkpoint: rank files, their (tp, pp, ep, etp), args agreement, coverage,
 * and the canonical source-tensor index (mcore-format.md §1, §5). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "canon.h"
#include "checkpoint_dist.h"
#include "discover.h"
#include "file_io.h"
#include "mcorefs/checkpoint.h"
#include "mcorefs/error.h"
#include "mcorefs/torchfile.h"
#include "open_beneath.h"
#include "source_index.h"

/* Args that every rank file must agree on. */
static const char *const agreeing_args[] = {
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
    "group_query_attention", "kv_channels", "padded_vocab_size", "tensor_model_parallel_size",
    "pipeline_model_parallel_size", "expert_model_parallel_size", "expert_tensor_parallel_size",
    "virtual_pipeline_model_parallel_size", "num_experts", "moe_ffn_hidden_size", "swiglu",
    "untie_embeddings_and_output_weights", "multi_latent_attention", "q_lora_rank", "kv_lora_rank",
    "mtp_num_layers", "transformer_impl", "qk_layernorm", "add_qkv_bias", "params_dtype", NULL };

static int pv_scalar_equal(const mf_pv *a, const mf_pv *b)
{
    if (a == NULL || b == NULL)
        return (a == NULL || a->kind == MF_PV_NONE) && (b == NULL || b->kind == MF_PV_NONE);
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case MF_PV_NONE: return 1;
    case MF_PV_BOOL:
    case MF_PV_INT: return a->u.i == b->u.i;
    case MF_PV_FLOAT: return a->u.f == b->u.f;
    case MF_PV_STR: return strcmp(a->u.str.s, b->u.str.s) == 0;
    case MF_PV_GLOBAL: return strcmp(a->u.global.module, b->u.global.module) == 0 &&
                              strcmp(a->u.global.name, b->u.global.name) == 0;
    default: return 1;  /* containers: not compared */
    }
}

static const mf_pv *args_dict(const mf_pv *root)
{
    const mf_pv *a = mf_pv_dict_get(root, "args");
    if (a && a->kind == MF_PV_OBJECT)
        a = mf_pv_obj_state(a);
    return a && a->kind == MF_PV_DICT ? a : NULL;
}

static int check_args_agree(const mf_pv *a0, const char *p0, const mf_pv *a, const char *p)
{
    for (int i = 0; agreeing_args[i]; i++)
        if (!pv_scalar_equal(mf_pv_dict_get(a0, agreeing_args[i]), mf_pv_dict_get(a, agreeing_args[i])))
            return mf_fail(MF_ERR_INCONSISTENT, "%s: args.%s differs from %s (rank files of different runs?)",
                           p, agreeing_args[i], p0);
    return MF_OK;
}

/* §1.8 step 2: the stage-local writer ranks r that produce file (tp, ep) must agree on etp. */
static int file_etp(const mf_model *m, int tp, int ep, const char *path, int *etp)
{
    int64_t writers = m->tp * m->cp > m->etp * m->ep ? m->tp * m->cp : m->etp * m->ep;
    int found = -1;
    for (int64_t r = 0; r < writers; r++) {
        if (r % m->tp != tp || (r / m->etp) % m->ep != ep)
            continue;
        int e = (int)(r % m->etp);
        if (found >= 0 && found != e) {
            if (m->num_experts == 0)
                break;
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: written by ranks with different expert-TP ranks (ETP=%lld > TP=%lld loses expert shards in the torch format)",
                           path, (long long)m->etp, (long long)m->tp);
        }
        found = e;
    }
    if (found < 0) {
        if (m->num_experts == 0) {
            *etp = 0;
            return MF_OK;
        }
        return mf_fail(MF_ERR_INCONSISTENT, "%s: no Megatron rank writes a file with tp=%d ep=%d under tp=%lld ep=%lld etp=%lld",
                       path, tp, ep, (long long)m->tp, (long long)m->ep, (long long)m->etp);
    }
    *etp = found;
    return MF_OK;
}

typedef struct {
    mf_visit_fn fn;
    void *ctx;
} walker;

static int visit_add(mf_checkpoint *c, void *ctx, const char *name, int expert, int n_shards, int shard, const mf_shard *sh)
{
    return mf_source_add(c, name, expert, n_shards, shard, sh);
}

static int add_tensor(mf_checkpoint *c, const walker *w, const mf_rankfile *rf, int file_idx, const mf_torchfile *tf,
                      const char *canon, const mf_canon *cr, const mf_pv *val, const char *key)
{
    const mf_model *m = &c->model;
    mf_shard sh = { .file = file_idx };
    int rc = mf_torchfile_tensor(tf, val, key, &sh.t);
    if (rc)
        return rc;
    int n_shards = cr->expert ? (int)m->etp : (int)m->tp;
    int shard = cr->expert ? rf->etp : rf->tp;
    if (!cr->legacy_grouped)
        return w->fn(c, w->ctx, canon, cr->expert, n_shards, shard, &sh);

    /* Legacy GroupedMLP: weight1 bytes are [E_l][H][X] and weight2 [E_l][Y][H]; expert j's
     * Linear weight is the transpose of its block (mcore-format.md §5.3). */
    int64_t el = m->num_experts / m->ep;
    mf_tensor t = sh.t;
    size_t es = mf_dtype_size(t.dtype);
    if (t.ndim != 2 || t.stride[1] != 1 || t.stride[0] != t.shape[1] || el <= 0)
        return mf_fail(MF_ERR_FORMAT, "%s: %s: legacy grouped expert weight must be a contiguous 2-D tensor", rf->path, key);
    int64_t h = cr->legacy_grouped == 1 ? t.shape[0] : t.shape[1];
    int64_t total = cr->legacy_grouped == 1 ? t.shape[1] : t.shape[0];
    if (total % el != 0)
        return mf_fail(MF_ERR_INCONSISTENT, "%s: %s: %lld columns do not split into %lld experts", rf->path, key, (long long)total, (long long)el);
    int64_t x = total / el;
    for (int64_t j = 0; j < el; j++) {
        char name[256];
        snprintf(name, sizeof(name), canon, (long long)(rf->ep * el + j));
        mf_shard e = sh;
        if (cr->legacy_grouped == 1) {   /* fc1 [X, H] = transpose of [H][X] */
            e.t.shape[0] = x; e.t.shape[1] = h;
            e.t.stride[0] = 1; e.t.stride[1] = x;
        } else {                         /* fc2 [H, Y] = transpose of [Y][H] */
            e.t.shape[0] = h; e.t.shape[1] = x;
            e.t.stride[0] = 1; e.t.stride[1] = h;
        }
        e.t.offset = t.offset + (uint64_t)(j * x * h) * es;
        rc = w->fn(c, w->ctx, name, 1, n_shards, shard, &e);
        if (rc)
            return rc;
    }
    return MF_OK;
}

static int index_chunk(mf_checkpoint *c, const walker *w, const mf_rankfile *rf, int file_idx, const mf_torchfile *tf,
                       const mf_pv *dict, int64_t vp, const char *chunk_name)
{
    const mf_model *m = &c->model;
    mf_canon_ctx x = { 0 };
    int64_t off, cnt;
    int rc = mf_layer_offset(m, rf->pp, vp, &off, &cnt);
    if (rc)
        return mf_fail_ctx(rc, "%s", rf->path);
    x.layer_offset = off;
    x.layer_count = cnt;
    x.num_layers = m->num_layers;
    x.expert_base = m->num_experts > 0 ? (long long)rf->ep * (m->num_experts / m->ep) : 0;
    x.has_mtp = m->mtp_layers > 0 && rf->pp == m->pp - 1 && vp == m->vpp - 1;
    x.first_chunk = rf->pp == 0 && vp == 0;
    x.tied = m->tied;
    if (dict == NULL || dict->kind != MF_PV_DICT)
        return mf_fail(MF_ERR_FORMAT, "%s: '%s' is not a state dict", rf->path, chunk_name);
    for (size_t i = 0; i < dict->u.dict.n; i++) {
        const char *key = mf_pv_get_str(dict->u.dict.keys[i]);
        const mf_pv *val = dict->u.dict.vals[i];
        char canon[512];
        mf_canon cr;
        if (key == NULL)
            return mf_fail(MF_ERR_FORMAT, "%s: %s has a non-string key", rf->path, chunk_name);
        if (mf_canon_key(key, &x, canon, sizeof(canon), &cr) != 0)
            return mf_fail(MF_ERR_INCONSISTENT, "%s: %s: unexpected key '%s' for a chunk with layers %lld..%lld",
                           rf->path, chunk_name, key, (long long)off, (long long)(off + cnt - 1));
        if (cr.skip || !mf_torchfile_is_tensor(val))
            continue;
        rc = add_tensor(c, w, rf, file_idx, tf, canon, &cr, val, key);
        if (rc)
            return rc;
    }
    return MF_OK;
}

static int index_file(mf_checkpoint *c, const walker *w, int idx, const mf_torchfile *tf)
{
    const mf_rankfile *rf = &c->files[idx];
    const mf_model *m = &c->model;
    if (m->vpp > 1) {
        for (int64_t vp = 0; vp < m->vpp; vp++) {
            char key[32];
            snprintf(key, sizeof(key), "model%lld", (long long)vp);
            const mf_pv *d = mf_pv_dict_get(tf->root, key);
            if (d == NULL)
                return mf_fail(MF_ERR_FORMAT, "%s: no '%s' (virtual pipeline size %lld)", rf->path, key, (long long)m->vpp);
            int rc = index_chunk(c, w, rf, idx, tf, d, vp, key);
            if (rc)
                return rc;
        }
        return MF_OK;
    }
    const mf_pv *d = mf_pv_dict_get(tf->root, "model");
    if (d == NULL)
        return mf_fail(MF_ERR_FORMAT, "%s: no 'model' state dict", rf->path);
    return index_chunk(c, w, rf, idx, tf, d, 0, "model");
}

int mf_checkpoint_walk_file(mf_checkpoint *c, int idx, mf_visit_fn fn, void *ctx, const mf_torchfile *tf)
{
    walker w = { fn, ctx };
    return index_file(c, &w, idx, tf);
}

/* The rank folder Megatron names for (tp, pp, ep): mp_rank_TT[_PPP][_EEE]. */
static void rank_dir_name(const mf_model *m, int64_t tp, int64_t pp, int64_t ep, char *out, size_t n)
{
    int k = snprintf(out, n, "mp_rank_%02lld", (long long)tp);
    if (m->pp > 1 && k > 0 && (size_t)k < n)
        k += snprintf(out + k, n - (size_t)k, "_%03lld", (long long)pp);
    if (m->ep > 1 && k > 0 && (size_t)k < n)
        snprintf(out + k, n - (size_t)k, "_%03lld", (long long)ep);
}

/* Write to msg the files that the stage-local writer ranks (>= core_v0.18 rule, a superset of
 * the older rule's) write with the wanted shard: the names a user looks for. Called only when
 * none of them holds it, so all of them are missing. */
static void name_missing_files(const mf_checkpoint *c, int64_t pp, int64_t want_tp, int64_t want_ep,
                               int64_t want_etp, char *msg, size_t cap)
{
    const mf_model *m = &c->model;
    size_t len = 0;
    msg[0] = 0;
    int64_t writers = m->tp * m->cp > m->etp * m->ep ? m->tp * m->cp : m->etp * m->ep;
    int64_t named_files[64];
    int n_named = 0;
    for (int64_t r = 0; r < writers && len + 1 < cap; r++) {
        int64_t tp = r % m->tp, ep = (r / m->etp) % m->ep, etp = r % m->etp;
        if ((want_tp >= 0 && tp != want_tp) || (want_ep >= 0 && (ep != want_ep || etp != want_etp)))
            continue;
        int seen = 0;   /* several writers of one file (CP, replicas): name it once */
        for (int i = 0; i < n_named && !seen; i++)
            seen = named_files[i] == tp * m->ep + ep;
        if (seen || n_named == 64)
            continue;
        named_files[n_named++] = tp * m->ep + ep;
        char dir[64];
        rank_dir_name(m, tp, pp, ep, dir, sizeof(dir));
        int k = snprintf(msg + len, cap - len, "%s%s/%s/model_optim_rng.pt", n_named > 1 ? " and " : "", c->iter_dir, dir);
        len = k < 0 ? len : (size_t)k < cap - len ? len + (size_t)k : cap - 1;
    }
}

static int check_coverage(const mf_checkpoint *c)
{
    const mf_model *m = &c->model;
    char files[2048];
    for (int64_t p = 0; p < m->pp; p++) {
        for (int64_t t = 0; t < m->tp; t++) {
            int have = 0;
            for (size_t f = 0; f < c->n_files && !have; f++)
                have = c->files[f].pp == p && c->files[f].tp == t;
            if (have)
                continue;
            name_missing_files(c, p, t, -1, 0, files, sizeof(files));
            return mf_fail(MF_ERR_MISSING, "incomplete checkpoint: missing %s (dense shard tp=%lld of pipeline stage %lld is in no rank file%s)",
                           files, (long long)t, (long long)p,
                           m->tp * m->cp > m->etp * m->ep ? "; Megatron < core_v0.18 does not write it when TP > EP*ETP" : "");
        }
        if (m->num_experts == 0)
            continue;
        for (int64_t e = 0; e < m->ep; e++)
            for (int64_t t = 0; t < m->etp; t++) {
                int have = 0;
                for (size_t f = 0; f < c->n_files && !have; f++)
                    have = c->files[f].pp == p && c->files[f].ep == e && c->files[f].etp == t;
                if (have)
                    continue;
                name_missing_files(c, p, -1, e, t, files, sizeof(files));
                return mf_fail(MF_ERR_MISSING, "incomplete checkpoint: missing %s (expert shard ep=%lld etp=%lld of pipeline stage %lld is in no rank file)",
                               files, (long long)e, (long long)t, (long long)p);
            }
    }
    return MF_OK;
}

static int open_rank_file(mf_checkpoint *c, size_t i, const char *rank_dir_name)
{
    mf_rankfile *rf = &c->files[i];
    char *dir = mf_path_join(c->iter_dir, rank_dir_name);
    rf->name = strdup(rank_dir_name);
    rf->path = dir ? mf_path_join(dir, "model_optim_rng.pt") : NULL;
    free(dir);
    rf->fd = -1;
    if (!rf->name || !rf->path)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    return MF_OK;
}

/* Open rank file i beneath the iteration folder and parse it. Its identity is recorded right
 * after the open, before parsing, so a rewrite during the parse is seen too. tf borrows rf->fd. */
static int parse_rank_file(mf_checkpoint *c, size_t i, mf_torchfile *tf)
{
    mf_rankfile *rf = &c->files[i];
    char rel[300];
    snprintf(rel, sizeof(rel), "%s/model_optim_rng.pt", rf->name);
    if (rf->fd < 0) {
        int rc = mf_open_beneath(c->iter_dir, rel, &rf->fd);
        if (rc == 0 && (rc = mf_file_id_get(rf->fd, rf->path, &rf->id)) == 0)
            rf->size = rf->id.size;
        if (rc)
            return rc;
    }
    return mf_torchfile_open_window(tf, rf->fd, rf->path, 0, 0, 0);
}

/* Legacy torch format: one model_optim_rng.pt per rank folder. On error c is left for the
 * caller to close. */
static int open_legacy(mf_checkpoint *c, const mf_options *o)
{
    char **names = NULL;
    size_t n = 0;
    int rc;
    rc = mf_list_rank_dirs(c->iter_dir, &names, &n);
    if (rc)
        goto out;
    c->files = calloc(n ? n : 1, sizeof(mf_rankfile));
    if (!c->files) {
        rc = mf_fail(MF_ERR_NOMEM, "out of memory");
        goto out;
    }
    c->n_files = n;
    if (n == 0) {
        rc = mf_fail(MF_ERR_MISSING, "%s: no mp_rank_* folders", c->iter_dir);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = open_rank_file(c, i, names[i])) != 0)
            goto out;

    /* The first rank file (sorted: mp_rank_00[_000][_000]) carries the args we trust. */
    mf_torchfile first;
    rc = parse_rank_file(c, 0, &first);
    if (rc)
        goto out;
    const mf_pv *a0 = args_dict(first.root);
    rc = mf_model_from_args(&c->model, a0, o->arch, c->files[0].path);
    if (rc) {
        mf_torchfile_close(&first);
        goto out;
    }
    c->args_pk = first.pk;   /* keep the first file's tree alive for args */
    c->args = a0;
    first.pk = NULL;
    first.root = NULL;
    mf_torchfile_close(&first);

    const mf_model *m = &c->model;
    for (size_t i = 0; i < n; i++) {
        mf_rankfile *rf = &c->files[i];
        if (mf_parse_rank_name(rf->name, m->pp, m->ep, &rf->tp, &rf->pp, &rf->ep) != 0 ||
            rf->tp >= m->tp || rf->pp >= m->pp || rf->ep >= m->ep) {
            rc = mf_fail(MF_ERR_INCONSISTENT, "%s/%s: rank folder name does not fit tp=%lld pp=%lld ep=%lld from the args",
                         c->iter_dir, rf->name, (long long)m->tp, (long long)m->pp, (long long)m->ep);
            goto out;
        }
        if ((rc = file_etp(m, rf->tp, rf->ep, rf->path, &rf->etp)) != 0)
            goto out;
    }
    if ((rc = check_coverage(c)) != 0)
        goto out;

    for (size_t i = 0; i < n; i++) {
        mf_rankfile *rf = &c->files[i];
        mf_torchfile tf;
        if ((rc = parse_rank_file(c, i, &tf)) != 0)
            goto out;
        const mf_pv *a = args_dict(tf.root);
        if (a == NULL)
            rc = mf_fail(MF_ERR_MISSING, "%s: no 'args'", rf->path);
        else
            rc = check_args_agree(c->args, c->files[0].path, a, rf->path);
        if (rc == 0)
            rc = mf_checkpoint_walk_file(c, (int)i, visit_add, NULL, &tf);
        if (rc == 0)   /* the index must describe the file reads will see */
            rc = mf_file_id_check(rf->fd, &rf->id, rf->path);
        mf_torchfile_close(&tf);
        if (rc)
            goto out;
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int mf_checkpoint_open(mf_checkpoint *c, const char *path, const mf_options *o)
{
    memset(c, 0, sizeof(*c));
    int rc = mf_find_iteration(path, o->iteration, &c->iter_dir, &c->iteration, &c->release);
    if (rc)
        return rc;
    rc = mf_dcp_detect(c->iter_dir) ? mf_checkpoint_open_dist(c, o) : open_legacy(c, o);
    if (rc == 0)   /* the one place options change the model, for both formats */
        rc = mf_model_apply_options(&c->model, o);
    if (rc)
        mf_checkpoint_close(c);
    return rc;
}

void mf_checkpoint_close(mf_checkpoint *c)
{
    for (size_t i = 0; i < c->n_files; i++) {
        if (c->files[i].fd >= 0)
            close(c->files[i].fd);
        free(c->files[i].path);
        free(c->files[i].name);
    }
    free(c->files);
    mf_source_index_free(c);
    mf_model_free(&c->model);
    mf_pickle_free(c->args_pk);
    if (c->format == MF_FORMAT_TORCH_DIST)
        mf_checkpoint_dist_free(c);
    free(c->iter_dir);
    memset(c, 0, sizeof(*c));
}
