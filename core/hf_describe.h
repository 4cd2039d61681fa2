/* A save without Megatron's args (megatron.core's dist_checkpointing.save of a model's sharded
 * state dict): the model description from an HF config.json the user gives (-o hf_config). */
#ifndef MCOREFS_HF_DESCRIBE_H
#define MCOREFS_HF_DESCRIBE_H
#include <stdint.h>
#include "mcorefs/model.h"
#include "mcorefs/pickle.h"

/* Read the HF config at `path` (architectures / model_type and the sizes), turn it into the
 * Megatron args that describe the same model (a dict owned by *pk) and describe the model from
 * them as mf_model_from_args does; `arch` (may be NULL) overrides the config's architecture.
 * embed_rows: the stored embedding's rows (0: unknown) — Megatron pads the vocab, so a config
 * vocab_size at most that size is the true vocab and the rows the padded one. The tensor
 * shapes are checked against this description later, like against args. `src` names the
 * checkpoint in messages. */
int mf_model_from_hf_config(mf_model *m, mf_pickle **pk, const mf_pv **args, const char *path, const char *arch,
                            int64_t embed_rows, const char *src);
/* The model types an HF config can describe (", "-separated). */
const char *mf_hf_describe_families(void);
#endif
