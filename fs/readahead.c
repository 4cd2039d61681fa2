/* Raise the mount's readahead so the kernel sends 1 MiB read requests instead of 128 KiB ones
 * (fewer round trips through the daemon). The kernel keeps it per backing device of the mount,
 * under /sys/class/bdi/MAJOR:MINOR/; it can only be set once the mount exists, so a helper
 * thread started from init does it while the loop serves the stat() it needs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "log.h"
#include "readahead.h"

typedef struct {
    char *mountpoint;
    long long kb;
} ra_job;

static void *tune(void *arg)
{
    ra_job *j = arg;
    struct stat st;
    char path[128];
    if (stat(j->mountpoint, &st) == 0) {
        snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%lld\n", j->kb);
            if (fclose(f) != 0)
                fs_log("could not set %s to %lld", path, j->kb);
        }   /* not root: keep the kernel default quietly */
    }
    free(j->mountpoint);
    free(j);
    return NULL;
}

void fs_tune_readahead(const char *mountpoint, long long kb)
{
    pthread_t t;
    pthread_attr_t attr;
    if (!mountpoint || kb < 0)
        return;
    ra_job *j = malloc(sizeof(*j));
    if (!j)
        return;
    j->mountpoint = strdup(mountpoint);
    j->kb = kb;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!j->mountpoint || pthread_create(&t, &attr, tune, j) != 0) {
        free(j->mountpoint);
        free(j);
    }
    pthread_attr_destroy(&attr);
}
