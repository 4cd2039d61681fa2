/* Dropping the mount's cached pages after a rank file changed under it. */
#define FUSE_USE_VERSION 31
#include <fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "stale.h"

static int pending, running, stopped;
static struct fuse *target_fuse;
static const mf_session *target_session;

static void invalidate_all(void)
{
    const mf_session *s = __atomic_load_n(&target_session, __ATOMIC_ACQUIRE);
    struct fuse *fuse = __atomic_load_n(&target_fuse, __ATOMIC_ACQUIRE);
    char path[4096];
    for (size_t i = 0; i < s->n_files && !__atomic_load_n(&stopped, __ATOMIC_ACQUIRE); i++) {
        if (s->files[i].kind != MF_VF_SAFETENSORS)
            continue;
        snprintf(path, sizeof(path), "/%s", s->files[i].name);
        fuse_invalidate_path(fuse, path);   /* -ENOENT when never looked up: nothing cached */
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

void fs_source_changed(struct fuse *fuse, const mf_session *s)
{
    if (__atomic_load_n(&stopped, __ATOMIC_ACQUIRE))
        return;   /* the loop has ended: the kernel has dropped the mount's pages anyway */
    __atomic_store_n(&target_fuse, fuse, __ATOMIC_RELEASE);
    __atomic_store_n(&target_session, s, __ATOMIC_RELEASE);
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
