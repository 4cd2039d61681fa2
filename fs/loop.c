/* The FUSE lifetime of the daemon (see loop.h). fuse_main would free libfuse's node tables
 * (fuse_destroy) before our destroy callback runs, while the page-cache invalidation thread
 * (stale.c) may still be walking them through fuse_invalidate_path: so the steps are ours. */
#define FUSE_USE_VERSION 312   /* fuse_loop_cfg_*: the max_threads/max_idle_threads options */
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include "loop.h"
#include "stale.h"

static int serve(struct fuse *fuse, const struct fuse_cmdline_opts *o)
{
    if (o->singlethread)
        return fuse_loop(fuse);
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg)
        return -1;
    fuse_loop_cfg_set_clone_fd(cfg, (unsigned)o->clone_fd);
    fuse_loop_cfg_set_idle_threads(cfg, o->max_idle_threads);
    fuse_loop_cfg_set_max_threads(cfg, o->max_threads);
    int rc = fuse_loop_mt(fuse, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

int fs_run(struct fuse_args *args, const struct fuse_operations *ops, void *data)
{
    struct fuse_cmdline_opts o;
    int rc = 1;
    if (fuse_parse_cmdline(args, &o) != 0)
        return 1;
    struct fuse *fuse = o.mountpoint ? fuse_new(args, ops, sizeof(*ops), data) : NULL;
    if (!fuse)
        goto out;
    if (fuse_mount(fuse, o.mountpoint) == 0) {
        struct fuse_session *se = fuse_get_session(fuse);
        if (fuse_daemonize(o.foreground) == 0 && fuse_set_signal_handlers(se) == 0) {
            rc = serve(fuse, &o) == 0 ? 0 : 1;
            fs_stale_shutdown();   /* before fuse_destroy frees what that thread walks */
            fuse_remove_signal_handlers(se);
        }
        fuse_unmount(fuse);
    }
    fs_stale_shutdown();
    fuse_destroy(fuse);
out:
    free(o.mountpoint);
    return rc;
}
