/* The export's workers: every output file cut into ranges, the ranges shared by a few threads
 * (gathering in one overlaps writing in another), progress drawn on stderr meanwhile. */
#ifndef MCOREFS_TOOLS_EXPORT_POOL_H
#define MCOREFS_TOOLS_EXPORT_POOL_H
#include <signal.h>
#include <stdint.h>
#include "mcorefs/view.h"

typedef struct {
    const mf_vfile *file;
    int fd;              /* the open partial file */
    const char *name;    /* its path, for messages */
} export_target;

typedef struct {
    int threads;         /* 0: the default */
    int kernel_copy;     /* 0: pread/pwrite only */
} export_pool_opts;

typedef struct {
    uint64_t bytes, kernel_bytes, user_bytes;
    int threads;
    double seconds;
} export_pool_stats;

/* The default number of threads (4). */
int export_pool_default_threads(void);

/* Write every target. MF_OK, or the first worker's failure (its message in mf_error()); *stop
 * (set by a signal handler) stops the workers after their current range. */
int export_pool_run(const mf_session *s, const export_target *t, size_t n, const export_pool_opts *o,
                    const volatile sig_atomic_t *stop, export_pool_stats *st);

#endif
