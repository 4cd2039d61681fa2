#ifndef MCOREFS_FS_CLI_H
#define MCOREFS_FS_CLI_H
/* The daemon's command line: our -o options, the FUSE options we accept, help and version. */
#include "ops.h"
#include "mcorefs/options.h"

typedef struct {
    mf_options opts;
    char *ckpt;
    char *mountpoint;        /* as given */
    char *log_file;          /* -o log=FILE, absolute (the daemon changes to /) */
    int show_help, show_version, foreground;
    int all_iterations;      /* -o iterations=all: mount the whole run (fs/run_tree.c) */
    unsigned max_views;      /* -o max_views=N (run mounts; 0: the default) */
    unsigned max_read;       /* -o max_read=N as given (0: the default) */
    fs_cache_opts cache;     /* -o entry_timeout=, attr_timeout=, negative_timeout= (ours now) */
    unsigned cache_given;    /* which of them were given: bit 0 entry, 1 attr, 2 negative */
    struct fuse_args fuse;   /* what goes on to libfuse: argv[0], flags, accepted -o options */
} fs_cli;

/* 0, or -1 with a one-line message in mf_error(). */
int fs_cli_parse(fs_cli *c, int argc, char *argv[]);
void fs_cli_free(fs_cli *c);
void fs_cli_usage(const char *prog);
void fs_cli_version(void);
/* "-ofsname=mcorefs:CKPT,..." with ',' and '\' in CKPT escaped for libfuse's option parser. */
char *fs_cli_fsname_arg(const char *ckpt, const char *rest);
#endif
