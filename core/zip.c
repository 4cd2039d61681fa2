/* Reader for the STORED (optionally ZIP64) archives written by torch.save.
 * All offsets inside the archive are relative to z->base; every number read from the file is
 * bounds-checked against the window before use. Only pread is used (no mmap), so the reader
 * never faults on a file that shrinks underneath it. */
#include "mcorefs/zip.h"
#include "file_io.h"
#include "mcorefs/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EOCD_SIZE 22
#define EOCD_MAX_COMMENT 65535
#define Z64_LOC_SIZE 20
#define Z64_EOCD_SIZE 56
#define CDH_SIZE 46
#define LFH_SIZE 30
#define MAX_ENTRIES (1u << 24)         /* far beyond any checkpoint */
#define MAX_CD_BYTES (512ull << 20)   /* central directory read into memory */
#define CACHE_BLOCK 4096               /* bytes cached at each end of the window */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Read exactly n bytes at window offset off: 0, 1 if they pass the end of the window or file,
 * or -1 on a read error (the message, naming the file, is set). */
static int rd(const mf_zip *z, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    if (off > z->len || n > z->len - off)
        return 1;
    if (z->cache && (off + n <= z->head_n || z->tail_off == z->head_n)) { /* head, or all of it */
        memcpy(p, z->cache + off, n);
        return 0;
    }
    if (z->cache && off >= z->tail_off) {
        memcpy(p, z->cache + z->head_n + (off - z->tail_off), n);
        return 0;
    }
    size_t got;
    if (mf_pread_upto(z->fd, z->path, p, n, z->base + off, &got) != MF_OK)
        return -1;
    return got < n;
}

/* The error for a failed rd() (how: what it returned) of `what` at window offset off. */
static int io_fail(const mf_zip *z, int how, const char *what, uint64_t off)
{
    if (how < 0)
        return mf_fail_ctx(MF_ERR_IO, "reading %s of a zip", what);
    return mf_fail(MF_ERR_FORMAT, "%s: truncated zip: %s at %llu extends past end of file (size %llu)", z->path, what,
                   (unsigned long long)off, (unsigned long long)z->len);
}

/* Read both ends of the window once (one pread when they meet); rd() serves from them. */
static int fill_cache(mf_zip *z)
{
    uint64_t head = z->len < CACHE_BLOCK ? z->len : CACHE_BLOCK;
    uint64_t tail = z->len - head < CACHE_BLOCK ? z->len - head : CACHE_BLOCK;
    uint8_t *c = malloc(head + tail + 1);
    if (!c)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", z->path);
    uint64_t tail_off = z->len - tail;
    int bad = tail_off == head ? rd(z, c, head + tail, 0) : rd(z, c, head, 0);
    if (!bad && tail_off != head)
        bad = rd(z, c + head, tail, tail_off);
    if (bad) {
        int rc = io_fail(z, bad, "archive", 0);
        free(c);
        return rc;
    }
    z->cache = c;
    z->head_n = head;
    z->tail_off = tail_off;
    return MF_OK;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const mf_zip_entry *)a)->name, ((const mf_zip_entry *)b)->name);
}

/* Last PK\5\6 in buf (the last n bytes of the window) whose comment ends exactly at the end. */
static int64_t scan_eocd(const uint8_t *buf, uint64_t n)
{
    for (int64_t i = (int64_t)n - EOCD_SIZE; i >= 0; i--) {
        const uint8_t *p = buf + i;
        if (p[0] == 'P' && p[1] == 'K' && p[2] == 5 && p[3] == 6 && (uint64_t)i + EOCD_SIZE + le16(p + 20) == n)
            return i;
    }
    return -1;
}

/* Locate the classic EOCD (and the ZIP64 one if present); fills cd offset/size/count. */
static int find_cd(mf_zip *z, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count)
{
    /* torch.save writes no comment, so the record is in the cached end of the window; scanning
     * back over that shorter tail finds the same (last) match as over the full 64 KiB one. */
    int whole = z->tail_off == z->head_n;
    uint64_t tail = whole ? z->len : z->len - z->tail_off;
    const uint8_t *buf = whole ? z->cache : z->cache + z->head_n;
    uint8_t *own = NULL;
    int64_t pos = tail >= EOCD_SIZE ? scan_eocd(buf, tail) : -1;
    uint64_t full = z->len < EOCD_SIZE + EOCD_MAX_COMMENT ? z->len : EOCD_SIZE + EOCD_MAX_COMMENT;
    if (pos < 0 && full > tail) {
        tail = full;
        if (!(own = malloc(tail)))
            return mf_fail(MF_ERR_NOMEM, "%s: out of memory", z->path);
        int bad = rd(z, own, tail, z->len - tail);
        if (bad) {
            free(own);
            return io_fail(z, bad, "end of central directory", z->len - tail);
        }
        buf = own;
        pos = scan_eocd(buf, tail);
    }
    uint64_t tail_off = z->len - tail;
    if (pos < 0) {
        free(own);
        return mf_fail(MF_ERR_FORMAT, "%s: truncated zip: no end-of-central-directory record in the last %llu bytes",
                       z->path, (unsigned long long)tail);
    }
    const uint8_t *e = buf + pos;
    uint64_t eocd_off = tail_off + (uint64_t)pos;
    *count = le16(e + 10);
    *cd_size = le32(e + 12);
    *cd_off = le32(e + 16);
    uint8_t loc[Z64_LOC_SIZE];
    int have_loc = eocd_off >= Z64_LOC_SIZE && rd(z, loc, sizeof loc, eocd_off - Z64_LOC_SIZE) == 0 &&
                   memcmp(loc, "PK\x06\x07", 4) == 0;
    free(own);
    if (!have_loc) {
        if (*count == 0xFFFF || *cd_size == 0xFFFFFFFFu || *cd_off == 0xFFFFFFFFu)
            return mf_fail(MF_ERR_FORMAT, "%s: bad zip: ZIP64 markers in end-of-central-directory but no ZIP64 locator", z->path);
    } else {
        uint64_t z64_off = le64(loc + 8);
        uint8_t r[Z64_EOCD_SIZE];
        if (z64_off > eocd_off - Z64_LOC_SIZE || eocd_off - Z64_LOC_SIZE - z64_off < Z64_EOCD_SIZE)
            return mf_fail(MF_ERR_FORMAT, "%s: bad zip: ZIP64 end-of-central-directory offset %llu out of range",
                           z->path, (unsigned long long)z64_off);
        int bad = rd(z, r, sizeof r, z64_off);
        if (bad)
            return io_fail(z, bad, "ZIP64 end of central directory", z64_off);
        if (memcmp(r, "PK\x06\x06", 4) != 0)
            return mf_fail(MF_ERR_FORMAT, "%s: bad zip: no ZIP64 end-of-central-directory signature at %llu", z->path,
                           (unsigned long long)z64_off);
        *count = le64(r + 32);
        *cd_size = le64(r + 40);
        *cd_off = le64(r + 48);
        eocd_off = z64_off;
    }
    if (*cd_off > z->len || *cd_size > z->len - *cd_off)
        return mf_fail(MF_ERR_FORMAT, "%s: truncated zip: central directory at %llu (size %llu) extends past end of file (size %llu)",
                       z->path, (unsigned long long)*cd_off, (unsigned long long)*cd_size, (unsigned long long)z->len);
    if (*cd_off + *cd_size > eocd_off)
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: central directory at %llu (size %llu) overlaps the end record at %llu",
                       z->path, (unsigned long long)*cd_off, (unsigned long long)*cd_size, (unsigned long long)eocd_off);
    if (*count > *cd_size / CDH_SIZE || *count > MAX_ENTRIES)
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: %llu entries cannot fit a %llu-byte central directory", z->path,
                       (unsigned long long)*count, (unsigned long long)*cd_size);
    if (*cd_size > MAX_CD_BYTES)
        return mf_fail(MF_ERR_LIMIT, "%s: zip central directory of %llu bytes is too large", z->path, (unsigned long long)*cd_size);
    return MF_OK;
}

/* ZIP64 extra (id 1): 8-byte values only for fields whose 32-bit value is 0xFFFFFFFF,
 * in the order usize, csize, local offset. */
static int zip64_extra(const mf_zip *z, const uint8_t *x, size_t xlen, const char *name,
                       uint64_t *usize, uint64_t *csize, uint64_t *loff)
{
    while (xlen >= 4) {
        uint16_t id = le16(x), sz = le16(x + 2);
        if (sz > xlen - 4)
            return mf_fail(MF_ERR_FORMAT, "%s: bad zip: extra field of entry '%s' overruns its header", z->path, name);
        if (id == 1) {
            const uint8_t *p = x + 4;
            size_t left = sz;
            uint64_t *fields[3] = {usize, csize, loff};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xFFFFFFFFu)
                    continue;
                if (left < 8)
                    return mf_fail(MF_ERR_FORMAT, "%s: bad zip: short ZIP64 extra field in entry '%s'", z->path, name);
                *fields[i] = le64(p);
                p += 8, left -= 8;
            }
            return MF_OK;
        }
        x += 4 + sz, xlen -= 4 + (size_t)sz;
    }
    return MF_OK;
}

static int parse_entry(mf_zip *z, const uint8_t *cd, size_t cd_len, size_t *pos, mf_zip_entry *e)
{
    const uint8_t *h = cd + *pos;
    if (cd_len - *pos < CDH_SIZE || memcmp(h, "PK\x01\x02", 4) != 0)
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: corrupt central directory entry at offset %zu of the directory", z->path, *pos);
    uint16_t method = le16(h + 10), nlen = le16(h + 28), xlen = le16(h + 30), clen = le16(h + 32);
    uint64_t csize = le32(h + 20), usize = le32(h + 24), loff = le32(h + 42);
    if ((size_t)nlen + xlen + clen > cd_len - *pos - CDH_SIZE)
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: central directory entry at offset %zu overruns the directory", z->path, *pos);
    if (nlen == 0 || memchr(h + CDH_SIZE, 0, nlen))
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: empty or NUL-containing entry name", z->path);
    e->name = malloc((size_t)nlen + 1);
    if (!e->name)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", z->path);
    memcpy(e->name, h + CDH_SIZE, nlen);
    e->name[nlen] = '\0';
    e->method = method;
    *pos += CDH_SIZE + (size_t)nlen + xlen + clen;

    int rc = zip64_extra(z, h + CDH_SIZE + nlen, xlen, e->name, &usize, &csize, &loff);
    if (rc)
        return rc;
    if (method != 0)
        return mf_fail(MF_ERR_UNSUPPORTED, "%s: zip entry '%s' is compressed (method %u); torch.save writes stored entries only",
                       z->path, e->name, (unsigned)method);
    if (csize != usize)
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: stored entry '%s' has compressed size %llu != size %llu", z->path, e->name,
                       (unsigned long long)csize, (unsigned long long)usize);
    /* Sizes in the local header are zero (data descriptor); only its name/extra lengths matter. */
    uint8_t lh[LFH_SIZE];
    int bad = rd(z, lh, sizeof lh, loff);
    if (bad)
        return io_fail(z, bad, "local header", loff);
    if (memcmp(lh, "PK\x03\x04", 4) != 0)
        return mf_fail(MF_ERR_FORMAT, "%s: bad zip: no local header signature at %llu for entry '%s'", z->path,
                       (unsigned long long)loff, e->name);
    uint64_t data = loff + LFH_SIZE + le16(lh + 26) + le16(lh + 28);
    if (data > z->len || usize > z->len - data)
        return mf_fail(MF_ERR_FORMAT, "%s: truncated zip: entry '%s' data at %llu (size %llu) extends past end of file (size %llu)",
                       z->path, e->name, (unsigned long long)data, (unsigned long long)usize, (unsigned long long)z->len);
    e->data_offset = z->base + data;
    e->size = usize;
    return MF_OK;
}

int mf_zip_open(mf_zip *z, int fd, const char *path, uint64_t base, uint64_t len)
{
    memset(z, 0, sizeof *z);
    z->fd = fd;
    z->path = strdup(path ? path : "?");
    if (!z->path)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    int rc;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = mf_fail(MF_ERR_IO, "%s: stat: %s", z->path, strerror(errno));
        goto fail;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    if (base > fsize || (len && len > fsize - base)) {
        rc = mf_fail(MF_ERR_FORMAT, "%s: truncated file: archive window [%llu, +%llu) extends past end of file (size %llu)",
                     z->path, (unsigned long long)base, (unsigned long long)len, (unsigned long long)fsize);
        goto fail;
    }
    z->base = base;
    z->len = len ? len : fsize - base;
    if ((rc = fill_cache(z)))
        goto fail;

    uint8_t magic[4] = {0};
    if (z->len < 4 || rd(z, magic, 4, 0) || memcmp(magic, "PK\x03\x04", 4) != 0) {
        rc = mf_fail(MF_ERR_FORMAT, "%s: not a zip archive (torch.save files start with PK\\x03\\x04)", z->path);
        goto fail;
    }
    uint64_t cd_off = 0, cd_size = 0, count = 0;
    if ((rc = find_cd(z, &cd_off, &cd_size, &count)))
        goto fail;
    if (count == 0) {
        rc = mf_fail(MF_ERR_FORMAT, "%s: empty zip archive", z->path);
        goto fail;
    }
    uint8_t *cd = malloc((size_t)cd_size);
    z->entries = calloc((size_t)count, sizeof *z->entries);
    if (!cd || !z->entries) {
        free(cd);
        rc = mf_fail(MF_ERR_NOMEM, "%s: out of memory", z->path);
        goto fail;
    }
    int bad = rd(z, cd, (size_t)cd_size, cd_off);
    if (bad) {
        free(cd);
        rc = io_fail(z, bad, "central directory", cd_off);
        goto fail;
    }
    size_t pos = 0;
    for (uint64_t i = 0; i < count; i++) {
        z->n_entries++;
        if ((rc = parse_entry(z, cd, (size_t)cd_size, &pos, &z->entries[i]))) {
            free(cd);
            goto fail;
        }
    }
    free(cd);
    /* Prefix from the first central-directory entry, as PyTorchStreamReader does. */
    const char *slash = strchr(z->entries[0].name, '/');
    if (!slash) {
        rc = mf_fail(MF_ERR_FORMAT, "%s: bad torch zip: first entry '%s' is not inside an archive folder", z->path,
                     z->entries[0].name);
        goto fail;
    }
    z->prefix = strndup(z->entries[0].name, (size_t)(slash - z->entries[0].name));
    if (!z->prefix) {
        rc = mf_fail(MF_ERR_NOMEM, "%s: out of memory", z->path);
        goto fail;
    }
    qsort(z->entries, z->n_entries, sizeof *z->entries, cmp_entry);
    for (size_t i = 1; i < z->n_entries; i++)
        if (strcmp(z->entries[i - 1].name, z->entries[i].name) == 0) {
            rc = mf_fail(MF_ERR_FORMAT, "%s: bad zip: duplicate entry '%s'", z->path, z->entries[i].name);
            goto fail;
        }
    return MF_OK;
fail:
    mf_zip_close(z);
    z->fd = -1;
    return rc;
}

void mf_zip_close(mf_zip *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->n_entries; i++)
        free(z->entries[i].name);
    free(z->entries);
    free(z->path);
    free(z->prefix);
    free(z->cache);
    memset(z, 0, sizeof *z);
    z->fd = -1;
}

/* Compare "<prefix>/<rel>" with name without building the string. */
static int cmp_prefixed(const char *prefix, const char *rel, const char *name)
{
    size_t pl = strlen(prefix);
    int c = strncmp(prefix, name, pl);
    if (c)
        return c;
    if (name[pl] != '/')
        return (unsigned char)'/' - (unsigned char)name[pl];
    return strcmp(rel, name + pl + 1);
}

const mf_zip_entry *mf_zip_find(const mf_zip *z, const char *rel)
{
    if (!z || !z->prefix || !rel)
        return NULL;
    size_t lo = 0, hi = z->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_prefixed(z->prefix, rel, z->entries[mid].name);
        if (c == 0)
            return &z->entries[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int mf_zip_read(const mf_zip *z, const mf_zip_entry *e, size_t max_size, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (e->size > max_size)
        return mf_fail(MF_ERR_LIMIT, "%s: zip entry '%s' is %llu bytes, more than the %zu allowed", z->path, e->name,
                       (unsigned long long)e->size, max_size);
    uint8_t *buf = malloc(e->size ? (size_t)e->size : 1);
    if (!buf)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory reading '%s'", z->path, e->name);
    int bad = rd(z, buf, (size_t)e->size, e->data_offset - z->base);
    if (bad) {
        free(buf);
        return io_fail(z, bad, e->name, e->data_offset - z->base);
    }
    *out = buf;
    *out_len = (size_t)e->size;
    return MF_OK;
}
