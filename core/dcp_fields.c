/* Fields of the inert dataclass objects the pickle VM makes of .metadata. */
#include <stdio.h>
#include <string.h>
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"
#include "dcp_parse.h"

/* "(0, 64, 0)", "(5,)" or "()" like Python prints a tuple. */
const char *dcp_fmt_dims(char *buf, size_t n, const int64_t *v, int nd)
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

/* Class name of an inert object made by NEWOBJ/REDUCE (module is not checked: the dataclasses
 * moved between torch.distributed modules across releases). */
const char *dcp_class_name(const mf_pv *v)
{
    if (!v || v->kind != MF_PV_OBJECT || !v->u.obj.callable || v->u.obj.callable->kind != MF_PV_GLOBAL)
        return NULL;
    return v->u.obj.callable->u.global.name;
}

int dcp_is_class(const mf_pv *v, const char *name)
{
    const char *c = dcp_class_name(v);
    return c && strcmp(c, name) == 0;
}

/* A field of a dataclass instance: BUILD state dict, or (dict, slots dict). */
const mf_pv *dcp_field(const mf_pv *obj, const char *key)
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
int dcp_get_dims(const mf_pv *t, int64_t *out, int *nd)
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

const char *dcp_dims_problem(int rc)
{
    return rc == -1 ? "is not a tuple" : rc == -2 ? "has more than 8 dimensions" : "holds a negative or non-int value";
}
