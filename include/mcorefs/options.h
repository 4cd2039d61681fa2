/* Mount/inspect options shared by the daemon and the tools ("-o key=value,..."). */
#ifndef MCOREFS_OPTIONS_H
#define MCOREFS_OPTIONS_H

#include <stdint.h>
#include "mcorefs/dtype.h"

typedef struct {
    int64_t iteration;        /* -1: from latest_checkpointed_iteration.txt */
    int64_t true_vocab_size;  /* 0: not given */
    int skip_mtp;
    int mtp_head_copies;      /* DeepSeek release layout: embed_tokens + shared_head.head per MTP layer */
    char *arch;               /* NULL: auto-detect from args */
    uint64_t shard_size;      /* bytes; default 5 GB (5e9) like huggingface_hub */
    mf_dtype dtype;           /* MF_DT_INVALID: keep each tensor's stored dtype */
    char *hf_config;          /* JSON object merged over config.json */
    char *tokenizer;          /* folder whose tokenizer files appear in the view */
    int64_t read_ahead_kb;    /* daemon: the mount's readahead (bigger FUSE requests); -1 = kernel default */
    int quant;                /* mf_quant (include/mcorefs/fp8.h): -o quant=fp8|fp8_ue8m0 */
} mf_options;

void mf_options_init(mf_options *o);
void mf_options_free(mf_options *o);
/* Apply one "key" or "key=value" option. Returns 1 if it was an mcorefs option, 0 if the key is
 * not ours (e.g. a FUSE option), or a negative mf_status for a bad value. */
int mf_options_apply(mf_options *o, const char *kv);
/* "5GB", "500MB", "1GiB", "123" -> bytes. */
int mf_parse_size(const char *s, uint64_t *out);
/* The names of the options mf_options_apply knows (NULL-terminated), for typo suggestions. */
const char *const *mf_option_names(void);
/* The option list with one-line descriptions, for --help. */
const char *mf_options_help(void);

#endif
