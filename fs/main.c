/* mcorefs CKPT MOUNTPOINT [-o opts]: mount a Megatron checkpoint as a Hugging Face model dir. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "log.h"
#include "loop.h"
#include "mcorefs/error.h"
#include "mountpoint.h"
#include "ops.h"
#include "run_tree.h"
#include "mcorefs/run.h"

/* SIGTERM, SIGINT and SIGHUP end the loop the way an unmount does, so fs_run unmounts and returns 0
 * (libfuse's own handlers make it return 8). The session is known once fs_run created it. */
static struct fuse_session *volatile running;
static volatile sig_atomic_t stop_requested;
static fs_tree tree;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    struct fuse_session *se = running;
    if (se)
        fuse_session_exit(se);
}

static void serving(struct fuse_session *se)
{
    running = se;
    if (!se && tree.run)
        fs_run_tree_detach(&tree);   /* the watcher stops before the session it notifies goes */
    if (se && tree.run)
        fs_run_tree_attach(&tree, se);   /* its kernel entries are dropped as the run changes */
    if (se && stop_requested)   /* a signal that came before the session existed */
        fuse_session_exit(se);
}

static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);   /* libfuse then leaves these signals to us */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int main(int argc, char *argv[])
{
    fs_cli c;
    mf_session *s = NULL;
    mf_run *run = NULL;
    char *mountpoint = NULL, *fsname = NULL;
    int rc = 1;
    if (fs_cli_parse(&c, argc, argv) != 0) {
        fprintf(stderr, "mcorefs: %s\n", mf_error());
        goto out;
    }
    if (c.show_help || c.show_version) {
        if (c.show_help)
            fs_cli_usage(argv[0]);
        else
            fs_cli_version();
        rc = 0;
        goto out;
    }
    if (c.ckpt == NULL || c.mountpoint == NULL) {
        fprintf(stderr, "mcorefs: need a checkpoint folder and a mount point (see mcorefs --help)\n");
        goto out;
    }
    if (fs_check_mountpoint(c.mountpoint, &mountpoint) != 0 || fs_check_fuse_device() != 0 ||
        fs_log_init(c.foreground, c.log_file) != 0) {
        fprintf(stderr, "mcorefs: %s\n", mf_error());
        goto out;
    }
    if (c.all_iterations) {   /* a whole training run: fs/run_tree.c */
        mf_run_params p = { c.max_views, MF_RUN_DEFAULT_RECHECK_MS, 0 };   /* watcher: after the fork */
        if (c.opts.iteration >= 0) {
            fprintf(stderr, "mcorefs: iterations=all and iteration=%lld exclude each other\n", (long long)c.opts.iteration);
            goto out;
        }
        if (mf_run_open(&run, c.ckpt, &c.opts, &p) != 0) {
            fprintf(stderr, "mcorefs: %s\n", mf_error());
            goto out;
        }
    } else if (c.max_views) {
        fprintf(stderr, "mcorefs: max_views applies to iterations=all mounts only\n");
        goto out;
    } else if (mf_session_open(&s, c.ckpt, &c.opts) != 0) {
        fprintf(stderr, "mcorefs: %s\n", mf_error());
        goto out;
    }
    if (s && c.opts.tokenizer && c.opts.true_vocab_size == 0)
        fprintf(stderr, "mcorefs: note: tokenizer given without true_vocab_size: config.json says vocab_size %lld (%s); "
                "pass -o true_vocab_size=N if the tokenizer has fewer tokens\n", (long long)s->ckpt.model.vocab,
                s->ckpt.model.vocab == s->ckpt.model.padded_vocab ? "the padded size" : "args.vocab_size");
    char rest[256];
    /* defaults go first so the user's own -o options override them */
    snprintf(rest, sizeof(rest), ",subtype=mcorefs,default_permissions,max_threads=32,max_idle_threads=32,max_read=%u",
             FS_DEFAULT_MAX_READ);
    fsname = fs_cli_fsname_arg(c.ckpt, rest);
    if (!fsname || fuse_opt_insert_arg(&c.fuse, 1, fsname) != 0 || fuse_opt_add_arg(&c.fuse, "-oro") != 0) {
        fprintf(stderr, "mcorefs: out of memory\n");
        goto out;
    }   /* -oro last, so nothing can turn it off */
    fs_set_mountpoint(mountpoint);
    if (run) {   /* the root changes: short lifetimes, no negative entries (unless given) */
        if (!(c.cache_given & 1))
            c.cache.entry_timeout = 1.0;
        if (!(c.cache_given & 2))
            c.cache.attr_timeout = 1.0;
        if (!(c.cache_given & 4))
            c.cache.negative_timeout = 0.0;
    }
    fs_set_cache_opts(&c.cache);
    tree.view0 = s;
    tree.run = run;
    install_stop_handlers();
    rc = fs_run(&c.fuse, &mcorefs_ll_ops, &tree, serving);
out:
    mf_run_close(run);
    mf_session_close(s);
    free(mountpoint);
    free(fsname);
    fs_cli_free(&c);
    fs_log_close();
    return rc;
}
