/* NeMo 2.0 checkpoints: <ckpt>/weights (a torch_dist save of the "module."-prefixed sharded state
 * dict, no Megatron args) beside <ckpt>/context (io.json and model.yaml: the model's
 * GPTConfig / TransformerConfig as nemo.lightning.io dumps it, nemo/lightning/ckpt_utils.py). */
#ifndef MCOREFS_NEMO_CONTEXT_H
#define MCOREFS_NEMO_CONTEXT_H
#include <stddef.h>
#include <stdint.h>
#include "mcorefs/model.h"
#include "mcorefs/pickle.h"

/* 1 and the path of model.yaml in out when iter_dir is a NeMo 2.0 "weights" folder whose sibling
 * "context" holds model.yaml; 0 otherwise. */
int mf_nemo_model_yaml(const char *iter_dir, char *out, size_t n);
/* The model description from model.yaml's `config:` (TransformerConfig field names, which are
 * Megatron's argument names but for a few: num_moe_experts, seq_length, gated_linear_unit with
 * activation_func, share_embeddings_and_output_weights, params_dtype). embed_rows: the stored
 * embedding's rows (the padded vocab). *pk owns the args. */
int mf_model_from_nemo_yaml(mf_model *m, mf_pickle **pk, const mf_pv **args, const char *yaml_path, const char *arch,
                            int64_t embed_rows, const char *src);
#endif
