/* mcorefs-inspect [summary|tensors] CKPT [--json] [-o opts]: what a checkpoint holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>
#include "mcorefs/suggest.h"
#include "mcorefs/error.h"
#include "mcorefs/gather.h"
#include "mcorefs/version.h"
#include "mcorefs/verify.h"
#include "mcorefs/view.h"
#include "diff.h"
#include "export.h"
#include "export_pool.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: mcorefs-inspect [COMMAND] CHECKPOINT [ARGS] [--json] [-o opt,...]\n\n"
                 "commands:\n"
                 "  summary          iteration, layout, rank files, model family and sizes (default)\n"
                 "  tensors [--source]  every HF tensor: dtype, shape, file; --source adds the Megatron\n"
                 "                   tensor, the split and the rank files it is gathered from\n"
                 "  verify [--hash]  locate every tensor piece the view reads (torch_dist: open each chunk\n"
                 "                   archive and check it against .metadata); check that replicated tensors\n"
                 "                   (norms, routers, dense weights in EP files, duplicated expert shards,\n"
                 "                   the MTP stage's embedding copy) are identical (XXH64); --hash also reads\n"
                 "                   every HF tensor and prints its XXH64 so two exports can be compared\n"
                 "  export OUTDIR [--force] [--no-sync] [--threads N]  write the same files as the mount,\n"
                 "                   without FUSE; files are written as .NAME.PID.mcorefs-partial and renamed\n"
                 "                   at the end; SIGINT or SIGTERM removes them, and the next export removes\n"
                 "                   those a killed one left. Plain rank-file ranges are copied by the kernel\n"
                 "                   (copy_file_range; shared blocks where XFS/btrfs can), N threads (default %d)\n"
                 "                   share the work, and one syncfs puts the data on disk before the renames;\n"
                 "                   --no-sync skips it (faster; not crash-safe until the kernel writes back)\n"
                 "  diff A B [--json]  per HF tensor of two checkpoints (or: diff RUN ITER_A ITER_B, two\n"
                 "                   iterations of one run): identical or changed (XXH64 of the shown bytes),\n"
                 "                   and the largest absolute element difference of changed float tensors;\n"
                 "                   exit status 0 when all are identical, 2 when some differ\n"
                 "flags:\n"
                 "  --tensors        same as the tensors command\n"
                 "  --json           machine-readable output\n"
                 "  -V, --version    print the version\n\n"
                 "options (as for mcorefs):\n%s\n"
                 "exit status: 0 ok, 1 bad checkpoint or arguments, 2 verify found differing copies; an export\n"
                 "stopped by SIGINT or SIGTERM ends by that signal (130 or 143 in a shell)\n", export_pool_default_threads(),
                 mf_options_help());
}

/* Sizes for people: "3.15 GB" (powers of 1000, as disk tools and the HF hub show them). */
static const char *human(char *buf, size_t n, uint64_t bytes)
{
    static const char *const unit[] = {"kB", "MB", "GB", "TB", "PB"};
    if (bytes < 1000) {
        snprintf(buf, n, "%llu bytes", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes / 1000.0;
    int u = 0;
    while (v >= 999.995 && u < 4) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, n, "%.2f %s", v, unit[u]);
    return buf;
}

static cJSON *tensor_json(const mf_session *s, const mf_hf_tensor *t)
{
    cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *src = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "dtype", mf_dtype_st_name(t->dtype));
    for (int d = 0; d < t->ndim; d++)
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
    cJSON_AddItemToObject(o, "shape", shape);
    cJSON_AddStringToObject(o, "file", s->files[1 + t->file].name);
    cJSON_AddStringToObject(o, "source", t->source->name);
    cJSON_AddStringToObject(o, "split", mf_split_name(t->split));
    for (uint32_t i = 0; i < t->n_pieces; i++) {
        const char *f = s->ckpt.files[t->pieces[i].src->file].name;
        int dup = 0;
        for (int k = 0; k < cJSON_GetArraySize(src) && !dup; k++)
            dup = strcmp(cJSON_GetArrayItem(src, k)->valuestring, f) == 0;
        if (!dup)
            cJSON_AddItemToArray(src, cJSON_CreateString(f));
    }
    cJSON_AddItemToObject(o, "rank_files", src);
    return o;
}

static cJSON *summary_json(const mf_session *s, int with_tensors)
{
    const mf_checkpoint *c = &s->ckpt;
    const mf_model *m = &c->model;
    cJSON *o = cJSON_CreateObject(), *files = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "checkpoint", c->iter_dir);
    if (c->release)
        cJSON_AddStringToObject(o, "iteration", "release");
    else
        cJSON_AddNumberToObject(o, "iteration", (double)c->iteration);
    int dist = c->format == MF_FORMAT_TORCH_DIST;
    cJSON_AddStringToObject(o, "format", mf_checkpoint_format_name(c));
    if (dist) {
        size_t keys, chunks;
        mf_checkpoint_dist_counts(c, &keys, &chunks);
        cJSON_AddNumberToObject(o, "dcp_keys", (double)keys);
        cJSON_AddNumberToObject(o, "dcp_chunks", (double)chunks);
    }
    cJSON_AddStringToObject(o, "family", m->family->name);
    cJSON_AddStringToObject(o, "architecture", m->family->architecture);
    cJSON_AddNumberToObject(o, "tp", (double)m->tp);
    cJSON_AddNumberToObject(o, "pp", (double)m->pp);
    cJSON_AddNumberToObject(o, "vpp", (double)m->vpp);
    cJSON_AddNumberToObject(o, "ep", (double)m->ep);
    cJSON_AddNumberToObject(o, "etp", (double)m->etp);
    for (size_t i = 0; i < c->n_files; i++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "name", c->files[i].name);
        cJSON_AddNumberToObject(f, "tp", c->files[i].tp);
        cJSON_AddNumberToObject(f, "pp", c->files[i].pp);
        cJSON_AddNumberToObject(f, "ep", c->files[i].ep);
        cJSON_AddNumberToObject(f, "etp", c->files[i].etp);
        cJSON_AddNumberToObject(f, "bytes", (double)c->files[i].size);
        cJSON_AddItemToArray(files, f);
    }
    cJSON_AddItemToObject(o, "rank_files", files);
    cJSON_AddNumberToObject(o, "num_layers", (double)m->num_layers);
    cJSON_AddNumberToObject(o, "mtp_layers", (double)m->mtp_layers);
    cJSON_AddNumberToObject(o, "hidden_size", (double)m->hidden);
    cJSON_AddNumberToObject(o, "num_experts", (double)m->num_experts);
    cJSON_AddNumberToObject(o, "vocab_size", (double)m->vocab);
    cJSON_AddNumberToObject(o, "padded_vocab_size", (double)m->padded_vocab);
    cJSON_AddStringToObject(o, "dtype", mf_dtype_torch_name(m->params_dtype));
    cJSON_AddNumberToObject(o, "num_tensors", (double)s->map.n);
    cJSON_AddNumberToObject(o, "num_params", (double)s->map.num_params);
    cJSON_AddNumberToObject(o, "total_bytes", (double)s->map.total_bytes);
    cJSON *vf = cJSON_CreateArray();
    for (size_t i = 0; i < s->n_files; i++)
        cJSON_AddItemToArray(vf, cJSON_CreateString(s->files[i].name));
    cJSON_AddItemToObject(o, "files", vf);
    if (with_tensors) {
        cJSON *ts = cJSON_CreateArray();
        for (size_t i = 0; i < s->map.n; i++)
            cJSON_AddItemToArray(ts, tensor_json(s, &s->map.tensors[i]));
        cJSON_AddItemToObject(o, "tensors", ts);
    }
    return o;
}

static void print_summary(const mf_session *s)
{
    const mf_checkpoint *c = &s->ckpt;
    const mf_model *m = &c->model;
    printf("checkpoint   %s\n", c->iter_dir);
    if (c->release)
        printf("iteration    release\n");
    else
        printf("iteration    %lld\n", (long long)c->iteration);
    if (c->format == MF_FORMAT_TORCH_DIST) {
        size_t keys, chunks;
        mf_checkpoint_dist_counts(c, &keys, &chunks);
        printf("format       %s (PyTorch DCP: %zu global keys in %zu chunks)\n", mf_checkpoint_format_name(c), keys, chunks);
    } else {
        printf("format       torch (legacy, one torch.save file per rank)\n");
    }
    char sz[32];
    int moe = m->num_experts > 0; /* expert parallelism means nothing for a dense model */
    printf("layout       tp=%lld pp=%lld vpp=%lld", (long long)m->tp, (long long)m->pp, (long long)m->vpp);
    if (moe)
        printf(" ep=%lld etp=%lld", (long long)m->ep, (long long)m->etp);
    printf("\n%s   %zu\n", c->format == MF_FORMAT_TORCH_DIST ? "data files" : "rank files", c->n_files);
    for (size_t i = 0; i < c->n_files; i++) {
        const mf_rankfile *f = &c->files[i];
        if (c->format == MF_FORMAT_TORCH_DIST)
            printf("  %-22s %10s\n", f->name, human(sz, sizeof sz, f->size));
        else if (moe)
            printf("  %-22s tp=%d pp=%d ep=%d etp=%d  %10s\n", f->name, f->tp, f->pp, f->ep, f->etp,
                   human(sz, sizeof sz, f->size));
        else
            printf("  %-22s tp=%d pp=%d  %10s\n", f->name, f->tp, f->pp, human(sz, sizeof sz, f->size));
    }
    printf("model        %s (%s)\n", m->family->architecture, m->family->name);
    printf("sizes        layers=%lld hidden=%lld heads=%lld kv_groups=%lld head_dim=%lld ffn=%lld\n",
           (long long)m->num_layers, (long long)m->hidden, (long long)m->heads, (long long)m->groups,
           (long long)m->head_dim, (long long)m->ffn);
    if (m->num_experts)
        printf("experts      %lld (top-%lld, ffn %lld, shared ffn %lld)\n", (long long)m->num_experts,
               (long long)m->moe_topk, (long long)m->moe_ffn, (long long)m->shared_ffn);
    if (m->mtp_layers)
        printf("mtp layers   %lld%s\n", (long long)m->mtp_layers, m->mtp_shown ? "" : " (hidden by skip_mtp)");
    printf("vocab        %lld shown of %lld padded\n", (long long)m->vocab, (long long)m->padded_vocab);
    printf("dtype        %s\n", mf_dtype_torch_name(m->params_dtype));
    printf("parameters   %llu in %zu HF tensors, %s\n", (unsigned long long)s->map.num_params, s->map.n,
           human(sz, sizeof sz, s->map.total_bytes));
    printf("view         ");
    for (size_t i = 0; i < s->n_files; i++)
        printf("%s%s", i ? ", " : "", s->files[i].name);
    printf("\n");
}

static void print_tensors(const mf_session *s, int source)
{
    for (size_t i = 0; i < s->map.n; i++) {
        const mf_hf_tensor *t = &s->map.tensors[i];
        char shape[96];
        size_t at = 0;
        for (int d = 0; d < t->ndim && at < sizeof(shape); d++)
            at += (size_t)snprintf(shape + at, sizeof(shape) - at, "%s%lld", d ? ", " : "[", (long long)t->shape[d]);
        if (at < sizeof(shape))
            snprintf(shape + at, sizeof(shape) - at, "]");
        if (!source) {
            printf("%-60s %-5s %-14s %s\n", t->name, mf_dtype_st_name(t->dtype), shape, s->files[1 + t->file].name);
            continue;
        }
        printf("%-60s %-5s %-14s <- %s (%s, %u piece%s:", t->name, mf_dtype_st_name(t->dtype), shape,
               t->source->name, mf_split_name(t->split), t->n_pieces, t->n_pieces == 1 ? "" : "s");
        for (uint32_t k = 0; k < t->n_pieces && k < 8; k++)
            printf(" %s", s->ckpt.files[t->pieces[k].src->file].name);
        printf("%s)\n", t->n_pieces > 8 ? " ..." : "");
    }
}

/* Source pieces the view reads (what mf_verify_sources located and checked). */
static uint64_t count_pieces(const mf_session *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->ckpt.n_sources; i++)
        for (int k = 0; k < s->ckpt.sources[i].n_shards; k++)
            n += s->ckpt.sources[i].shards[k].file >= 0;
    return n;
}

/* What verify did, in words: "0 copies compared" alone reads as "did nothing". */
static void print_verify(const mf_session *s, const mf_verify_report *r, int hashes, uint64_t tensor_bytes)
{
    char a[32], b[32];
    int dist = s->ckpt.format == MF_FORMAT_TORCH_DIST;
    uint64_t pieces = count_pieces(s);
    if (dist)
        printf("verify: checked the chunk archive of each of the %llu tensor pieces the view reads against .metadata "
               "(dtype, shape, where the bytes lie)\n"
               "verify: no replicas to compare: torch_dist stores one copy of every chunk\n",
               (unsigned long long)pieces);
    else
        printf("verify: located each of the %llu tensor pieces the view reads in its rank file\n",
               (unsigned long long)pieces);
    if (!dist && r->copies_compared == 0)
        printf("verify: no replicas to compare: no tensor is stored more than once in this checkpoint\n");
    else if (!dist)
        printf("verify: compared %llu replicated copies (tensors several rank files store, such as norms over TP) "
               "with the copy the view serves, %s read and hashed (XXH64): %s\n",
               (unsigned long long)r->copies_compared, human(a, sizeof a, r->bytes_hashed),
               r->mismatches ? "they DIFFER" : "all identical");
    if (hashes)
        printf("verify: hashed every HF tensor, %s read (XXH64 above)\n", human(b, sizeof b, tensor_bytes));
    if (r->mismatches)
        printf("verify: %llu of the copies differ; first: %s\n", (unsigned long long)r->mismatches, r->first_mismatch);
}

static int cmd_verify(mf_session *s, int json, int hashes)
{
    mf_verify_report r;
    if (mf_verify_sources(s) != 0 || mf_verify_replicas(s, &r) != 0) {
        fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
        return 1;
    }
    cJSON *o = cJSON_CreateObject(), *hs = cJSON_CreateObject();
    uint64_t tensor_bytes = 0;
    for (size_t i = 0; hashes && i < s->map.n; i++) {
        uint64_t h;
        char hex[17];
        if (mf_hash_tensor(s, &s->map.tensors[i], &h) != 0) {
            fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
            cJSON_Delete(o);
            cJSON_Delete(hs);
            return 1;
        }
        tensor_bytes += s->map.tensors[i].nbytes;
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
        if (json)
            cJSON_AddStringToObject(hs, s->map.tensors[i].name, hex);
        else
            printf("%s  %s\n", hex, s->map.tensors[i].name);
    }
    if (json) {
        cJSON_AddNumberToObject(o, "copies_compared", (double)r.copies_compared);
        cJSON_AddNumberToObject(o, "mismatches", (double)r.mismatches);
        cJSON_AddNumberToObject(o, "bytes_hashed", (double)r.bytes_hashed);
        cJSON_AddNumberToObject(o, "pieces_checked", (double)count_pieces(s));
        if (hashes)
            cJSON_AddNumberToObject(o, "tensor_bytes_hashed", (double)tensor_bytes);
        if (r.mismatches)
            cJSON_AddStringToObject(o, "first_mismatch", r.first_mismatch);
        if (hashes)
            cJSON_AddItemToObject(o, "xxh64", hs);
        else
            cJSON_Delete(hs);
        char *text = cJSON_Print(o);
        printf("%s\n", text);
        free(text);
    } else {
        cJSON_Delete(hs);
        print_verify(s, &r, hashes, tensor_bytes);
    }
    cJSON_Delete(o);
    return r.mismatches ? 2 : 0;
}

static const char *const commands[] = {"summary", "tensors", "verify", "export", "diff", NULL};
static const char *const flags[] = {"--json", "--tensors", "--source", "--hash", "--force", "--no-sync", "--threads",
                                    "--help", NULL};

/* The word of `list` that `w` most likely misspells or abbreviates ("ver"), or NULL. */
static const char *closest(const char *w, const char *const *list)
{
    if (strlen(w) >= 3)
        for (size_t i = 0; list[i]; i++)
            if (strncmp(list[i], w, strlen(w)) == 0)
                return list[i];
    return mf_suggest(w, list);
}

static int is_command(const char *w)
{
    for (size_t i = 0; commands[i]; i++)
        if (strcmp(w, commands[i]) == 0)
            return 1;
    return 0;
}

/* Is there a positional argument after argv[i] (skipping the values of -o and --threads)? */
static int positional_after(int argc, char **argv, int i)
{
    for (int k = i + 1; k < argc; k++) {
        if (strcmp(argv[k], "-o") == 0 || strcmp(argv[k], "--threads") == 0)
            k++;
        else if (argv[k][0] != '-')
            return 1;
    }
    return 0;
}

/* The first positional word is a command or the checkpoint. A word that is no path on disk is
 * taken for a mistyped command when it looks like one or a checkpoint follows it. */
static int bad_command(const char *w, int more)
{
    struct stat st;
    const char *guess = closest(w, commands);
    if (stat(w, &st) == 0 || (!guess && !more))
        return 0;
    if (guess)
        fprintf(stderr, "mcorefs-inspect: unknown command '%s' (did you mean %s?)\n", w, guess);
    else
        fprintf(stderr, "mcorefs-inspect: unknown command '%s' (commands: summary, tensors, verify, export, diff)\n", w);
    return 1;
}

int main(int argc, char **argv)
{
    mf_options o;
    const char *ckpt = NULL, *outdir = NULL;
    int json = 0, tensors = 0, source = 0, verify = 0, hashes = 0, export = 0;
    mf_export_opts xo = { 0 };
    if (argc > 1 && strcmp(argv[1], "diff") == 0)
        return mf_inspect_diff_main(argc - 2, argv + 2);
    mf_options_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("mcorefs-inspect %s\n", MCOREFS_VERSION);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--tensors") == 0 || strcmp(a, "tensors") == 0) {
            tensors = 1;
        } else if (strcmp(a, "summary") == 0 && ckpt == NULL) {
            tensors = 0;
        } else if (strcmp(a, "verify") == 0 && ckpt == NULL) {
            verify = 1;
        } else if (strcmp(a, "export") == 0 && ckpt == NULL) {
            export = 1;
        } else if (strcmp(a, "--source") == 0) {
            source = 1;
        } else if (strcmp(a, "--hash") == 0) {
            hashes = 1;
        } else if (strcmp(a, "--force") == 0) {
            xo.force = 1;
        } else if (strcmp(a, "--no-sync") == 0) {
            xo.no_sync = 1;
        } else if (strcmp(a, "--threads") == 0 || strncmp(a, "--threads=", 10) == 0) {
            const char *v = a[9] == '=' ? a + 10 : i + 1 < argc ? argv[++i] : "";
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 1 || n > 64) {
                fprintf(stderr, "mcorefs-inspect: --threads needs a number from 1 to 64, not '%s'\n", v);
                return 1;
            }
            xo.threads = (int)n;
        } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
            char *list = strdup(argv[++i]), *save = NULL;
            for (char *kv = strtok_r(list, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                int rc = mf_options_apply(&o, kv);
                if (rc == 0)
                    rc = mf_fail(MF_ERR_INVALID, "unknown option '%s'", kv);
                if (rc < 0) {
                    fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
                    free(list);
                    return 1;
                }
            }
            free(list);
        } else if (strcmp(a, "-o") == 0) {
            fprintf(stderr, "mcorefs-inspect: -o needs a list of options, e.g. -o true_vocab_size=32000\n");
            return 1;
        } else if (a[0] == '-') {
            const char *guess = closest(a, flags);
            if (guess)
                fprintf(stderr, "mcorefs-inspect: unknown flag '%s' (did you mean %s?)\n", a, guess);
            else
                fprintf(stderr, "mcorefs-inspect: unknown flag '%s' (see --help)\n", a);
            return 1;
        } else if (ckpt == NULL) {
            if (bad_command(a, positional_after(argc, argv, i)))
                return 1;
            ckpt = a;
        } else if (export && outdir == NULL) {
            outdir = a;
        } else if (is_command(a)) {
            fprintf(stderr, "mcorefs-inspect: the command comes before the checkpoint: mcorefs-inspect %s %s\n", a, ckpt);
            return 1;
        } else {
            fprintf(stderr, "mcorefs-inspect: unexpected argument '%s' after the checkpoint '%s' (see --help)\n", a, ckpt);
            return 1;
        }
    }
    if (ckpt == NULL) {
        fprintf(stderr, "mcorefs-inspect: no checkpoint given (usage: mcorefs-inspect [COMMAND] CHECKPOINT [ARGS] "
                        "[--json] [-o opt,...]; see --help)\n");
        return 1;
    }
    if (export && outdir == NULL) {
        fprintf(stderr, "mcorefs-inspect: export needs an output folder: mcorefs-inspect export %s OUTDIR\n", ckpt);
        return 1;
    }
    mf_session *s;
    if (mf_session_open(&s, ckpt, &o) != 0) {
        fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
        mf_options_free(&o);
        return 1;
    }
    int rc = 0;
    if (verify) {
        rc = cmd_verify(s, json, hashes);
    } else if (export) {
        if (mf_export(s, outdir, &xo) != 0) {
            fprintf(stderr, "mcorefs-inspect: %s\n", mf_error());
            rc = 1;
        }
    } else if (json) {
        cJSON *j = summary_json(s, tensors);
        char *text = cJSON_Print(j);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(j);
    } else if (tensors) {
        print_tensors(s, source);
    } else {
        print_summary(s);
    }
    mf_session_close(s);
    mf_options_free(&o);
    return rc;
}
