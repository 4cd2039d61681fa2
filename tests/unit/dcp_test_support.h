/* Helpers shared by the DCP reader's unit tests (test_dcp.c, test_dcp_handmade.c). */
#ifndef MCOREFS_TEST_DCP_SUPPORT_H
#define MCOREFS_TEST_DCP_SUPPORT_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "mcorefs/dcp.h"
#include "mcorefs/error.h"

static inline void open_ok(mf_dcp *d, const char *dir)
{
    if (mf_dcp_open(d, dir) != MF_OK)
        fail_msg("open %s: %s", dir, mf_error());
}

static inline void assert_one_line(void)
{
    const char *m = mf_error();
    assert_true(m[0] != '\0');
    assert_null(strchr(m, '\n'));
}

/* Expect code and a message containing every needle (NULL-terminated list). */
static inline void expect_msg(int rc, int code, ...)
{
    if (rc != code)
        fail_msg("expected %s, got %s: %s", mf_status_name(code), mf_status_name(rc), mf_error());
    assert_one_line();
    va_list ap;
    va_start(ap, code);
    for (const char *n; (n = va_arg(ap, const char *));)
        if (!strstr(mf_error(), n))
            fail_msg("message lacks '%s': %s", n, mf_error());
    va_end(ap);
}

static inline const mf_dcp_chunk *find_chunk(const mf_dcp_tensor *t, const int64_t *off)
{
    for (size_t i = 0; i < t->n_chunks; i++)
        if (memcmp(t->chunks[i].offsets, off, (size_t)t->ndim * sizeof *off) == 0)
            return &t->chunks[i];
    return NULL;
}

static inline char *path_in(const char *dir, const char *name)
{
    static char buf[4][4400];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 4400, "%s/%s", dir, name);
    return b;
}

#endif
