/* Choosing a family from the args (hf-mapping.md §9) with the family rows' own knowledge: the
 * Megatron settings each row supports, its detection masks, and the one list of family names. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/recipe.h"

/* How an arg turns on an MF_ARGF_* setting. */
typedef enum {
    ARG_STR_NOT,     /* a string other than `value` (and other than `value2` when given) */
    ARG_OFF,         /* a bool left false (and the bool named by `value`, when given, too) */
    ARG_ON,          /* a bool set true */
    ARG_GIVEN,       /* any value but None */
    ARG_BELOW_ONE,   /* a float below 1 */
} arg_test;

/* Megatron settings beyond what every family shares; a family row lists the ones it supports
 * (mf_family.supports_args), every other one is refused by name. Order = the order of checks. */
static const struct {
    unsigned bit;
    const char *arg;
    arg_test test;
    const char *value, *value2, *why;   /* ARG_STR_NOT: allowed values; why: the message's tail */
} arg_settings[] = {
    { MF_ARGF_NORM_NOT_RMS, "normalization", ARG_STR_NOT, "RMSNorm", NULL, "(only RMSNorm families are supported)" },
    { MF_ARGF_POS_NOT_ROPE, "position_embedding_type", ARG_STR_NOT, "rope", "yarn", "(need rope)" },
    { MF_ARGF_NO_SWIGLU, "swiglu", ARG_OFF, "quick_geglu", NULL, "(no supported HF family uses a non-gated MLP)" },
    { MF_ARGF_QUICK_GEGLU, "quick_geglu", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_PROBS_ON_INPUT, "moe_apply_probs_on_input", ARG_ON, NULL, NULL, "(no HF MoE family weights the expert input)" },
    { MF_ARGF_ROTARY_INTERLEAVED, "rotary_interleaved", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_ZERO_CENTERED_GAMMA, "layernorm_zero_centered_gamma", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_LAYERNORM_1P, "apply_layernorm_1p", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_ATTN_OUTPUT_GATE, "attention_output_gate", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_FP8_PARAM_GATHER, "fp8_param_gather", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_MLA_DOWN_FUSION, "mla_down_proj_fusion", ARG_ON, NULL, NULL, NULL },
    { MF_ARGF_PP_LAYOUT, "pipeline_model_parallel_layout", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_HETEROGENEOUS, "heterogeneous_layers_config_path", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_HETEROGENEOUS, "heterogeneous_layers_config_encoded_json", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_HYBRID_PATTERN, "hybrid_layer_pattern", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_SPEC, "spec", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_GLU_INTERLEAVE, "moe_mlp_glu_interleave_size", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_GLU_INTERLEAVE, "moe_shared_expert_glu_interleave_size", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_MOE_LATENT, "moe_latent_size", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_ATTN_VARIANT_OTHER, "experimental_attention_variant", ARG_STR_NOT, "gated_delta_net", NULL,
      "(only gated_delta_net layers have an HF class: Qwen3-Next)" },
    { MF_ARGF_ATTN_VARIANT, "experimental_attention_variant", ARG_GIVEN, NULL, NULL, NULL },
    { MF_ARGF_PARTIAL_ROTARY, "rotary_percent", ARG_BELOW_ONE, NULL, NULL, NULL },
    { MF_ARGF_SOFTMAX_TYPE, "softmax_type", ARG_STR_NOT, "vanilla", NULL, NULL },
    { MF_ARGF_WINDOW_SKIP, "window_attn_skip_freq", ARG_GIVEN, NULL, NULL, NULL },
};
#define N_ARG_SETTINGS (sizeof(arg_settings) / sizeof(arg_settings[0]))

static int setting_on(size_t i, const mf_pv *a)
{
    const char *s;
    switch (arg_settings[i].test) {
    case ARG_STR_NOT:
        s = mf_args_str(a, arg_settings[i].arg);
        return s && strcmp(s, arg_settings[i].value) != 0 && !(arg_settings[i].value2 && strcmp(s, arg_settings[i].value2) == 0);
    case ARG_OFF:
        return !mf_args_bool(a, arg_settings[i].arg, 0) && !(arg_settings[i].value && mf_args_bool(a, arg_settings[i].value, 0));
    case ARG_ON: return mf_args_bool(a, arg_settings[i].arg, 0);
    case ARG_GIVEN: return mf_args_is_set(a, arg_settings[i].arg);
    case ARG_BELOW_ONE: return mf_args_float(a, arg_settings[i].arg, 1.0) < 1.0;
    }
    return 0;
}

/* "normalization=LayerNorm (only RMSNorm ...)", "swiglu is off (...)", "spec is set", ... */
static void describe(size_t i, const mf_pv *a, char *out, size_t n)
{
    const char *arg = arg_settings[i].arg, *why = arg_settings[i].why ? arg_settings[i].why : "";
    const char *sep = *why ? " " : "";
    switch (arg_settings[i].test) {
    case ARG_STR_NOT: snprintf(out, n, "%s=%s%s%s", arg, mf_args_str(a, arg), sep, why); break;
    case ARG_OFF: snprintf(out, n, "%s is off%s%s", arg, sep, why); break;
    case ARG_BELOW_ONE: snprintf(out, n, "%s < 1%s%s", arg, sep, why); break;
    default: snprintf(out, n, "%s is set%s%s", arg, sep, why); break;
    }
}

unsigned mf_args_settings(const mf_pv *args)
{
    unsigned on = 0;
    for (size_t i = 0; i < N_ARG_SETTINGS; i++)
        on |= setting_on(i, args) ? arg_settings[i].bit : 0;
    return on;
}

int mf_family_check_args(const mf_family *f, const mf_pv *args, const char *src)
{
    unsigned allowed = 0;
    if (f)
        allowed = f->supports_args;
    else
        for (const mf_family *const *p = mf_family_all(); *p; p++)
            allowed |= (*p)->supports_args;
    for (size_t i = 0; i < N_ARG_SETTINGS; i++) {
        if ((allowed & arg_settings[i].bit) || !setting_on(i, args))
            continue;
        char what[256];
        describe(i, args, what, sizeof(what));
        if (f == NULL)
            return mf_fail(MF_ERR_UNSUPPORTED, "%s: unsupported model: %s", src, what);
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: unsupported by %s: %s", src, f->architecture, what);
    }
    return MF_OK;
}

/* The one row whose masks fit `have` and that supports every setting in `on`; NULL (no message)
 * when none fits, NULL with the message set when two do. */
static const mf_family *detect_row(unsigned have, unsigned on, const char *src, int *ambiguous)
{
    const mf_family *found = NULL;
    for (const mf_family *const *p = mf_family_all(); *p; p++) {
        const mf_family *f = *p;
        if ((have & f->detect_all) != f->detect_all || (have & f->detect_none) || (on & ~f->supports_args))
            continue;
        if (found) {   /* the rows' masks must exclude each other: never guess */
            mf_fail(MF_ERR_UNSUPPORTED, "%s: ambiguous model: both %s and %s fit; use -o arch=NAME", src, found->name, f->name);
            *ambiguous = 1;
            return NULL;
        }
        found = f;
    }
    return found;
}

const mf_family *mf_family_detect(const mf_model *m, unsigned arg_settings_on, const mf_pv *args, const char *src)
{
    unsigned have = mf_model_features(m);
    int ambiguous = 0;
    const mf_family *found = detect_row(have, arg_settings_on, src, &ambiguous);
    if (found || ambiguous)
        return found;
    /* the row the features point to cannot express a setting (say rotary_percent < 1 on a
     * Llama): name the setting and the class rather than "no family fits" */
    const mf_family *near = detect_row(have, 0, src, &ambiguous);
    if (near && args && (arg_settings_on & ~near->supports_args) && mf_family_check_args(near, args, src) != MF_OK)
        return NULL;
    if (ambiguous)
        return NULL;
    if ((have & MF_FEAT_MLA) && !(have & MF_FEAT_MOE))
        mf_fail(MF_ERR_UNSUPPORTED, "%s: ambiguous model: multi-latent attention without experts has no HF target; use -o arch=", src);
    else if (have & MF_FEAT_MOE)
        mf_fail(MF_ERR_UNSUPPORTED, "%s: ambiguous MoE model (shared experts without the Qwen2-MoE gate/bias); use -o arch=NAME", src);
    else
        mf_fail(MF_ERR_UNSUPPORTED, "%s: no supported family fits these args; use -o arch=NAME", src);
    return NULL;
}

static char names_comma[512], names_bar[512];

static void join_names(char *buf, size_t n, const char *sep)
{
    size_t k = 0;
    for (const mf_family *const *p = mf_family_all(); *p && k < n; p++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", k ? sep : "", (*p)->name);
}

static void build_names(void)
{
    join_names(names_comma, sizeof(names_comma), ", ");
    join_names(names_bar, sizeof(names_bar), "|");
}

const char *mf_family_names(const char *sep)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_names);
    return strcmp(sep, "|") == 0 ? names_bar : names_comma;
}
