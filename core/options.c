/* -o option parsing shared by the daemon and the tools. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/fp8.h"
#include "mcorefs/options.h"
#include "mcorefs/recipe.h"
#include "mcorefs/suggest.h"

void mf_options_init(mf_options *o)
{
    memset(o, 0, sizeof(*o));
    o->iteration = -1;
    o->shard_size = 5000000000ull;   /* huggingface_hub's default "5GB" */
    o->dtype = MF_DT_INVALID;
    o->read_ahead_kb = 1024;
}

void mf_options_free(mf_options *o)
{
    free(o->arch);
    free(o->hf_config);
    free(o->tokenizer);
    mf_options_init(o);
}

int mf_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *suffix; uint64_t mult; } units[] = {
        { "", 1 }, { "B", 1 }, { "K", 1000 }, { "KB", 1000 }, { "M", 1000000 }, { "MB", 1000000 },
        { "G", 1000000000ull }, { "GB", 1000000000ull }, { "T", 1000000000000ull }, { "TB", 1000000000000ull },
        { "KiB", 1ull << 10 }, { "MiB", 1ull << 20 }, { "GiB", 1ull << 30 }, { "TiB", 1ull << 40 } };
    char *end;
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mult)
                return -1;
            *out = v * units[i].mult;
            return 0;
        }
    return -1;
}

static int parse_int(const char *key, const char *v, int64_t min, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (v == NULL || *v == 0 || *end != 0 || errno || x < min)
        return mf_fail(MF_ERR_INVALID, "bad value for %s: '%s' (expected an integer >= %lld)", key, v ? v : "", (long long)min);
    *out = x;
    return 1;
}

static int set_str(char **dst, const char *key, const char *v)
{
    if (v == NULL || *v == 0)
        return mf_fail(MF_ERR_INVALID, "option %s needs a value", key);
    free(*dst);
    *dst = strdup(v);
    return *dst ? 1 : mf_fail(MF_ERR_NOMEM, "out of memory");
}

/* arch= must name a family row (by name or HF architecture): refused here, at parse time. */
static int check_arch(const char *v)
{
    if (v == NULL || *v == 0 || mf_family_find(v))
        return MF_OK;   /* an empty value is set_str's to refuse */
    const char *names[64];
    size_t n = 0;
    for (const mf_family *const *f = mf_family_all(); *f && n + 1 < sizeof(names) / sizeof(names[0]); f++)
        names[n++] = (*f)->name;
    names[n] = NULL;
    const char *near = mf_suggest(v, names);
    if (near)
        return mf_fail(MF_ERR_INVALID, "unknown arch '%s' (did you mean %s? known: %s)", v, near, mf_family_names(", "));
    return mf_fail(MF_ERR_INVALID, "unknown arch '%s' (known: %s)", v, mf_family_names(", "));
}

int mf_options_apply(mf_options *o, const char *kv)
{
    char key[64];
    const char *eq = strchr(kv, '=');
    size_t kl = eq ? (size_t)(eq - kv) : strlen(kv);
    const char *v = eq ? eq + 1 : NULL;
    if (kl >= sizeof(key))
        return 0;
    memcpy(key, kv, kl);
    key[kl] = 0;
    if (strcmp(key, "iteration") == 0)
        return parse_int(key, v, 0, &o->iteration);
    if (strcmp(key, "true_vocab_size") == 0)
        return parse_int(key, v, 1, &o->true_vocab_size);
    if (strcmp(key, "read_ahead_kb") == 0)
        return parse_int(key, v, -1, &o->read_ahead_kb);
    if (strcmp(key, "skip_mtp") == 0 || strcmp(key, "mtp_head_copies") == 0) {
        if (strcmp(key, "skip_mtp") == 0)
            o->skip_mtp = 1;
        else
            o->mtp_head_copies = 1;
        if (o->skip_mtp && o->mtp_head_copies)   /* one hides the MTP layers, the other adds to them */
            return mf_fail(MF_ERR_INVALID, "options skip_mtp and mtp_head_copies contradict each other: skip_mtp hides "
                           "the MTP layers that mtp_head_copies adds head copies to; give one of them");
        return 1;
    }
    if (strcmp(key, "arch") == 0) {
        int rc = check_arch(v);
        return rc ? rc : set_str(&o->arch, key, v);
    }
    if (strcmp(key, "hf_config") == 0)
        return set_str(&o->hf_config, key, v);
    if (strcmp(key, "tokenizer") == 0)
        return set_str(&o->tokenizer, key, v);
    if (strcmp(key, "shard_size") == 0) {
        if (mf_parse_size(v, &o->shard_size) != 0 || o->shard_size == 0)
            return mf_fail(MF_ERR_INVALID, "bad value for shard_size: '%s' (e.g. 5GB, 500MB, 2GiB)", v ? v : "");
        return 1;
    }
    if (strcmp(key, "quant") == 0) {
        if (v && strcmp(v, "fp8") == 0)
            o->quant = MF_QUANT_FP8;
        else if (v && strcmp(v, "fp8_ue8m0") == 0)
            o->quant = MF_QUANT_FP8_UE8M0;
        else
            return mf_fail(MF_ERR_INVALID, "bad value for quant: '%s' (fp8 or fp8_ue8m0)", v ? v : "");
        return 1;
    }
    if (strcmp(key, "dtype") == 0) {
        o->dtype = mf_dtype_from_user(v ? v : "");
        if (o->dtype == MF_DT_INVALID)
            return mf_fail(MF_ERR_INVALID, "bad value for dtype: '%s' (bf16, fp16 or fp32)", v ? v : "");
        return 1;
    }
    return 0;
}

const char *const *mf_option_names(void)
{
    static const char *const names[] = { "iteration", "true_vocab_size", "skip_mtp", "mtp_head_copies", "arch",
                                         "shard_size", "dtype", "hf_config", "tokenizer", "read_ahead_kb", "quant", NULL };
    return names;
}

static char help_text[3072];

static void build_help(void)
{
    snprintf(help_text, sizeof(help_text),
           "    -o iteration=N          mount iteration N instead of latest_checkpointed_iteration.txt\n"
           "    -o true_vocab_size=N    trim vocab padding: embed/lm_head keep N rows (default: args.vocab_size, else padded)\n"
           "    -o skip_mtp             hide multi-token-prediction layers (num_nextn_predict_layers: 0)\n"
           "    -o mtp_head_copies      DeepSeek release layout: add embed_tokens and shared_head.head to each MTP layer\n"
           "    -o arch=NAME            %s (default: detect)\n"
           "    -o shard_size=SIZE      largest safetensors shard, e.g. 5GB (default), 500MB, 2GiB\n"
           "    -o dtype=bf16|fp16|fp32 convert float tensors on read (default: each tensor's stored dtype)\n"
           "    -o quant=fp8|fp8_ue8m0  DeepSeek-V3 FP8 layout: linear weights as F8_E4M3 + 128x128 block scale_inv,\n"
           "                            quantized on read (fp8_ue8m0: power-of-two scales)\n"
           "    -o hf_config=FILE       JSON object merged over config.json (token ids, rope scaling, ...)\n"
           "    -o tokenizer=DIR        show the tokenizer files of an HF tokenizer folder\n"
           "    -o read_ahead_kb=N      the mount's readahead in KiB (default 1024: 1 MiB FUSE requests; -1 keeps\n"
           "                            the kernel's 128; needs root, else left alone)\n", mf_family_names("|"));
}

const char *mf_options_help(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_help);   /* the arch list comes from the family table */
    return help_text;
}
