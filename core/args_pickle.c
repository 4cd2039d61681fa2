/* Writing a small pickle of plain values (see args_pickle.h). */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "args_pickle.h"
#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/pickle.h"

void mf_pk_put(pk_out *o, const void *p, size_t n)
{
    if (o->oom)
        return;
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        while (cap < o->n + n)
            cap *= 2;
        uint8_t *b = realloc(o->b, cap);
        if (!b) {
            o->oom = 1;
            return;
        }
        o->b = b;
        o->cap = cap;
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

void mf_pk_byte(pk_out *o, uint8_t c) { mf_pk_put(o, &c, 1); }

void mf_pk_str(pk_out *o, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    uint8_t len[4] = { (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24) };
    mf_pk_byte(o, 'X'); /* BINUNICODE */
    mf_pk_put(o, len, 4);
    mf_pk_put(o, s, n);
}

void mf_pk_int(pk_out *o, int64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)v >> (8 * i));
    mf_pk_byte(o, 0x8a); /* LONG1: 8 bytes, little-endian two's complement */
    mf_pk_byte(o, 8);
    mf_pk_put(o, b, 8);
}

void mf_pk_float(pk_out *o, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(u >> (56 - 8 * i));
    mf_pk_byte(o, 'G'); /* BINFLOAT: big-endian */
    mf_pk_put(o, b, 8);
}

void mf_pk_bool(pk_out *o, int v) { mf_pk_byte(o, v ? 0x88 : 0x89); }


int mf_model_from_args_pickle(mf_model *m, mf_pickle **pk, const mf_pv **args, pk_out *o, const char *file,
                              const char *label, const char *arch, const char *src)
{
    mf_pv *a = NULL;
    int rc = mf_pickle_load(o->b, o->n, file, NULL, pk, &a);
    if (rc == MF_OK) {
        char where[4400];
        snprintf(where, sizeof where, "%s (described by %s%s)", src, label, file);
        *args = a;
        rc = mf_model_from_args(m, a, arch, where);
        if (rc == MF_OK)
            snprintf(m->args_from, sizeof m->args_from, "%s%s", label, file);
    }
    free(o->b);
    o->b = NULL;
    return rc;
}
