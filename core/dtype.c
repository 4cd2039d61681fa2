/* The dtype table: one row per supported element type. */
#include "mcorefs/dtype.h"

#include <string.h>

typedef struct {
    size_t size;
    const char *st, *torch, *storage;
    const char *alias1, *alias2; /* extra torch spellings ("half", "float", ...) */
    int is_float;
} dt_row;

static const dt_row rows[MF_DT_COUNT] = {
    [MF_DT_BF16] = {2, "BF16", "bfloat16", "BFloat16Storage", NULL, NULL, 1},
    [MF_DT_F16] = {2, "F16", "float16", "HalfStorage", "half", NULL, 1},
    [MF_DT_F32] = {4, "F32", "float32", "FloatStorage", "float", NULL, 1},
    [MF_DT_F64] = {8, "F64", "float64", "DoubleStorage", "double", NULL, 1},
    [MF_DT_I64] = {8, "I64", "int64", "LongStorage", "long", NULL, 0},
    [MF_DT_I32] = {4, "I32", "int32", "IntStorage", "int", NULL, 0},
    [MF_DT_I16] = {2, "I16", "int16", "ShortStorage", "short", NULL, 0},
    [MF_DT_I8] = {1, "I8", "int8", "CharStorage", NULL, NULL, 0},
    [MF_DT_U8] = {1, "U8", "uint8", "ByteStorage", NULL, NULL, 0},
    [MF_DT_BOOL] = {1, "BOOL", "bool", "BoolStorage", NULL, NULL, 0},
    [MF_DT_F8_E4M3] = {1, "F8_E4M3", "float8_e4m3fn", NULL, NULL, NULL, 0},
};

static int valid(mf_dtype dt) { return dt > MF_DT_INVALID && dt < MF_DT_COUNT; }

size_t mf_dtype_size(mf_dtype dt) { return valid(dt) ? rows[dt].size : 0; }
const char *mf_dtype_st_name(mf_dtype dt) { return valid(dt) ? rows[dt].st : "INVALID"; }
const char *mf_dtype_torch_name(mf_dtype dt) { return valid(dt) ? rows[dt].torch : "invalid"; }
int mf_dtype_is_float(mf_dtype dt) { return valid(dt) && rows[dt].is_float; }

static int eq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

mf_dtype mf_dtype_from_storage(const char *name)
{
    for (int d = MF_DT_BF16; d < MF_DT_COUNT; d++)
        if (eq(name, rows[d].storage))
            return (mf_dtype)d;
    return MF_DT_INVALID;
}

mf_dtype mf_dtype_from_torch(const char *name)
{
    if (name && strncmp(name, "torch.", 6) == 0)
        name += 6;
    for (int d = MF_DT_BF16; d < MF_DT_F8_E4M3; d++)   /* F8 is the FP8 view's, not a source dtype */
        if (eq(name, rows[d].torch) || eq(name, rows[d].alias1) || eq(name, rows[d].alias2))
            return (mf_dtype)d;
    return MF_DT_INVALID;
}

mf_dtype mf_dtype_from_user(const char *name)
{
    if (eq(name, "bf16") || eq(name, "bfloat16")) return MF_DT_BF16;
    if (eq(name, "fp16") || eq(name, "float16")) return MF_DT_F16;
    if (eq(name, "fp32") || eq(name, "float32")) return MF_DT_F32;
    return MF_DT_INVALID;
}
