/* Helpers over a loaded pickle tree: dict lookup, object state, typed getters. */
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/pickle.h"
#include "mcorefs/error.h"

mf_pv *mf_pv_dict_get(const mf_pv *dict, const char *key)
{
    if (!dict || dict->kind != MF_PV_DICT || !key)
        return NULL;
    for (size_t i = dict->u.dict.n; i-- > 0;) { /* last wins, like a re-assigned Python key */
        const mf_pv *k = dict->u.dict.keys[i];
        if (k->kind == MF_PV_STR && strcmp(k->u.str.s, key) == 0)
            return dict->u.dict.vals[i];
    }
    return NULL;
}

mf_pv *mf_pv_obj_state(const mf_pv *obj)
{
    if (!obj || obj->kind != MF_PV_OBJECT || !obj->u.obj.state)
        return NULL;
    mf_pv *s = obj->u.obj.state;
    if (s->kind == MF_PV_TUPLE && s->u.seq.n == 2) /* (state, slotstate) */
        s = s->u.seq.items[0];
    return s->kind == MF_PV_DICT ? s : NULL;
}

int mf_pv_is_global(const mf_pv *v, const char *module, const char *name)
{
    return v && v->kind == MF_PV_GLOBAL && strcmp(v->u.global.module, module) == 0 && strcmp(v->u.global.name, name) == 0;
}

int mf_pv_is_call_of(const mf_pv *v, const char *module, const char *name)
{
    return v && v->kind == MF_PV_OBJECT && mf_pv_is_global(v->u.obj.callable, module, name);
}

int mf_pv_get_int(const mf_pv *v, int64_t *out)
{
    if (!v || (v->kind != MF_PV_INT && v->kind != MF_PV_BOOL))
        return MF_ERR_FORMAT;
    *out = v->u.i;
    return MF_OK;
}

int mf_pv_get_float(const mf_pv *v, double *out)
{
    if (v && v->kind == MF_PV_FLOAT)
        return *out = v->u.f, MF_OK;
    if (v && v->kind == MF_PV_INT)
        return *out = (double)v->u.i, MF_OK;
    return MF_ERR_FORMAT;
}

const char *mf_pv_get_str(const mf_pv *v)
{
    return v && v->kind == MF_PV_STR ? v->u.str.s : NULL;
}
