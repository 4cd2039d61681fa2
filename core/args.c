/* Typed access to the checkpoint's argparse Namespace, with Megatron's defaults. */
#include <string.h>
#include "mcorefs/model.h"

static const mf_pv *args_get(const mf_pv *args, const char *name)
{
    const mf_pv *v = mf_pv_dict_get(args, name);
    if (v == NULL || v->kind == MF_PV_NONE)
        return NULL;
    return v;
}

int mf_args_is_set(const mf_pv *args, const char *name)
{
    return args_get(args, name) != NULL;
}

int mf_args_int(const mf_pv *args, const char *name, int64_t def, int64_t *out)
{
    const mf_pv *v = args_get(args, name);
    *out = def;
    if (v == NULL)
        return 0;
    return mf_pv_get_int(v, out) == 0 ? 1 : -1;
}

int mf_args_bool(const mf_pv *args, const char *name, int def)
{
    const mf_pv *v = args_get(args, name);
    int64_t i;
    if (v == NULL || mf_pv_get_int(v, &i) != 0)
        return def;
    return i != 0;
}

double mf_args_float(const mf_pv *args, const char *name, double def)
{
    const mf_pv *v = args_get(args, name);
    double f;
    if (v == NULL || mf_pv_get_float(v, &f) != 0)
        return def;
    return f;
}

const char *mf_args_str(const mf_pv *args, const char *name)
{
    return mf_pv_get_str(args_get(args, name));
}
