#ifndef MCOREFS_FS_LOG_H
#define MCOREFS_FS_LOG_H
/* One-line log messages from the daemon: stderr in the foreground, syslog always. */
void fs_log_init(int foreground);
void fs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
