#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "mcorefs/error.h"

static int to_stderr = 1;
static int log_fd = -1;   /* -o log=FILE; syslog when -1 */

int fs_log_init(int foreground, const char *file)
{
    to_stderr = foreground;
    if (file) {
        /* opened now, before the daemon changes to /, and appended to with one write per line */
        log_fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (log_fd < 0)
            return mf_fail(MF_ERR_IO, "log file %s: %s", file, strerror(errno));
        return 0;
    }
    openlog("mcorefs", LOG_PID, LOG_DAEMON);
    return 0;
}

void fs_log_close(void)
{
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
}

static void write_file_line(const char *msg)
{
    char line[1200], stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(line, sizeof(line), "%s mcorefs[%d]: %s\n", stamp, (int)getpid(), msg);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1, line[n - 1] = '\n';
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;   /* nowhere left to report a failing log */
}

void fs_log(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_fd >= 0)
        write_file_line(msg);
    else
        syslog(LOG_ERR, "%s", msg);
    if (to_stderr)
        fprintf(stderr, "mcorefs: %s\n", msg);
}
