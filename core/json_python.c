/* Python-compatible JSON output (see json_python.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json_python.h"
#include "json_util.h"
#include "mcorefs/error.h"

/* Decode one UTF-8 sequence at s; returns its length (1 with U+FFFD for a malformed byte). */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    size_t n = s[0] >= 0xf0 && s[0] < 0xf5 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    uint32_t v = n == 4 ? s[0] & 0x07u : n == 3 ? s[0] & 0x0fu : s[0] & 0x1fu;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            n = 0;
            break;
        }
        v = v << 6 | (s[i] & 0x3fu);
    }
    if (n == 0 || (n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff)) || (v >= 0xd800 && v < 0xe000)) {
        *cp = 0xfffd;
        return 1;
    }
    *cp = v;
    return n;
}

/* A string as json.dumps writes it with ensure_ascii: only printable ASCII is written as is. */
static void put_string(mf_jbuf *b, const char *str)
{
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    mf_jbuf_add(b, "\"", 1);
    while (*s) {
        uint32_t cp = *s;
        size_t n = 1;
        if (cp >= 0x80)
            n = utf8_next(s, &cp);
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\n' ? "\\n" : cp == '\r' ? "\\r"
                        : cp == '\t' ? "\\t" : cp == '\b' ? "\\b" : cp == '\f' ? "\\f" : NULL;
        if (esc)
            mf_jbuf_add(b, esc, 2);
        else if (cp >= 0x20 && cp < 0x7f)
            mf_jbuf_add(b, (const char *)s, 1);
        else if (cp < 0x10000)
            mf_jbuf_printf(b, "\\u%04x", (unsigned)cp);
        else   /* a surrogate pair, as Python writes characters outside the BMP */
            mf_jbuf_printf(b, "\\u%04x\\u%04x", (unsigned)(0xd800 + ((cp - 0x10000) >> 10)),
                           (unsigned)(0xdc00 + ((cp - 0x10000) & 0x3ff)));
        s += n;
    }
    mf_jbuf_add(b, "\"", 1);
}

static void put_indent(mf_jbuf *b, int depth)
{
    mf_jbuf_add(b, "\n", 1);
    for (int i = 0; i < depth; i++)
        mf_jbuf_add(b, "  ", 2);
}

typedef struct {
    const cJSON *item;
    size_t pos;   /* position in the object: a stable sort keeps duplicates in order */
} member;

static int cmp_member(const void *a, const void *b)
{
    const member *x = a, *y = b;
    int c = strcmp(x->item->string ? x->item->string : "", y->item->string ? y->item->string : "");
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

static int put_value(mf_jbuf *b, const cJSON *v, int depth);

static int put_object(mf_jbuf *b, const cJSON *o, int depth)
{
    size_t n = 0, k = 0;
    for (const cJSON *c = o->child; c; c = c->next)
        n++;
    if (n == 0) {
        mf_jbuf_add(b, "{}", 2);
        return MF_OK;
    }
    member *m = malloc(n * sizeof(*m));
    if (!m)
        return MF_ERR_NOMEM;
    for (const cJSON *c = o->child; c; c = c->next, k++)
        m[k] = (member){ c, k };
    qsort(m, n, sizeof(*m), cmp_member);
    int rc = MF_OK, first = 1;
    mf_jbuf_add(b, "{", 1);
    for (size_t i = 0; i < n && rc == MF_OK; i++) {
        if (i + 1 < n && cmp_member(&(member){ m[i].item, 0 }, &(member){ m[i + 1].item, 0 }) == 0)
            continue;   /* a duplicate key: the last one wins */
        if (!first)
            mf_jbuf_add(b, ",", 1);
        first = 0;
        put_indent(b, depth + 1);
        put_string(b, m[i].item->string);
        mf_jbuf_add(b, ": ", 2);
        rc = put_value(b, m[i].item, depth + 1);
    }
    free(m);
    put_indent(b, depth);
    mf_jbuf_add(b, "}", 1);
    return rc;
}

static int put_value(mf_jbuf *b, const cJSON *v, int depth)
{
    char num[64];
    if (depth > 200)
        return MF_ERR_LIMIT;
    if (cJSON_IsObject(v))
        return put_object(b, v, depth);
    if (cJSON_IsArray(v)) {
        if (!v->child) {
            mf_jbuf_add(b, "[]", 2);
            return MF_OK;
        }
        mf_jbuf_add(b, "[", 1);
        for (const cJSON *c = v->child; c; c = c->next) {
            put_indent(b, depth + 1);
            int rc = put_value(b, c, depth + 1);
            if (rc != MF_OK)
                return rc;
            if (c->next)
                mf_jbuf_add(b, ",", 1);
        }
        put_indent(b, depth);
        mf_jbuf_add(b, "]", 1);
    } else if (cJSON_IsString(v)) {
        put_string(b, v->valuestring);
    } else if (cJSON_IsRaw(v)) {
        mf_jbuf_add(b, v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsNumber(v)) {   /* built here (floats are Raw): a whole number is an int */
        double d = v->valuedouble;
        if (d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(long long)d)
            snprintf(num, sizeof(num), "%lld", (long long)d);
        else
            mf_format_float(d, num, sizeof(num));
        mf_jbuf_add(b, num, strlen(num));
    } else if (cJSON_IsBool(v)) {
        mf_jbuf_add(b, cJSON_IsTrue(v) ? "true" : "false", cJSON_IsTrue(v) ? 4 : 5);
    } else {
        mf_jbuf_add(b, "null", 4);
    }
    return MF_OK;
}

char *mf_json_print_python(const cJSON *root)
{
    mf_jbuf b = {0};
    int rc = put_value(&b, root, 0);
    mf_jbuf_add(&b, "\n", 1);
    if (rc != MF_OK || b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* The next number token of a JSON text at or after *at (outside strings); its length, or 0. */
static size_t next_number(const char *text, size_t *at)
{
    size_t i = *at;
    for (; text[i]; i++) {
        if (text[i] == '"') {
            for (i++; text[i] && text[i] != '"'; i++)
                if (text[i] == '\\' && text[i + 1])
                    i++;
            if (!text[i])
                return 0;
        } else if (text[i] == '-' || (text[i] >= '0' && text[i] <= '9')) {
            size_t n = strspn(text + i, "0123456789+-.eE");
            *at = i;
            return n;
        }
    }
    return 0;
}

/* Python's spelling of a number token: an int keeps its digits (only -0 becomes 0); a float is
 * read as a double and written as repr() writes it. */
static cJSON *python_number(const char *tok, size_t n)
{
    char buf[512], out[64];
    if (n >= sizeof(buf))
        return NULL;
    memcpy(buf, tok, n);
    buf[n] = 0;
    if (strpbrk(buf, ".eE") == NULL)
        return cJSON_CreateRaw(strspn(buf, "-0") == n ? "0" : buf);
    mf_format_float(strtod(buf, NULL), out, sizeof(out));
    return cJSON_CreateRaw(out);
}

static int keep_numbers(cJSON *node, const char *text, size_t *at, int depth)
{
    if (depth > 200)
        return MF_ERR_LIMIT;
    for (cJSON *c = node->child, *next; c; c = next) {
        next = c->next;
        if (cJSON_IsNumber(c)) {   /* cJSON keeps every member in order, duplicates too */
            size_t n = next_number(text, at);
            cJSON *raw = n ? python_number(text + *at, n) : NULL;
            if (!raw)
                return MF_ERR_FORMAT;
            *at += n;
            raw->string = c->string;   /* the key moves over; c is freed without it */
            c->string = NULL;
            cJSON_ReplaceItemViaPointer(node, c, raw);
        } else if (cJSON_IsObject(c) || cJSON_IsArray(c)) {
            int rc = keep_numbers(c, text, at, depth + 1);
            if (rc != MF_OK)
                return rc;
        }
    }
    return MF_OK;
}

int mf_json_keep_numbers(cJSON *tree, const char *text)
{
    size_t at = 0;
    return keep_numbers(tree, text, &at, 0);
}
