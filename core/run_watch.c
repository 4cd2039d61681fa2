/* Following a run as it saves: inotify on the save folder (new iteration folders, the tracker
 * rewritten, folders deleted) and on each shown iteration folder (files rewritten in place), on
 * one thread that sleeps in poll() until something happens: no polling loop. Events are gathered
 * for a short moment so that a save writing many files costs a few scans, not one per file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
#include "mcorefs/run.h"

#define DEBOUNCE_MS 30
#define MAX_DIR_WATCHES 4096

struct mf_run_watch {
    int fd;
    int stop_pipe[2];
    pthread_t thread;
    pthread_mutex_t lock;
    void (*on_change)(void *);
    void *arg;
    char **dirs;          /* watched iteration folders (by path), to add each once */
    int *wds;
    size_t n_dirs;
};

static const uint32_t EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB |
                               IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

/* Read and drop every queued event; 1 if there were any. Forget watches the kernel removed. */
static int drain(mf_run_watch *w)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    int any = 0;
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            return any;
        any = 1;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            if (e->mask & IN_IGNORED) {   /* the folder is gone: its path may be watched again later */
                pthread_mutex_lock(&w->lock);
                for (size_t i = 0; i < w->n_dirs; i++)
                    if (w->wds[i] == e->wd) {
                        free(w->dirs[i]);
                        w->dirs[i] = w->dirs[w->n_dirs - 1];
                        w->wds[i] = w->wds[w->n_dirs - 1];
                        w->n_dirs--;
                        break;
                    }
                pthread_mutex_unlock(&w->lock);
            }
            p += sizeof(*e) + e->len;
        }
    }
}

static void *watch_thread(void *arg)
{
    mf_run_watch *w = arg;
    struct pollfd pf[2] = { { w->fd, POLLIN, 0 }, { w->stop_pipe[0], POLLIN, 0 } };
    for (;;) {
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        if (pf[1].revents)
            break;
        if (!(pf[0].revents & POLLIN) || !drain(w))
            continue;
        /* let the burst settle (one scan for many files), unless we are being stopped */
        struct pollfd stop = { w->stop_pipe[0], POLLIN, 0 };
        if (poll(&stop, 1, DEBOUNCE_MS) > 0)
            break;
        drain(w);
        w->on_change(w->arg);
    }
    return NULL;
}

mf_run_watch *mf_run_watch_start(const char *save_dir, void (*on_change)(void *), void *arg)
{
    mf_run_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->on_change = on_change;
    w->arg = arg;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 || inotify_add_watch(w->fd, save_dir, EVENTS) < 0 || pipe2(w->stop_pipe, O_CLOEXEC) != 0) {
        if (w->fd >= 0)
            close(w->fd);
        free(w);
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
        close(w->fd);
        close(w->stop_pipe[0]);
        close(w->stop_pipe[1]);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    return w;
}

void mf_run_watch_add(mf_run_watch *w, const char *iter_dir)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->n_dirs; i++)
        if (strcmp(w->dirs[i], iter_dir) == 0) {
            pthread_mutex_unlock(&w->lock);
            return;
        }
    if (w->n_dirs < MAX_DIR_WATCHES && (w->n_dirs & (w->n_dirs - 1)) == 0) {   /* grow at powers of two */
        size_t cap = w->n_dirs ? w->n_dirs * 2 : 1;
        char **d = realloc(w->dirs, cap * sizeof(*d));
        if (d)
            w->dirs = d;
        int *wd = realloc(w->wds, cap * sizeof(*wd));
        if (wd)
            w->wds = wd;
        if (!d || !wd) {
            pthread_mutex_unlock(&w->lock);
            return;   /* the re-check on lookup still sees changes */
        }
    }
    int wd = w->n_dirs < MAX_DIR_WATCHES ? inotify_add_watch(w->fd, iter_dir, EVENTS) : -1;
    char *copy = wd >= 0 ? strdup(iter_dir) : NULL;
    if (copy) {
        w->dirs[w->n_dirs] = copy;
        w->wds[w->n_dirs++] = wd;
    }
    pthread_mutex_unlock(&w->lock);
}

void mf_run_watch_stop(mf_run_watch *w)
{
    if (!w)
        return;
    ssize_t k;
    do
        k = write(w->stop_pipe[1], "x", 1);
    while (k < 0 && errno == EINTR);
    pthread_join(w->thread, NULL);
    close(w->fd);
    close(w->stop_pipe[0]);
    close(w->stop_pipe[1]);
    for (size_t i = 0; i < w->n_dirs; i++)
        free(w->dirs[i]);
    free(w->dirs);
    free(w->wds);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
