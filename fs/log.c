#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include "log.h"

static int to_stderr = 1;

void fs_log_init(int foreground)
{
    to_stderr = foreground;
    openlog("mcorefs", LOG_PID, LOG_DAEMON);
}

void fs_log(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    syslog(LOG_ERR, "%s", msg);
    if (to_stderr)
        fprintf(stderr, "mcorefs: %s\n", msg);
}
