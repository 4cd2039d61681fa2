#ifndef MCOREFS_FS_LOG_H
#define MCOREFS_FS_LOG_H
/* One-line log messages from the daemon: syslog (daemon facility, tag mcorefs), or the file of
 * -o log=FILE instead; with -f also stderr. */
/* 0, or -1 with mf_error() set when the log file cannot be opened. */
int fs_log_init(int foreground, const char *file);
void fs_log_close(void);
void fs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
