/* Thread-local, one-line error messages. */
#include "mcorefs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MF_ERRBUF 1024

static _Thread_local char errbuf[MF_ERRBUF];

/* Messages are single lines: newlines/CRs/tabs become spaces. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
}

int mf_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    one_line(errbuf);
    return code < 0 ? code : MF_ERR_INVALID;
}

int mf_fail_ctx(int code, const char *fmt, ...)
{
    char old[MF_ERRBUF];
    memcpy(old, errbuf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    size_t used = n < 0 ? 0 : (size_t)n < sizeof errbuf ? (size_t)n : sizeof errbuf - 1;
    if (old[0] && used + 2 < sizeof errbuf) {
        memcpy(errbuf + used, ": ", 2);
        used += 2;
        size_t ol = strlen(old), room = sizeof errbuf - 1 - used;
        memcpy(errbuf + used, old, ol < room ? ol : room);
        errbuf[used + (ol < room ? ol : room)] = '\0';
    }
    one_line(errbuf);
    return code < 0 ? code : MF_ERR_INVALID;
}

const char *mf_error(void) { return errbuf; }

void mf_error_clear(void) { errbuf[0] = '\0'; }

const char *mf_status_name(int code)
{
    switch (code) {
    case MF_OK: return "ok";
    case MF_ERR_IO: return "I/O error";
    case MF_ERR_FORMAT: return "format error";
    case MF_ERR_UNSUPPORTED: return "unsupported";
    case MF_ERR_MISSING: return "missing";
    case MF_ERR_INCONSISTENT: return "inconsistent";
    case MF_ERR_NOMEM: return "out of memory";
    case MF_ERR_INVALID: return "invalid argument";
    case MF_ERR_LIMIT: return "limit exceeded";
    case MF_ERR_CHANGED: return "source changed";
    default: return "unknown error";
    }
}
