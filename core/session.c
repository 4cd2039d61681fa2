/* A mounted checkpoint: options -> checkpoint -> mapping -> virtual files; and reads. */
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "mcorefs/fileid.h"
#include "mcorefs/fp8.h"
#include "mcorefs/gather.h"
#include "mcorefs/view.h"
#include "file_io.h"

static int copy_options(mf_options *dst, const mf_options *src)
{
    *dst = *src;
    dst->arch = src->arch ? strdup(src->arch) : NULL;
    dst->hf_config = src->hf_config ? strdup(src->hf_config) : NULL;
    dst->tokenizer = src->tokenizer ? strdup(src->tokenizer) : NULL;
    return MF_OK;
}

int mf_session_open(mf_session **out, const char *path, const mf_options *o)
{
    mf_session *s = calloc(1, sizeof(*s));
    int rc;
    *out = NULL;
    if (!s)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    copy_options(&s->opts, o);
    if ((rc = mf_checkpoint_open(&s->ckpt, path, &s->opts)) != 0) {
        mf_options_free(&s->opts);
        free(s);
        return rc;
    }
    if ((rc = mf_mapping_build(&s->map, &s->ckpt, &s->opts)) != 0)
        goto fail;
    struct stat dst;
    s->mtime = stat(s->ckpt.iter_dir, &dst) == 0 ? (int64_t)dst.st_mtime : 0;
    s->config_json = mf_config_build(&s->ckpt, &s->opts, &s->hf_config_st);
    if (!s->config_json) {
        rc = MF_ERR_INVALID;
        goto fail;
    }
    if ((rc = mf_view_add_memory_file(s, "config.json", strdup(s->config_json), strlen(s->config_json))) != 0)
        goto fail;
    if ((rc = mf_view_build_shards(s)) != 0)
        goto fail;
    if (s->opts.tokenizer && (rc = mf_view_add_overlays(s, s->opts.tokenizer)) != 0)
        goto fail;
    s->fds = malloc((s->ckpt.n_files ? s->ckpt.n_files : 1) * sizeof(int));
    if (!s->fds) {
        rc = mf_fail(MF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->ckpt.n_files; i++)
        s->fds[i] = s->ckpt.files[i].fd;
    s->file_bytes = calloc(s->ckpt.n_files ? s->ckpt.n_files : 1, sizeof(uint64_t));
    if (!s->file_bytes) {
        rc = mf_fail(MF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = mf_view_add_memory_file(s, MF_META_DIR "/manifest.json", strdup(""), 0)) != 0)
        goto fail;
    s->files[s->n_files - 1].kind = MF_VF_LAZY;
    if ((rc = mf_view_add_memory_file(s, MF_META_DIR "/stats", strdup(""), 0)) != 0)
        goto fail;
    s->files[s->n_files - 1].kind = MF_VF_STATS;
    if ((rc = mf_view_set_permissions(s)) != 0)
        goto fail;
#ifdef __GLIBC__
    malloc_trim(0);   /* hand the parse-time pickle arenas back: a long-lived daemon keeps little */
#endif
    *out = s;
    return MF_OK;
fail:
    mf_session_close(s);
    return rc;
}

void mf_session_close(mf_session *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_files; i++) {
        free(s->files[i].name);
        free(s->files[i].data);
        free(s->files[i].tensors);
    }
    free(s->files);
    free(s->fds);
    free(s->file_bytes);
    free(s->config_json);
    mf_fp8_state_free(s->fp8);
    mf_mapping_free(&s->map);
    mf_checkpoint_close(&s->ckpt);
    mf_options_free(&s->opts);
    free(s);
}

static pthread_mutex_t lazy_lock = PTHREAD_MUTEX_INITIALIZER;

/* Build a lazy file's contents once; later lookups see a plain memory file. */
static const mf_vfile *materialize(const mf_session *s, mf_vfile *f)
{
    pthread_mutex_lock(&lazy_lock);
    if (__atomic_load_n(&f->kind, __ATOMIC_ACQUIRE) == MF_VF_LAZY) {
        char *text = mf_manifest_build(s);
        if (text) {
            free(f->data);
            f->data = text;
            f->size = strlen(text);
            __atomic_store_n(&f->kind, MF_VF_MEMORY, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&lazy_lock);
    return __atomic_load_n(&f->kind, __ATOMIC_ACQUIRE) == MF_VF_LAZY ? NULL : f;
}

const mf_vfile *mf_session_lookup(const mf_session *s, const char *name)
{
    for (size_t i = 0; i < s->n_files; i++)
        if (strcmp(s->files[i].name, name) == 0) {
            mf_vfile *f = &s->files[i];
            if (__atomic_load_n(&f->kind, __ATOMIC_ACQUIRE) == MF_VF_LAZY)
                return materialize(s, f);
            return f;
        }
    return NULL;
}

/* Find the first tensor of f whose data ends after data offset `pos`. */
static uint32_t first_tensor_at(const mf_session *s, const mf_vfile *f, uint64_t pos)
{
    uint32_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const mf_hf_tensor *t = &s->map.tensors[f->tensors[mid]];
        if (t->offset + t->nbytes <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static ssize_t read_stats(const mf_session *s, char *buf, size_t len, uint64_t off)
{
    char *text = mf_stats_render(s);
    if (!text)
        return mf_fail(MF_ERR_NOMEM, "out of memory");
    size_t n = strlen(text);
    size_t k = off >= n ? 0 : (n - off < len ? n - (size_t)off : len);
    memcpy(buf, text + (off < n ? off : n), k);
    free(text);
    return (ssize_t)k;
}

/* Append a buffer segment, merging with a previous buffer segment that it continues. */
/* Count a failed read and leave one line for the log: what was read, and why it failed (the
 * gather's own message when it left one, e.g. an unreadable torch_dist chunk). */
static int read_failed(const mf_session *s, const mf_vfile *f, const mf_hf_tensor *t, uint64_t in_t, size_t n, int rc)
{
    __atomic_fetch_add((uint64_t *)&s->n_errors, 1, __ATOMIC_RELAXED);
    if (rc == MF_ERR_CHANGED)
        __atomic_fetch_add((uint64_t *)&s->n_source_changed, 1, __ATOMIC_RELAXED);
    if (mf_error()[0])
        mf_fail_ctx(MF_ERR_IO, "read of %s (%s, bytes %llu+%zu) failed", f->name, t->name, (unsigned long long)in_t, n);
    else
        mf_fail(MF_ERR_IO, "read of %s (%s, bytes %llu+%zu) failed: %s", f->name, t->name, (unsigned long long)in_t, n,
                mf_status_name(rc));
    return rc;
}

static int add_buf_seg(mf_segment *segs, size_t *n, size_t max, uint64_t at, size_t len)
{
    if (*n > 0 && segs[*n - 1].fd < 0 && segs[*n - 1].pos + segs[*n - 1].len == at) {
        segs[*n - 1].len += len;
        return 0;
    }
    if (*n == max)
        return -1;
    segs[(*n)++] = (mf_segment){ -1, at, len };
    return 0;
}

ssize_t mf_session_read_segments(const mf_session *s, const mf_vfile *f, char *buf, size_t len, uint64_t off,
                                 mf_segment *segs, size_t max_segs)
{
    size_t n = 0, done = 0;
    if (f->kind != MF_VF_SAFETENSORS || max_segs < 2) {   /* small or special files: plain read */
        ssize_t r = mf_session_read(s, f, buf, len, off);
        if (r > 0)
            segs[n++] = (mf_segment){ -1, 0, (size_t)r };
        return r < 0 ? r : (ssize_t)n;
    }
    __atomic_fetch_add((uint64_t *)&s->n_reads, 1, __ATOMIC_RELAXED);
    if (off >= f->size)
        return 0;
    if (len > f->size - off)
        len = (size_t)(f->size - off);
    if (off < f->header_len) {
        size_t h = (size_t)(f->header_len - off) < len ? (size_t)(f->header_len - off) : len;
        memcpy(buf, f->data + off, h);
        add_buf_seg(segs, &n, max_segs, 0, h);
        done = h;
    }
    uint64_t pos = off + done - f->header_len;
    mf_io io = { s->fds, s->file_bytes, s->ckpt.files };
    for (uint32_t i = first_tensor_at(s, f, pos); done < len && i < f->n_tensors; i++) {
        const mf_hf_tensor *t = &s->map.tensors[f->tensors[i]];
        uint64_t in_t = pos - t->offset;
        size_t k = t->nbytes - in_t < len - done ? (size_t)(t->nbytes - in_t) : len - done;
        mf_error_clear();
        int got = n + 1 < max_segs && !t->quant ? mf_gather_segments(t, &io, in_t, k, segs + n, (int)(max_segs - n - 1)) : 0;
        if (got < 0)
            return read_failed(s, f, t, in_t, k, got);
        if (got > 0) {
            n += (size_t)got;
        } else {
            mf_error_clear();
            int rc = mf_tensor_read(s, t, &io, in_t, k, (uint8_t *)buf + done);
            if (rc < 0)
                return read_failed(s, f, t, in_t, k, rc);
            if (add_buf_seg(segs, &n, max_segs, done, k) != 0)
                return mf_fail(MF_ERR_IO, "too many pieces in one reply");   /* cannot happen: one slot is always kept free */
        }
        done += k;
        pos += k;
    }
    __atomic_fetch_add((uint64_t *)&s->n_bytes, done, __ATOMIC_RELAXED);
    return (ssize_t)n;
}

ssize_t mf_session_read(const mf_session *s, const mf_vfile *f, char *buf, size_t len, uint64_t off)
{
    __atomic_fetch_add((uint64_t *)&s->n_reads, 1, __ATOMIC_RELAXED);
    /* a lazy file reached by inode without a lookup by name (its view was rebuilt meanwhile) */
    if (__atomic_load_n(&f->kind, __ATOMIC_ACQUIRE) == MF_VF_LAZY && !(f = materialize(s, (mf_vfile *)f)))
        return mf_fail(MF_ERR_NOMEM, "building a lazy file: out of memory");
    if (f->kind == MF_VF_STATS)
        return read_stats(s, buf, len, off);
    if (off >= f->size)
        return 0;
    if (len > f->size - off)
        len = (size_t)(f->size - off);
    if (f->kind == MF_VF_MEMORY) {
        memcpy(buf, f->data + off, len);
        return (ssize_t)len;
    }
    size_t done = 0;
    if (off < f->header_len) {
        size_t n = (size_t)(f->header_len - off) < len ? (size_t)(f->header_len - off) : len;
        memcpy(buf, f->data + off, n);
        done = n;
    }
    uint64_t pos = off + done - f->header_len;   /* offset in the data section */
    for (uint32_t i = first_tensor_at(s, f, pos); done < len && i < f->n_tensors; i++) {
        const mf_hf_tensor *t = &s->map.tensors[f->tensors[i]];
        uint64_t in_t = pos - t->offset;
        size_t n = t->nbytes - in_t < len - done ? (size_t)(t->nbytes - in_t) : len - done;
        mf_io io = { s->fds, s->file_bytes, s->ckpt.files };
        mf_error_clear();
        int rc = mf_tensor_read(s, t, &io, in_t, n, (uint8_t *)buf + done);
        if (rc < 0)
            return read_failed(s, f, t, in_t, n, rc);
        done += n;
        pos += n;
    }
    __atomic_fetch_add((uint64_t *)&s->n_bytes, done, __ATOMIC_RELAXED);
    return (ssize_t)done;
}

ssize_t mf_session_fill_segments(const mf_session *s, char *buf, mf_segment *segs, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (segs[i].fd >= 0) {
            size_t k = 0;   /* the rank file behind the descriptor, for its path and identity */
            while (k < s->ckpt.n_files && s->fds[k] != segs[i].fd)
                k++;
            const mf_rankfile *rf = k < s->ckpt.n_files ? &s->ckpt.files[k] : NULL;
            int rc = mf_pread_full(segs[i].fd, rf ? rf->path : NULL, buf + at, segs[i].len, segs[i].pos);
            int same = rf ? mf_file_id_check(segs[i].fd, &rf->id, rf->path) : MF_OK;
            if (same != MF_OK)
                rc = same;   /* changed since mount: also why a read came up short */
            if (rc != MF_OK) {
                __atomic_fetch_add((uint64_t *)&s->n_errors, 1, __ATOMIC_RELAXED);
                if (rc == MF_ERR_CHANGED)
                    __atomic_fetch_add((uint64_t *)&s->n_source_changed, 1, __ATOMIC_RELAXED);
                return rc;
            }
        }
        at += segs[i].len;
    }
    if (n > 0)
        segs[0] = (mf_segment){ -1, 0, at };
    return n > 0 ? 1 : 0;
}
