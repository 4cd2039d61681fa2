/* mcorefs-inspect diff: per HF tensor, identical or changed between two views. */
#ifndef MCOREFS_TOOLS_DIFF_H
#define MCOREFS_TOOLS_DIFF_H
#include "mcorefs/view.h"

/* Compare every HF tensor of a and b by name and print a line each (or JSON). Returns 0 when
 * all are identical, 1 when some differ, a negative mf_status on a read error. */
int mf_diff_sessions(const mf_session *a, const mf_session *b, const char *label_a, const char *label_b, int json);
/* `mcorefs-inspect diff A B [--json] [-o opts]` or `diff RUN ITER_A ITER_B` (argv after "diff").
 * Exit status: 0 identical, 2 differences, 1 bad arguments or checkpoints. */
int mf_inspect_diff_main(int argc, char **argv);
#endif
