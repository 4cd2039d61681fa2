/* Helpers shared by the cmocka unit tests (paths, files, running Python). */
#include "unit_support.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include "mcorefs/options.h"
#include "mcorefs/view.h"

#ifndef MCOREFS_TEST_DATA
#define MCOREFS_TEST_DATA "tests/data"
#endif
#ifndef MCOREFS_TEST_TMP
#define MCOREFS_TEST_TMP "/tmp/mcorefs-test"
#endif

static char *ring(void)
{
    static char bufs[8][4096];
    static unsigned next;
    return bufs[next++ % 8];
}

const char *us_data(const char *rel)
{
    char *b = ring();
    snprintf(b, 4096, "%s/%s", MCOREFS_TEST_DATA, rel);
    return b;
}

static void mkdirs(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

const char *us_tmp(const char *name)
{
    char *b = ring();
    mkdirs(MCOREFS_TEST_TMP);
    snprintf(b, 4096, "%s/%s_%s", MCOREFS_TEST_TMP, program_invocation_short_name, name);
    return b;
}

uint8_t *us_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            uint8_t *nb = realloc(buf, cap + 65536 + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap += 65536;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

int us_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

int us_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

const char *us_python(void)
{
    const char *p = getenv("MCOREFS_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

int us_run_python(const char *script, const char *const *args)
{
    char spath[4096];
    static unsigned seq;
    snprintf(spath, sizeof spath, "%s", us_tmp("script"));
    snprintf(spath + strlen(spath), sizeof spath - strlen(spath), "_%u.py", seq++);
    if (us_write_file(spath, script, strlen(script)))
        return -1;
    const char *argv[32] = {us_python(), spath};
    int n = 2;
    for (; args && args[n - 2] && n < 31; n++)
        argv[n] = args[n - 2];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    unlink(spath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int us_have_torch(void)
{
    static int cached = -1;
    if (cached < 0)
        cached = us_run_python("import torch, numpy\n", NULL) == 0;
    return cached;
}

/* ---- tiny zip writer ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} ubuf;

static void put(ubuf *b, const void *d, size_t n)
{
    if (b->cap - b->n < n) {
        b->cap = (b->cap + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put16(ubuf *b, unsigned v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}

static void put32(ubuf *b, uint64_t v)
{
    put16(b, (unsigned)(v & 0xffff));
    put16(b, (unsigned)((v >> 16) & 0xffff));
}

static void put64(ubuf *b, uint64_t v)
{
    put32(b, v & 0xffffffffu);
    put32(b, v >> 32);
}

int us_write_zip(const char *path, const us_zip_item *it, size_t n, int zip64_eocd)
{
    ubuf b = {0}, cd = {0};
    for (size_t i = 0; i < n; i++) {
        uint64_t off = b.n;
        size_t nl = strlen(it[i].name);
        put(&b, "PK\x03\x04", 4);
        put16(&b, 20), put16(&b, 0), put16(&b, it[i].method), put16(&b, 0), put16(&b, 0);
        put32(&b, 0), put32(&b, it[i].len), put32(&b, it[i].len);
        put16(&b, (unsigned)nl), put16(&b, 0);
        put(&b, it[i].name, nl);
        put(&b, it[i].data, it[i].len);

        int x = it[i].zip64_extra;
        put(&cd, "PK\x01\x02", 4);
        put16(&cd, 45), put16(&cd, 45), put16(&cd, 0), put16(&cd, it[i].method), put16(&cd, 0), put16(&cd, 0);
        put32(&cd, 0);
        put32(&cd, x ? 0xffffffffu : it[i].len), put32(&cd, x ? 0xffffffffu : it[i].len);
        put16(&cd, (unsigned)nl), put16(&cd, x ? 28 : 0), put16(&cd, 0), put16(&cd, 0), put16(&cd, 0);
        put32(&cd, 0), put32(&cd, x ? 0xffffffffu : off);
        put(&cd, it[i].name, nl);
        if (x) {
            put16(&cd, 1), put16(&cd, 24);
            put64(&cd, it[i].len), put64(&cd, it[i].len), put64(&cd, off);
        }
    }
    uint64_t cd_off = b.n;
    put(&b, cd.p, cd.n);
    free(cd.p);
    if (zip64_eocd) {
        uint64_t z64 = b.n;
        put(&b, "PK\x06\x06", 4);
        put64(&b, 44), put16(&b, 45), put16(&b, 45), put32(&b, 0), put32(&b, 0);
        put64(&b, n), put64(&b, n), put64(&b, cd.n), put64(&b, cd_off);
        put(&b, "PK\x06\x07", 4);
        put32(&b, 0), put64(&b, z64), put32(&b, 1);
    }
    put(&b, "PK\x05\x06", 4);
    put16(&b, 0), put16(&b, 0);
    put16(&b, zip64_eocd ? 0xffff : (unsigned)n), put16(&b, zip64_eocd ? 0xffff : (unsigned)n);
    put32(&b, zip64_eocd ? 0xffffffffu : cd.n), put32(&b, zip64_eocd ? 0xffffffffu : cd_off);
    put16(&b, 0);
    int rc = us_write_file(path, b.p, b.n);
    free(b.p);
    return rc;
}

uint8_t *us_gather_strided(int fd, const mf_tensor *t, size_t *len)
{
    size_t es = mf_dtype_size(t->dtype), cnt = 1;
    for (int d = 0; d < t->ndim; d++)
        cnt *= (size_t)t->shape[d];
    uint8_t *out = malloc(cnt * es + 1);
    int64_t idx[MF_MAX_DIMS] = {0};
    if (!out)
        return NULL;
    for (size_t k = 0; k < cnt; k++) {
        uint64_t off = t->offset;
        for (int d = 0; d < t->ndim; d++)
            off += (uint64_t)(idx[d] * t->stride[d]) * es;
        if (off < t->storage_begin || off + es > t->storage_begin + t->storage_bytes ||
            pread(fd, out + k * es, es, (off_t)off) != (ssize_t)es) {
            free(out);
            return NULL;
        }
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d])
                break;
            idx[d] = 0;
        }
    }
    *len = cnt * es;
    return out;
}

void us_pk_raw(us_pickle *p, const void *d, size_t n)
{
    if (p->n + n > p->cap) {
        size_t cap = (p->n + n) * 2 + 256;
        uint8_t *b = realloc(p->b, cap);
        if (!b)
            abort();
        p->b = b;
        p->cap = cap;
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

void us_pk_ops(us_pickle *p, const char *s) { us_pk_raw(p, s, strlen(s)); }

void us_pk_str(us_pickle *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    uint8_t h[5] = {'X', (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    us_pk_raw(p, h, 5);
    us_pk_raw(p, s, n);
}

void us_pk_long(us_pickle *p, int64_t v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t h[10] = {0x8a, 8};
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(u >> (8 * i));
    us_pk_raw(p, h, 10);
}

cJSON *us_config_of(const mf_model *m)
{
    mf_checkpoint ck;
    mf_options o;
    memset(&ck, 0, sizeof(ck));
    ck.model = *m;
    mf_options_init(&o);
    char *text = mf_config_build(&ck, &o, NULL);
    assert_non_null(text);
    cJSON *c = cJSON_Parse(text);
    free(text);
    assert_non_null(c);
    return c;
}
