#ifndef MCOREFS_DISCOVER_H
#define MCOREFS_DISCOVER_H
#include <stddef.h>
#include <stdint.h>

/* Resolve a user path (root with tracker, an iter_N folder or release) to an iteration folder. */
int mf_find_iteration(const char *path, int64_t want, char **iter_dir, int64_t *iter, int *release);
/* Sorted mp_rank_* entries of an iteration folder. */
int mf_list_rank_dirs(const char *iter_dir, char ***names, size_t *n);
/* "mp_rank_TT[_PPP][_EEE]" with the field set decided by the PP and EP sizes. 0 or -1. */
int mf_parse_rank_name(const char *name, int64_t pp_size, int64_t ep_size, int *tp, int *pp, int *ep);
#endif
