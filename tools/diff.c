/* mcorefs-inspect diff A B [--json] [-o opts]  (or: diff RUN ITER_A ITER_B): per HF tensor of the
 * two views, identical or changed (XXH64 of the bytes each view shows) and, for changed float
 * tensors, the largest absolute difference of an element: which layers moved between two saves,
 * or that a frozen part stayed frozen. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <xxhash.h>
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"
#include "mcorefs/gather.h"
#include "mcorefs/view.h"
#include "diff.h"

#define CHUNK (4u << 20)

typedef enum { SAME, CHANGED, ONLY_A, ONLY_B } verdict;
static const char *const verdict_name[] = { "identical", "changed", "only_in_a", "only_in_b" };

typedef struct {
    uint64_t ha, hb;
    double max_abs;      /* NAN: not a float tensor, or shapes differ */
    const char *why;     /* for a change that is not about values: "dtype", "shape" */
} compared;

static int read_chunk(const mf_session *s, const mf_hf_tensor *t, uint64_t off, size_t n, uint8_t *buf)
{
    mf_io io = { s->fds, NULL, s->ckpt.files };
    mf_error_clear();
    int rc = mf_tensor_read(s, t, &io, off, n, buf);   /* FP8 views quantize on read */
    if (rc < 0 && !mf_error()[0])
        mf_fail(rc, "%s: read failed: %s", t->name, mf_status_name(rc));
    return rc;
}

/* Elementwise max |a - b| of n elements of a float dtype. */
static double max_abs_diff(mf_dtype dt, const uint8_t *a, const uint8_t *b, size_t n, double *fa, double *fb)
{
    double m = 0;
    mf_convert(dt, a, MF_DT_F64, fa, n);
    mf_convert(dt, b, MF_DT_F64, fb, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs(fa[i] - fb[i]);
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static int same_shape(const mf_hf_tensor *a, const mf_hf_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

static int hash_all(const mf_session *s, const mf_hf_tensor *t, uint8_t *buf, uint64_t *h)
{
    XXH64_state_t *st = XXH64_createState();
    if (!st)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    XXH64_reset(st, 0);
    for (uint64_t off = 0; off < t->nbytes; off += CHUNK) {
        size_t n = t->nbytes - off < CHUNK ? (size_t)(t->nbytes - off) : CHUNK;
        int rc = read_chunk(s, t, off, n, buf);
        if (rc < 0) {
            XXH64_freeState(st);
            return rc;
        }
        XXH64_update(st, buf, n);
    }
    *h = XXH64_digest(st);
    XXH64_freeState(st);
    return MF_OK;
}

/* Both tensors read once, chunk by chunk: hashes and the max difference together. */
static int compare(const mf_session *sa, const mf_hf_tensor *a, const mf_session *sb, const mf_hf_tensor *b,
                   uint8_t *ba, uint8_t *bb, double *fa, double *fb, compared *c)
{
    int rc;
    c->max_abs = NAN;
    c->why = NULL;
    if (a->dtype != b->dtype || !same_shape(a, b)) {
        c->why = a->dtype != b->dtype ? "dtype" : "shape";
        if ((rc = hash_all(sa, a, ba, &c->ha)) != 0 || (rc = hash_all(sb, b, ba, &c->hb)) != 0)
            return rc;
        return CHANGED;
    }
    XXH64_state_t *xa = XXH64_createState(), *xb = XXH64_createState();
    if (!xa || !xb) {
        XXH64_freeState(xa);
        XXH64_freeState(xb);
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    }
    XXH64_reset(xa, 0);
    XXH64_reset(xb, 0);
    int is_float = mf_dtype_is_float(a->dtype), differ = 0;
    size_t esize = mf_dtype_size(a->dtype);
    double m = 0;
    rc = MF_OK;
    for (uint64_t off = 0; off < a->nbytes && rc == MF_OK; off += CHUNK) {
        size_t n = a->nbytes - off < CHUNK ? (size_t)(a->nbytes - off) : CHUNK;
        if ((rc = read_chunk(sa, a, off, n, ba)) < 0 || (rc = read_chunk(sb, b, off, n, bb)) < 0)
            break;
        XXH64_update(xa, ba, n);
        XXH64_update(xb, bb, n);
        if (memcmp(ba, bb, n) != 0) {
            differ = 1;
            if (is_float) {
                double d = max_abs_diff(a->dtype, ba, bb, n / esize, fa, fb);
                m = d > m ? d : m;
            }
        }
    }
    c->ha = XXH64_digest(xa);
    c->hb = XXH64_digest(xb);
    XXH64_freeState(xa);
    XXH64_freeState(xb);
    if (rc < 0)
        return rc;
    if (differ && is_float)
        c->max_abs = m;
    return differ ? CHANGED : SAME;
}

static int cmp_name(const void *x, const void *y)
{
    return strcmp((*(const mf_hf_tensor *const *)x)->name, (*(const mf_hf_tensor *const *)y)->name);
}

static const mf_hf_tensor *find(const mf_hf_tensor **sorted, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid]->name, name);
        if (c == 0)
            return sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void report_one(cJSON *arr, const char *name, verdict v, const compared *c)
{
    char ha[17], hb[17];
    snprintf(ha, sizeof ha, "%016llx", (unsigned long long)c->ha);
    snprintf(hb, sizeof hb, "%016llx", (unsigned long long)c->hb);
    if (arr) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "status", verdict_name[v]);
        if (v != ONLY_B)
            cJSON_AddStringToObject(o, "xxh64_a", ha);
        if (v != ONLY_A)
            cJSON_AddStringToObject(o, "xxh64_b", hb);
        if (v == CHANGED && !isnan(c->max_abs))
            cJSON_AddNumberToObject(o, "max_abs_diff", c->max_abs);
        if (c->why)
            cJSON_AddStringToObject(o, "differs_in", c->why);
        cJSON_AddItemToArray(arr, o);
        return;
    }
    if (v == SAME)
        printf("identical  %s  %s\n", ha, name);
    else if (v == ONLY_A)
        printf("only in A  %s  %s\n", ha, name);
    else if (v == ONLY_B)
        printf("only in B  %s  %s\n", hb, name);
    else if (c->why)
        printf("changed    %s  %s  (%s differs)\n", hb, name, c->why);
    else if (!isnan(c->max_abs))
        printf("changed    %s  %s  max_abs_diff %.6g\n", hb, name, c->max_abs);
    else
        printf("changed    %s  %s\n", hb, name);
}

int mf_diff_sessions(const mf_session *a, const mf_session *b, const char *label_a, const char *label_b, int json)
{
    const mf_hf_tensor **sb = malloc((b->map.n ? b->map.n : 1) * sizeof(*sb));
    const mf_hf_tensor **sa = malloc((a->map.n ? a->map.n : 1) * sizeof(*sa));
    uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
    double *fa = malloc(CHUNK / 2 * sizeof(double)), *fb = malloc(CHUNK / 2 * sizeof(double));
    size_t count[4] = { 0, 0, 0, 0 };
    int rc = MF_OK;
    cJSON *root = json ? cJSON_CreateObject() : NULL, *arr = json ? cJSON_CreateArray() : NULL;
    if (!sa || !sb || !ba || !bb || !fa || !fb) {
        rc = mf_fail(MF_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->map.n; i++)
        sb[i] = &b->map.tensors[i];
    for (size_t i = 0; i < a->map.n; i++)
        sa[i] = &a->map.tensors[i];
    qsort(sb, b->map.n, sizeof(*sb), cmp_name);
    qsort(sa, a->map.n, sizeof(*sa), cmp_name);
    for (size_t i = 0; i < a->map.n; i++) {   /* in A's file order */
        const mf_hf_tensor *ta = &a->map.tensors[i], *tb = find(sb, b->map.n, ta->name);
        compared c = { 0, 0, NAN, NULL };
        int v;
        if (!tb) {
            if ((v = hash_all(a, ta, ba, &c.ha)) >= 0)
                v = ONLY_A;
        } else {
            v = compare(a, ta, b, tb, ba, bb, fa, fb, &c);
        }
        if (v < 0) {
            rc = v;
            goto out;
        }
        count[v]++;
        report_one(arr, ta->name, (verdict)v, &c);
    }
    for (size_t i = 0; i < b->map.n; i++) {
        const mf_hf_tensor *tb = &b->map.tensors[i];
        if (find(sa, a->map.n, tb->name))
            continue;
        compared c = { 0, 0, NAN, NULL };
        if ((rc = hash_all(b, tb, ba, &c.hb)) < 0)
            goto out;
        count[ONLY_B]++;
        report_one(arr, tb->name, ONLY_B, &c);
    }
    if (json) {
        cJSON_AddStringToObject(root, "a", label_a);
        cJSON_AddStringToObject(root, "b", label_b);
        for (int k = 0; k < 4; k++)
            cJSON_AddNumberToObject(root, verdict_name[k], (double)count[k]);
        cJSON_AddItemToObject(root, "tensors", arr);
        arr = NULL;
        char *text = cJSON_Print(root);
        printf("%s\n", text);
        free(text);
    } else {
        printf("A: %s\nB: %s\n%zu identical, %zu changed, %zu only in A, %zu only in B\n", label_a, label_b,
               count[SAME], count[CHANGED], count[ONLY_A], count[ONLY_B]);
    }
    rc = count[CHANGED] + count[ONLY_A] + count[ONLY_B] ? 1 : 0;
out:
    cJSON_Delete(arr);
    cJSON_Delete(root);
    free(sa);
    free(sb);
    free(ba);
    free(bb);
    free(fa);
    free(fb);
    return rc;
}

/* "20", "iter_0000020", "release" -> the folder name in a run. */
static int iteration_dir(const char *run, const char *it, char *out, size_t cap)
{
    if (strcmp(it, "release") == 0 || strncmp(it, "iter_", 5) == 0) {
        snprintf(out, cap, "%s/%s", run, it);
        return 0;
    }
    char *end;
    long long v = strtoll(it, &end, 10);
    if (!isdigit((unsigned char)*it) || *end)
        return -1;
    snprintf(out, cap, "%s/iter_%07lld", run, v);
    return 0;
}

static int diff_paths(int argc, char **argv, const mf_options *o, int json)
{
    char pa[8192], pb[8192];
    if (argc == 3) {
        if (iteration_dir(argv[0], argv[1], pa, sizeof pa) != 0 || iteration_dir(argv[0], argv[2], pb, sizeof pb) != 0) {
            fprintf(stderr, "mcorefs-inspect: diff RUN ITER_A ITER_B: iterations are numbers, iter_* names or "
                            "'release' (got '%s', '%s')\n", argv[1], argv[2]);
            return 1;
        }
    } else if (argc == 2) {
        snprintf(pa, sizeof pa, "%s", argv[0]);
        snprintf(pb, sizeof pb, "%s", argv[1]);
    } else {
        fprintf(stderr, "mcorefs-inspect: diff needs two checkpoints (diff A B) or a run and two iterations "
                        "(diff RUN 100 200)\n");
        return 1;
    }
    mf_session *a = NULL, *b = NULL;
    if (mf_session_open(&a, pa, o) != 0 || mf_session_open(&b, pb, o) != 0) {
        fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
        mf_session_close(a);
        return 1;
    }
    int rc = mf_diff_sessions(a, b, pa, pb, json);
    if (rc < 0) {
        fprintf(stderr, "mcorefs-inspect: diff: %s\n", mf_error());
        rc = 1;
    } else {
        rc = rc ? 2 : 0;
    }
    mf_session_close(a);
    mf_session_close(b);
    return rc;
}

int mf_inspect_diff_main(int argc, char **argv)
{
    mf_options o;
    char *pos[4];
    int n = 0, json = 0, rc = 1;
    mf_options_init(&o);
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            char *list = strdup(argv[++i]), *save = NULL;
            for (char *kv = list ? strtok_r(list, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
                int r = mf_options_apply(&o, kv);
                if (r <= 0) {
                    if (r == 0)
                        mf_fail(MF_ERR_INVALID, "unknown option '%s'", kv);
                    fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
                    free(list);
                    goto out;
                }
            }
            free(list);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "mcorefs-inspect: diff: unknown flag '%s' (diff A B [--json] [-o opt,...])\n", argv[i]);
            goto out;
        } else if (n < 4) {
            pos[n++] = argv[i];
        } else {
            n++;
        }
    }
    rc = diff_paths(n, pos, &o, json);
out:
    mf_options_free(&o);
    return rc;
}
