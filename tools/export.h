#ifndef MCOREFS_TOOLS_EXPORT_H
#define MCOREFS_TOOLS_EXPORT_H
#include "mcorefs/view.h"

typedef struct {
    int force;      /* write into an OUTDIR that already holds the files */
    int no_sync;    /* skip the syncfs at the end (the files may not be on disk yet when it returns) */
    int threads;    /* workers; 0: the default (export_pool_default_threads) */
} mf_export_opts;

/* Write every file of the view into outdir (atomically, with progress on stderr). */
int mf_export(const mf_session *s, const char *outdir, const mf_export_opts *o);
#endif
