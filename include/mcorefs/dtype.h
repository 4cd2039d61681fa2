/* The one dtype table: torch storage names, safetensors names, element sizes. */
#ifndef MCOREFS_DTYPE_H
#define MCOREFS_DTYPE_H

#include <stddef.h>

typedef enum {
    MF_DT_INVALID = 0,
    MF_DT_BF16, MF_DT_F16, MF_DT_F32, MF_DT_F64,
    MF_DT_I64, MF_DT_I32, MF_DT_I16, MF_DT_I8, MF_DT_U8, MF_DT_BOOL,
    MF_DT_F8_E4M3,   /* shown only (-o quant=fp8), never read from a checkpoint */
    MF_DT_COUNT
} mf_dtype;

size_t mf_dtype_size(mf_dtype dt);                 /* bytes per element, 0 for invalid */
const char *mf_dtype_st_name(mf_dtype dt);         /* safetensors name: "BF16", "F32", ... */
const char *mf_dtype_torch_name(mf_dtype dt);      /* "bfloat16", "float32", ... */
mf_dtype mf_dtype_from_storage(const char *name);  /* "BFloat16Storage" -> MF_DT_BF16 */
mf_dtype mf_dtype_from_torch(const char *name);    /* "bfloat16"/"float32"/... -> dtype */
mf_dtype mf_dtype_from_user(const char *name);     /* "bf16", "fp16", "fp32" (option values) */
int mf_dtype_is_float(mf_dtype dt);

#endif
