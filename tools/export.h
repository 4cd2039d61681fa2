#ifndef MCOREFS_TOOLS_EXPORT_H
#define MCOREFS_TOOLS_EXPORT_H
#include "mcorefs/view.h"
/* Write every file of the view into outdir (atomically, with progress on stderr). */
int mf_export(const mf_session *s, const char *outdir, int force);
#endif
