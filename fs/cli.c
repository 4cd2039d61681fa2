/* Parsing of mcorefs CKPT MOUNTPOINT [-o opts] [-f] [-d] [-s]: every option is ours, a FUSE option
 * from the accepted list (passed to libfuse), or an error in our words with a suggestion. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "mcorefs/error.h"
#include "mcorefs/run.h"
#include "mcorefs/suggest.h"
#include "mcorefs/version.h"

enum { KEY_HELP, KEY_VERSION, KEY_FG };

static const struct fuse_opt cli_spec[] = {
    FUSE_OPT_KEY("-h", KEY_HELP), FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION), FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_KEY("-f", KEY_FG), FUSE_OPT_KEY("-d", KEY_FG), FUSE_OPT_KEY("debug", KEY_FG),
    FUSE_OPT_END
};

/* FUSE options passed on to libfuse (a trailing '=' takes a value). The generic mount flags, the
 * mount(8)/mount.fuse3 ones (dev, suid, ...) and the cache/threading knobs; nothing that changes
 * what the files say (uid=, gid=, umask= are refused: the view shows the checkpoint's own). */
static const char *const fuse_names[] = {
    "allow_other", "allow_root", "auto_unmount", "default_permissions", "ro", "dev", "nodev", "suid", "nosuid",
    "exec", "noexec", "atime", "noatime", "async", "sync", "dirsync", "debug", "fsname=", "subtype=",
    "max_read=", "max_threads=", "max_idle_threads=", "clone_fd", "kernel_cache", "auto_cache", "noauto_cache",
    "entry_timeout=", "attr_timeout=", "negative_timeout=", "ac_attr_timeout=",
    "context=", "fscontext=", "defcontext=", "rootcontext=", NULL
};
static const char *const refused_names[] = { "uid", "gid", "umask", NULL };
/* The cache options of libfuse's high-level API, which this low-level daemon applies itself.
 * kernel_cache is always on (the contents never change) and auto_cache would only drop the cache
 * on size or mtime changes that never happen: accepted, nothing to do. */
static const char *const cache_names[] = {
    "kernel_cache", "auto_cache", "noauto_cache", "entry_timeout=", "attr_timeout=", "negative_timeout=",
    "ac_attr_timeout=", NULL
};

/* Every name a user may mean, for suggestions: ours, log, the FUSE ones without '='. */
static const char *const *all_names(void)
{
    static const char *names[64];
    if (names[0] == NULL) {
        size_t n = 0;
        for (const char *const *p = mf_option_names(); *p && n < 60; p++)
            names[n++] = *p;
        names[n++] = "log";
        names[n++] = "iterations";
        names[n++] = "max_views";
        static char bare[40][24];
        for (size_t i = 0; fuse_names[i] && n < 62 && i < 40; i++) {
            snprintf(bare[i], sizeof(bare[i]), "%.*s", (int)strcspn(fuse_names[i], "="), fuse_names[i]);
            names[n++] = bare[i];
        }
        names[n] = NULL;
    }
    return names;
}

static int key_is(const char *arg, const char *name)
{
    size_t n = strcspn(name, "=");
    if (name[n] == '=')
        return strncmp(arg, name, n + 1) == 0 && arg[n + 1] != 0;
    return strcmp(arg, name) == 0;
}

static int in_list(const char *arg, const char *const *names)
{
    for (const char *const *p = names; *p; p++)
        if (key_is(arg, *p))
            return 1;
    return 0;
}

static int unknown_option(const char *arg)
{
    char key[64];
    snprintf(key, sizeof(key), "%.*s", (int)strcspn(arg, "="), arg);
    for (const char *const *p = refused_names; *p; p++)
        if (strcmp(key, *p) == 0)
            return mf_fail(MF_ERR_INVALID, "option '%s' is not supported: the files show the checkpoint's own owner, "
                           "group and mode bits", key);
    const char *near = mf_suggest(key, all_names());
    if (near)
        return mf_fail(MF_ERR_INVALID, "unknown option '%s' (did you mean %s?)", key, near);
    return mf_fail(MF_ERR_INVALID, "unknown option '%s' (see mcorefs --help for the options)", key);
}

static int take_log_file(fs_cli *c, const char *path)
{
    if (*path == 0)
        return mf_fail(MF_ERR_INVALID, "option log needs a value: log=FILE");
    free(c->log_file);
    if (path[0] == '/') {
        c->log_file = strdup(path);
    } else {   /* relative to where mcorefs was started, not to / where the daemon runs */
        char *cwd = getcwd(NULL, 0);
        size_t n = (cwd ? strlen(cwd) : 0) + strlen(path) + 2;
        c->log_file = cwd ? malloc(n) : NULL;
        if (c->log_file)
            snprintf(c->log_file, n, "%s/%s", cwd, path);
        free(cwd);
    }
    return c->log_file ? 0 : mf_fail(MF_ERR_NOMEM, "out of memory");
}

/* -o iterations=all and -o max_views=N: a whole training run (fs/run_tree.c). */
static int take_run_option(fs_cli *c, const char *arg)
{
    if (strncmp(arg, "iterations=", 11) == 0) {
        if (strcmp(arg + 11, "all") != 0)
            return mf_fail(MF_ERR_INVALID, "option iterations takes the value all (got '%s'); one iteration is "
                           "iteration=N", arg + 11), -1;
        c->all_iterations = 1;
        return 0;
    }
    char *end;
    unsigned long v = strtoul(arg + (arg[9] == '=' ? 10 : 9), &end, 10);
    if (arg[9] != '=' || arg[10] == 0 || *end || v < 1 || v > 4096)
        return mf_fail(MF_ERR_INVALID, "option max_views needs a number from 1 to 4096: max_views=N"), -1;
    c->max_views = (unsigned)v;
    return 0;
}

/* 0 (taken: not passed on), or -1 with a message for a timeout that is no number of seconds. */
static int take_cache_option(fs_cli *c, const char *arg)
{
    static const struct { const char *key; size_t at; } timeouts[] = {
        { "entry_timeout=", offsetof(fs_cache_opts, entry_timeout) },
        { "attr_timeout=", offsetof(fs_cache_opts, attr_timeout) },
        { "negative_timeout=", offsetof(fs_cache_opts, negative_timeout) },
    };
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        size_t n = strlen(timeouts[i].key);
        if (strncmp(arg, timeouts[i].key, n) != 0)
            continue;
        char *end = NULL;
        double v = strtod(arg + n, &end);
        if (end == arg + n || *end != 0 || !(v >= 0))
            return mf_fail(MF_ERR_INVALID, "option %.*s needs a number of seconds >= 0, not '%s'", (int)n - 1, arg,
                           arg + n), -1;
        memcpy((char *)&c->cache + timeouts[i].at, &v, sizeof(v));
        c->cache_given |= 1u << i;
    }
    return 0;
}

static int on_arg(void *data, const char *arg, int key, struct fuse_args *out)
{
    fs_cli *c = data;
    switch (key) {
    case KEY_HELP: c->show_help = 1; return 0;
    case KEY_VERSION: c->show_version = 1; return 0;
    case KEY_FG: c->foreground = 1; return 1;
    case FUSE_OPT_KEY_OPT:
        if (*arg == 0)   /* "a,,b" */
            return 0;
        if (arg[0] == '-') {
            if (strcmp(arg, "-s") == 0)
                return 1;
            mf_fail(MF_ERR_INVALID, "unknown flag '%s' (see mcorefs --help)", arg);
            return -1;
        }
        if (strcmp(arg, "rw") == 0)   /* mount(8) adds rw by default: this file system is read-only */
            return 0;
        if (strncmp(arg, "log=", 4) == 0 || strcmp(arg, "log") == 0)
            return take_log_file(c, arg[3] ? arg + 4 : "") == 0 ? 0 : -1;
        if (strncmp(arg, "iterations=", 11) == 0 || strcmp(arg, "iterations") == 0)
            return take_run_option(c, arg);
        if (strncmp(arg, "max_views=", 10) == 0 || strcmp(arg, "max_views") == 0)
            return take_run_option(c, arg);
        int rc = mf_options_apply(&c->opts, arg);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return 0;
        if (in_list(arg, cache_names))
            return take_cache_option(c, arg);
        if (in_list(arg, fuse_names)) {
            if (strncmp(arg, "max_read=", 9) == 0) {   /* libfuse wants init to ask for the same value */
                c->max_read = (unsigned)strtoul(arg + 9, NULL, 10);
                fs_set_max_read(c->max_read);
            }
            return 1;
        }
        unknown_option(arg);
        return -1;
    case FUSE_OPT_KEY_NONOPT:
        if (c->ckpt == NULL) {
            c->ckpt = strdup(arg);
            return 0;
        }
        if (c->mountpoint == NULL) {
            c->mountpoint = strdup(arg);
            return 1;
        }
        mf_fail(MF_ERR_INVALID, "unexpected argument '%s': give one checkpoint and one mount point (see mcorefs --help)",
                arg);
        return -1;
    }
    return 1;
}

int fs_cli_parse(fs_cli *c, int argc, char *argv[])
{
    memset(c, 0, sizeof(*c));
    mf_options_init(&c->opts);
    c->cache = (fs_cache_opts)FS_CACHE_OPTS_DEFAULT;
    c->fuse = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
    mf_error_clear();
    if (argc > 1 && strcmp(argv[argc - 1], "-o") == 0)   /* else libfuse prints its own line */
        return mf_fail(MF_ERR_INVALID, "-o needs an argument: -o opt[,opt...] (see mcorefs --help)"), -1;
    if (fuse_opt_parse(&c->fuse, c, cli_spec, on_arg) != 0) {
        if (*mf_error() == 0)
            mf_fail(MF_ERR_INVALID, "bad arguments (see mcorefs --help)");
        return -1;
    }
    return 0;
}

void fs_cli_free(fs_cli *c)
{
    mf_options_free(&c->opts);
    free(c->ckpt);
    free(c->mountpoint);
    free(c->log_file);
    fuse_opt_free_args(&c->fuse);
}

char *fs_cli_fsname_arg(const char *ckpt, const char *rest)
{
    size_t n = strlen(ckpt) * 2 + strlen(rest) + 32;
    char *s = malloc(n), *p;
    if (!s)
        return NULL;
    p = s + sprintf(s, "-ofsname=mcorefs:");
    for (const char *q = ckpt; *q; q++) {
        if (*q == ',' || *q == '\\')
            *p++ = '\\';
        *p++ = *q;
    }
    sprintf(p, "%s", rest);
    return s;
}

void fs_cli_usage(const char *prog)
{
    printf("usage: %s CHECKPOINT MOUNTPOINT [-o opt[,opt...]] [-f] [-d] [-s]\n\n"
           "Mount a Megatron-Core checkpoint read-only as a Hugging Face model directory: config.json,\n"
           "model-*.safetensors and model.safetensors.index.json, whose bytes are gathered from the\n"
           "checkpoint's files on read. Both checkpoint formats are read:\n"
           "  torch       (--ckpt-format torch) iter_N/mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt\n"
           "  torch_dist  (--ckpt-format torch_dist, PyTorch DCP) iter_N/.metadata + __R_K.distcp\n"
           "CHECKPOINT is the save folder (with latest_checkpointed_iteration.txt) or one iter_* folder.\n"
           "MOUNTPOINT is an existing directory that is not already an mcorefs mount.\n\n"
           "mcorefs options:\n%s"
           "    -o log=FILE             append the daemon's log lines to FILE instead of syslog\n"
           "    -o iterations=all       mount the whole save folder of a training run: one folder per\n"
           "                            finished iteration (and release/), `latest` -> the tracker's one;\n"
           "                            follows new saves, deletions and re-saves without a remount\n"
           "    -o max_views=N          iterations=all: views kept built at most (LRU, default %u)\n\n"
           "flags:\n"
           "    -f                      stay in the foreground; log lines also go to stderr\n"
           "    -d, -o debug            FUSE debug output on stderr (implies -f)\n"
           "    -s                      single-threaded\n"
           "    -h, --help              this help\n"
           "    -V, --version           mcorefs and libfuse versions\n\n"
           "FUSE options passed on to libfuse (the mount is always read-only; rw is ignored):\n"
           "    -o allow_other          let other users read the mount (non-root: user_allow_other in /etc/fuse.conf)\n"
           "    -o allow_root           let root read the mount\n"
           "    -o auto_unmount         unmount when the daemon dies\n"
           "    -o ro, dev, nodev, suid, nosuid, exec, noexec, atime, noatime, async, sync, dirsync,\n"
           "       default_permissions  generic mount flags (as mount(8) and mount.fuse3 pass them)\n"
           "    -o fsname=NAME, subtype=NAME   names in /proc/mounts (default mcorefs:CHECKPOINT, mcorefs)\n"
           "    -o max_read=N           largest read request in bytes (default %u)\n"
           "    -o max_threads=N, max_idle_threads=N, clone_fd   worker threads (default 32, 32)\n"
           "    -o kernel_cache, auto_cache, noauto_cache, entry_timeout=T, attr_timeout=T,\n"
           "       negative_timeout=T, ac_attr_timeout=T   kernel caching\n"
           "    -o context=, fscontext=, defcontext=, rootcontext=   SELinux labels\n"
           "Any other option is an error.\n\n"
           "Log: once mounted, mcorefs runs in the background and logs (for example a read that fails\n"
           "with EIO) to syslog (facility daemon, tag mcorefs; journalctl -t mcorefs); with -f also to\n"
           "stderr; with -o log=FILE to FILE instead of syslog.\n\n"
           "Exit status: 0 when mounted (the daemon then runs in the background) or after a clean\n"
           "unmount with -f (also after SIGTERM, SIGINT or SIGHUP); 1 for a bad checkpoint, bad\n"
           "options, a bad mount point or a failed mount.\n"
           "Unmount with: fusermount3 -u MOUNTPOINT (or umount MOUNTPOINT as root). See mcorefs(1).\n",
           prog, mf_options_help(), MF_RUN_DEFAULT_MAX_VIEWS, FS_DEFAULT_MAX_READ);
}

void fs_cli_version(void)
{
    printf("mcorefs %s (libfuse %s)\n", MCOREFS_VERSION, fuse_pkgversion());
}
