/* NeMo 2.0 context/model.yaml -> Megatron args (see nemo_context.h). model.yaml is PyYAML's
 * block style (yaml.safe_dump of nested mappings of plain values, fiddle targets as
 * {_target_, _call_} mappings), so a small line reader covers it: "key: value", "key:" opening a
 * mapping or a block list, "- item", flow lists "[a, b]", quoted strings. Anything else in the
 * file is ignored; the values read are checked like args (model.c) and against the tensors. */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "args_pickle.h"
#include "mcorefs/error.h"
#include "nemo_context.h"
#include "small_file.h"

int mf_nemo_model_yaml(const char *iter_dir, char *out, size_t n)
{
    const char *base = strrchr(iter_dir, '/');
    base = base ? base + 1 : iter_dir;
    if (strcmp(base, "weights") != 0)
        return 0;
    int len = (int)(base - iter_dir);
    struct stat st;
    if (snprintf(out, n, "%.*scontext/model.yaml", len, iter_dir) >= (int)n || stat(out, &st) != 0)
        return 0;
    return 1;
}

/* ---- the YAML subset ---- */

typedef struct {
    char *path;    /* "config.num_layers", "config.activation_func._target_" */
    char *val;
    int quoted, item;   /* item: one element of the list at path */
} yent;

typedef struct {
    yent *e;
    size_t n, cap;
    int oom;
} ydoc;

static void add(ydoc *d, const char *path, const char *val, int quoted, int item)
{
    if (d->oom)
        return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        yent *e = realloc(d->e, cap * sizeof *e);
        if (!e) {
            d->oom = 1;
            return;
        }
        d->e = e;
        d->cap = cap;
    }
    yent *x = &d->e[d->n];
    x->path = strdup(path);
    x->val = strdup(val);
    x->quoted = quoted;
    x->item = item;
    if (!x->path || !x->val) {
        free(x->path);
        free(x->val);
        d->oom = 1;
        return;
    }
    d->n++;
}

static void ydoc_free(ydoc *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->e[i].path);
        free(d->e[i].val);
    }
    free(d->e);
}

/* Strip quotes (in place); 1 if the scalar was quoted. */
static int unquote(char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && (s[0] == '\'' || s[0] == '"') && s[n - 1] == s[0]) {
        memmove(s, s + 1, n - 2);
        s[n - 2] = '\0';
        return 1;
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static void add_value(ydoc *d, const char *path, char *v, int item)
{
    size_t n = strlen(v);
    if (!item && n >= 2 && v[0] == '[' && v[n - 1] == ']') {   /* flow list */
        v[n - 1] = '\0';
        char *save = NULL;
        for (char *tok = strtok_r(v + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *t = trim(tok);
            int q = unquote(t);
            add(d, path, t, q, 1);
        }
        return;
    }
    int q = unquote(v);
    add(d, path, v, q, item);
}

#define MAX_DEPTH 16

static void parse_yaml(char *text, ydoc *d)
{
    struct { int indent; char key[128]; } stack[MAX_DEPTH];
    int depth = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int indent = 0;
        while (line[indent] == ' ')
            indent++;
        char *s = trim(line + indent);
        if (!*s || *s == '#' || strcmp(s, "---") == 0)
            continue;
        char path[1024] = "";
        int item = s[0] == '-' && (s[1] == ' ' || s[1] == '\0');
        if (item)
            while (depth && stack[depth - 1].indent > indent)
                depth--;
        else
            while (depth && stack[depth - 1].indent >= indent)
                depth--;
        for (int i = 0; i < depth; i++)
            snprintf(path + strlen(path), sizeof path - strlen(path), "%s%s", i ? "." : "", stack[i].key);
        if (item) {
            add_value(d, path, trim(s + 1), 1);
            continue;
        }
        char *colon = strstr(s, ": ");
        if (!colon && s[strlen(s) - 1] == ':')
            colon = s + strlen(s) - 1;
        if (!colon)
            continue;
        *colon = '\0';
        char *key = trim(s), *val = trim(colon + 1);
        unquote(key);
        if (!*val) {   /* a mapping or a block list follows */
            if (depth < MAX_DEPTH) {
                stack[depth].indent = indent;
                snprintf(stack[depth].key, sizeof stack[depth].key, "%s", key);
                depth++;
            }
            continue;
        }
        char full[1200];
        snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", key);
        add_value(d, full, val, 0);
    }
}

/* ---- config -> args ---- */

static const yent *find(const ydoc *d, const char *path)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->e[i].path, path) == 0)
            return &d->e[i];
    return NULL;
}

static int is_true(const yent *e)
{
    return e && !e->quoted && (strcmp(e->val, "true") == 0 || strcmp(e->val, "True") == 0);
}

/* One scalar, typed as YAML reads it. */
static void put_scalar(pk_out *o, const yent *e)
{
    const char *v = e->val;
    char *end;
    if (!e->quoted && (!strcmp(v, "null") || !strcmp(v, "~") || !*v)) {
        MF_PK_NONE(o);
    } else if (!e->quoted && (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "false") || !strcmp(v, "False"))) {
        mf_pk_bool(o, v[0] == 't' || v[0] == 'T');
    } else if (!e->quoted && (strtoll(v, &end, 10), *end == '\0') && (isdigit((unsigned char)v[0]) || v[0] == '-')) {
        mf_pk_int(o, strtoll(v, NULL, 10));
    } else if (!e->quoted && (strtod(v, &end), *end == '\0')) {
        mf_pk_float(o, strtod(v, NULL));
    } else {
        mf_pk_str(o, v);
    }
}

/* A config field under the Megatron argument name it becomes (NULL: not passed through). */
static const char *arg_name(const char *field)
{
    static const char *const renamed[][2] = {
        { "num_moe_experts", "num_experts" }, { "seq_length", "max_position_embeddings" },
        { "rope_scaling", "use_rope_scaling" },
    };
    static const char *const handled[] = { "vocab_size", "gated_linear_unit", "share_embeddings_and_output_weights",
                                           "num_query_groups", "padded_vocab_size", NULL };
    if (field[0] == '_' || strchr(field, '.'))
        return NULL;
    for (size_t i = 0; i < sizeof renamed / sizeof renamed[0]; i++)
        if (strcmp(field, renamed[i][0]) == 0)
            return renamed[i][1];
    for (int i = 0; handled[i]; i++)
        if (strcmp(field, handled[i]) == 0)
            return NULL;
    return field;
}

static int write_args(const ydoc *d, int64_t embed_rows, pk_out *o, const char *path)
{
    const yent *layers = find(d, "config.num_layers");
    if (!layers)
        return mf_fail(MF_ERR_MISSING, "%s: no config.num_layers (not a NeMo 2.0 GPT model.yaml?)", path);
    MF_PK_DICT_BEGIN(o);
    int has_max_pos = find(d, "config.max_position_embeddings") != NULL, has_tp = 0;
    for (size_t i = 0; i < d->n; i++) {
        const yent *e = &d->e[i];
        if (strncmp(e->path, "config.", 7) != 0 || e->item)
            continue;
        const char *name = arg_name(e->path + 7);
        if (!name || (strcmp(name, "max_position_embeddings") == 0 && has_max_pos && strcmp(e->path + 7, "seq_length") == 0))
            continue;
        has_tp |= strcmp(name, "tensor_model_parallel_size") == 0;
        mf_pk_str(o, name);
        put_scalar(o, e);
    }
    for (size_t i = 0; i < d->n; i++) {   /* block and flow lists: one key, all its items */
        const yent *e = &d->e[i];
        const char *name;
        if (!e->item || strncmp(e->path, "config.", 7) != 0 || !(name = arg_name(e->path + 7)))
            continue;
        if (i > 0 && d->e[i - 1].item && strcmp(d->e[i - 1].path, e->path) == 0)
            continue;   /* not the list's first item */
        mf_pk_str(o, name);
        MF_PK_LIST_BEGIN(o);
        for (size_t j = i; j < d->n && d->e[j].item && strcmp(d->e[j].path, e->path) == 0; j++)
            put_scalar(o, &d->e[j]);
        MF_PK_LIST_END(o);
    }
    if (!has_tp)
        mf_pk_str(o, "tensor_model_parallel_size"), mf_pk_int(o, 1);
    const yent *groups = find(d, "config.num_query_groups");
    if (groups && strcmp(groups->val, "null") != 0) {
        mf_pk_str(o, "group_query_attention"), mf_pk_bool(o, 1);
        mf_pk_str(o, "num_query_groups"), put_scalar(o, groups);
    }
    const yent *act = find(d, "config.activation_func._target_");
    size_t al = act ? strlen(act->val) : 0;
    int silu = act && al >= 5 && strcmp(act->val + al - 5, ".silu") == 0;
    mf_pk_str(o, "swiglu"), mf_pk_bool(o, is_true(find(d, "config.gated_linear_unit")) && silu);
    const yent *share = find(d, "config.share_embeddings_and_output_weights");
    mf_pk_str(o, "untie_embeddings_and_output_weights"), mf_pk_bool(o, share ? !is_true(share) : 0);
    const yent *pd = find(d, "config.params_dtype._target_");
    if (pd && !find(d, "config.bf16"))
        mf_pk_str(o, "bf16"), mf_pk_bool(o, strcmp(pd->val, "torch.bfloat16") == 0);
    if (pd && !find(d, "config.fp16"))
        mf_pk_str(o, "fp16"), mf_pk_bool(o, strcmp(pd->val, "torch.float16") == 0);
    const yent *vocab = find(d, "config.vocab_size");
    int64_t v = vocab && !vocab->quoted ? strtoll(vocab->val, NULL, 10) : 0;
    if (embed_rows > 0 || v > 0)
        mf_pk_str(o, "padded_vocab_size"), mf_pk_int(o, embed_rows > 0 ? embed_rows : v);
    if (v > 0)
        mf_pk_str(o, "vocab_size"), mf_pk_int(o, v);
    MF_PK_DICT_END(o);
    return o->oom ? mf_fail(MF_ERR_NOMEM, "out of memory (%s)", path) : MF_OK;
}

int mf_model_from_nemo_yaml(mf_model *m, mf_pickle **pk, const mf_pv **args, const char *yaml_path, const char *arch,
                            int64_t embed_rows, const char *src)
{
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    memset(m, 0, sizeof *m);
    *args = NULL;
    int rc = mf_small_file_load(AT_FDCWD, yaml_path, yaml_path, &text, &len, &st);
    if (rc)
        return rc;
    ydoc d = { 0 };
    parse_yaml(text, &d);
    free(text);
    pk_out o = { 0 };
    rc = d.oom ? mf_fail(MF_ERR_NOMEM, "out of memory (%s)", yaml_path) : write_args(&d, embed_rows, &o, yaml_path);
    ydoc_free(&d);
    if (rc != MF_OK) {
        free(o.b);
        return rc;
    }
    return mf_model_from_args_pickle(m, pk, args, &o, yaml_path, "", arch, src);
}
