/* mcorefs CKPT MOUNTPOINT [-o opts]: mount a Megatron checkpoint as a Hugging Face model dir. */
#include <stddef.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "mcorefs/error.h"
#include "mcorefs/options.h"
#include "ops.h"

typedef struct {
    mf_options opts;
    char *ckpt;
    char *mountpoint;   /* absolute: the daemon changes to / */
    int show_help, show_version, foreground, bad;
} cli;

enum { KEY_HELP, KEY_VERSION, KEY_FG };

static const struct fuse_opt cli_spec[] = {
    FUSE_OPT_KEY("-h", KEY_HELP), FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION), FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_KEY("-f", KEY_FG), FUSE_OPT_KEY("-d", KEY_FG),
    FUSE_OPT_END
};

static int on_arg(void *data, const char *arg, int key, struct fuse_args *out)
{
    cli *c = data;
    switch (key) {
    case KEY_HELP: c->show_help = 1; return 0;
    case KEY_VERSION: c->show_version = 1; return 0;
    case KEY_FG: c->foreground = 1; return 1;
    case FUSE_OPT_KEY_OPT: {
        if (strcmp(arg, "rw") == 0)   /* mount(8) adds rw by default: this file system is read-only */
            return 0;
        if (strncmp(arg, "max_read=", 9) == 0)   /* libfuse wants init to ask for the same value */
            fs_set_max_read((unsigned)strtoul(arg + 9, NULL, 10));
        int rc = mf_options_apply(&c->opts, arg);
        if (rc < 0) {
            c->bad = 1;
            return -1;
        }
        return rc == 1 ? 0 : 1;   /* ours: consumed; otherwise pass to FUSE */
    }
    case FUSE_OPT_KEY_NONOPT:
        if (c->ckpt == NULL) {
            c->ckpt = strdup(arg);
            return 0;
        }
        if (c->mountpoint == NULL)
            c->mountpoint = realpath(arg, NULL);
        return 1;
    }
    return 1;
}

static void usage(const char *prog)
{
    printf("usage: %s CHECKPOINT MOUNTPOINT [-o opt,[opt...]] [-f] [-d] [-s]\n\n"
           "Mount a Megatron-Core checkpoint (--ckpt-format torch) read-only as a Hugging Face\n"
           "model directory: config.json, model*.safetensors, model.safetensors.index.json.\n"
           "CHECKPOINT is the save folder (with latest_checkpointed_iteration.txt) or one iter_* folder.\n\n"
           "mcorefs options:\n%s\n"
           "common FUSE options:\n"
           "    -f                      stay in the foreground\n"
           "    -d                      debug output (implies -f)\n"
           "    -s                      single-threaded\n"
           "    -o allow_other          let other users read the mount\n\n",
           prog, mf_options_help());
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    cli c = { 0 };
    mf_session *s = NULL;
    mf_options_init(&c.opts);
    int rc = 1;
    if (fuse_opt_parse(&args, &c, cli_spec, on_arg) != 0) {
        fprintf(stderr, "mcorefs: %s\n", c.bad ? mf_error() : "bad arguments (see --help)");
        goto out;
    }
    if (c.show_help) {
        usage(argv[0]);
        fuse_opt_add_arg(&args, "--help");
        fuse_main(args.argc, args.argv, &mcorefs_ops, NULL);
        rc = 0;
        goto out;
    }
    if (c.show_version) {
        printf("mcorefs 0.1.0\n");
        rc = 0;
        goto out;
    }
    if (c.ckpt == NULL || args.argc < 2) {
        fprintf(stderr, "mcorefs: need a checkpoint folder and a mount point (see --help)\n");
        goto out;
    }
    if (mf_session_open(&s, c.ckpt, &c.opts) != 0) {
        fprintf(stderr, "mcorefs: %s\n", mf_error());
        goto out;
    }
    if (c.opts.tokenizer && c.opts.true_vocab_size == 0)
        fprintf(stderr, "mcorefs: note: tokenizer given without true_vocab_size: config.json says vocab_size %lld (%s); "
                "pass -o true_vocab_size=N if the tokenizer has fewer tokens\n", (long long)s->ckpt.model.vocab,
                s->ckpt.model.vocab == s->ckpt.model.padded_vocab ? "the padded size" : "args.vocab_size");
    fs_log_init(c.foreground);
    char fsname[4200];
    /* defaults go first so the user's own -o options override them */
    snprintf(fsname, sizeof(fsname), "-ofsname=mcorefs:%s,subtype=mcorefs,default_permissions,max_threads=32,max_idle_threads=32,max_read=%u", c.ckpt, FS_DEFAULT_MAX_READ);
    fuse_opt_insert_arg(&args, 1, fsname);
    fuse_opt_add_arg(&args, "-oro");   /* last, so nothing can turn it off */
    fs_set_mountpoint(c.mountpoint);
    rc = fuse_main(args.argc, args.argv, &mcorefs_ops, s) ? 1 : 0;
out:
    mf_session_close(s);
    mf_options_free(&c.opts);
    free(c.ckpt);
    free(c.mountpoint);
    fuse_opt_free_args(&args);
    return rc;
}
