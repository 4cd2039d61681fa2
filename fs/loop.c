/* The FUSE lifetime of the daemon (see loop.h): the steps of libfuse's low-level example, with
 * the page-cache invalidation thread (stale.c) stopped before the session it notifies goes. */
#include <stdlib.h>
#include "loop.h"
#include "stale.h"

static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *o)
{
    if (o->singlethread)
        return fuse_session_loop(se);
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg)
        return -1;
    fuse_loop_cfg_set_clone_fd(cfg, (unsigned)o->clone_fd);
    fuse_loop_cfg_set_idle_threads(cfg, o->max_idle_threads);
    fuse_loop_cfg_set_max_threads(cfg, o->max_threads);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

int fs_run(struct fuse_args *args, const struct fuse_lowlevel_ops *ops, void *data,
           void (*serving)(struct fuse_session *se))
{
    struct fuse_cmdline_opts o;
    int rc = 1;
    if (fuse_parse_cmdline(args, &o) != 0)
        return 1;
    struct fuse_session *se = o.mountpoint ? fuse_session_new(args, ops, sizeof(*ops), data) : NULL;
    if (!se)
        goto out;
    if (fuse_session_mount(se, o.mountpoint) == 0) {
        if (fuse_daemonize(o.foreground) == 0 && fuse_set_signal_handlers(se) == 0) {
            fs_stale_attach(se);
            serving(se);
            rc = serve(se, &o) == 0 ? 0 : 1;
            serving(NULL);
            fs_stale_shutdown();   /* before the session it notifies is destroyed */
            fuse_remove_signal_handlers(se);
        }
        fuse_session_unmount(se);
    }
    fs_stale_shutdown();
    fuse_session_destroy(se);
out:
    free(o.mountpoint);
    return rc;
}
