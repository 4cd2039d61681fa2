/* Qwen3-Next (Qwen3NextForCausalLM): its rule tables and config writer, for the family row in
 * core/families.c. */
#ifndef MCOREFS_FAMILIES_QWEN3NEXT_H
#define MCOREFS_FAMILIES_QWEN3NEXT_H

#include "mcorefs/recipe.h"

extern const mf_rule mf_qwen3next_top[], mf_qwen3next_attn[], mf_qwen3next_linear_attn[];
extern const mf_rule mf_qwen3next_dense_mlp[], mf_qwen3next_moe[], mf_qwen3next_expert[];
void mf_qwen3next_config(const struct mf_model_s *m, struct cJSON *c);

#endif
