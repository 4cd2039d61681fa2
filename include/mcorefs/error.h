/* One error-message helper for the whole library.
 * Library code never prints or exits: it returns a negative mf_status and leaves a one-line,
 * human-readable message (naming the file and the problem) in a thread-local buffer. */
#ifndef MCOREFS_ERROR_H
#define MCOREFS_ERROR_H

#include <stddef.h>

typedef enum {
    MF_OK = 0,
    MF_ERR_IO = -1,          /* open/read/stat failed */
    MF_ERR_FORMAT = -2,      /* malformed or corrupt input (zip, pickle, tensor record) */
    MF_ERR_UNSUPPORTED = -3, /* well-formed but outside what mcorefs supports */
    MF_ERR_MISSING = -4,     /* a required file, shard or field is absent */
    MF_ERR_INCONSISTENT = -5,/* files disagree with each other or with args */
    MF_ERR_NOMEM = -6,
    MF_ERR_INVALID = -7,     /* bad option or argument */
    MF_ERR_LIMIT = -8,       /* a safety limit was hit (nesting, sizes, memory budget) */
    MF_ERR_CHANGED = -9,     /* a source file changed after mount (rewritten in place) */
} mf_status;

/* Record a printf-style message for the calling thread and return `code` (always < 0). */
int mf_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "context: " (e.g. a file name) and return `code`. */
int mf_fail_ctx(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The calling thread's last message ("" if none). */
const char *mf_error(void);
void mf_error_clear(void);
/* Short name for a status code ("format error", ...). */
const char *mf_status_name(int code);

#endif
