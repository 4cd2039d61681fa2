/* Dropping the mount's cached pages after a rank file changed under it. */
#include "ops.h"   /* FUSE_USE_VERSION, fuse_lowlevel.h */
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "stale.h"

static int pending, running, stopped;
static struct fuse_session *target_session;
static const fs_tree *target_tree;

static void invalidate_all(void)
{
    const fs_tree *t = __atomic_load_n(&target_tree, __ATOMIC_ACQUIRE);
    struct fuse_session *se = __atomic_load_n(&target_session, __ATOMIC_ACQUIRE);
    const mf_session *s = fs_tree_view(t, 0);
    if (!s)
        return;   /* a run mount: each generation has its own inodes; a changed file reads EIO */
    for (size_t i = 0; i < s->n_files && !__atomic_load_n(&stopped, __ATOMIC_ACQUIRE); i++) {
        if (s->files[i].kind != MF_VF_SAFETENSORS)
            continue;
        /* -ENOENT when the kernel never looked it up: nothing cached */
        fuse_lowlevel_notify_inval_inode(se, fs_tree_file_ino(0, i), 0, 0);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        while (__atomic_exchange_n(&pending, 0, __ATOMIC_ACQ_REL))
            invalidate_all();
        __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
        /* a request that came in after the loop saw pending == 0 but before running was cleared */
        if (!__atomic_load_n(&pending, __ATOMIC_ACQUIRE) || __atomic_exchange_n(&running, 1, __ATOMIC_ACQ_REL))
            return NULL;
    }
}

void fs_stale_attach(struct fuse_session *se) { __atomic_store_n(&target_session, se, __ATOMIC_RELEASE); }

void fs_source_changed(const fs_tree *tree)
{
    if (__atomic_load_n(&stopped, __ATOMIC_ACQUIRE))
        return;   /* the loop has ended: the kernel has dropped the mount's pages anyway */
    __atomic_store_n(&target_tree, tree, __ATOMIC_RELEASE);
    __atomic_store_n(&pending, 1, __ATOMIC_RELEASE);
    if (__atomic_exchange_n(&running, 1, __ATOMIC_ACQ_REL))
        return;   /* the running worker sees pending */
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, worker, NULL) != 0) {
        __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
        fs_log("cannot start the page-cache invalidation thread; cached pages are kept until files are reopened");
    }
    pthread_attr_destroy(&a);
}

void fs_stale_shutdown(void)
{
    __atomic_store_n(&stopped, 1, __ATOMIC_RELEASE);
    fs_stale_wait();
}

void fs_stale_wait(void)
{
    while (__atomic_load_n(&running, __ATOMIC_ACQUIRE))
        usleep(1000);
}
