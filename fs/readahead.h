#ifndef MCOREFS_FS_READAHEAD_H
#define MCOREFS_FS_READAHEAD_H
/* Set the mount's read_ahead_kb from a background thread (kb < 0: leave it). */
void fs_tune_readahead(const char *mountpoint, long long kb);
#endif
