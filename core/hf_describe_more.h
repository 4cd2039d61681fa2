/* The Megatron args of the families whose HF config needs more than the GQA families'
 * (hf_describe.c): DeepSeek-V2/V3 (MLA), GLM-4.5 (glm4_moe) and gpt-oss. Each writes its keys
 * into the open args dict; MF_OK or an error naming the hf_config key. */
#ifndef MCOREFS_HF_DESCRIBE_MORE_H
#define MCOREFS_HF_DESCRIBE_MORE_H
#include <stdint.h>
#include "args_pickle.h"
#include "hf_config_read.h"

int mf_hf_deepseek_args(const mf_hf *h, const char *family, int64_t layers, pk_out *o);
int mf_hf_glm4_moe_args(const mf_hf *h, int64_t layers, pk_out *o);
int mf_hf_gptoss_args(const mf_hf *h, int64_t layers, pk_out *o);
/* rope_scaling of type llama3 / linear (or none) as Megatron's rope args (hf_describe.c) */
int mf_hf_rope_args(const mf_hf *h, pk_out *o);
#endif
