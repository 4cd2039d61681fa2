/* The parser entry points driven by the libFuzzer harnesses and by the corpus regression
 * test (tests/unit/test_fuzz_corpus.c), so both exercise exactly the same code.
 * Each returns the parser status; they must never crash, hang or leak. */
#ifndef MCOREFS_FUZZ_TARGETS_H
#define MCOREFS_FUZZ_TARGETS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mcorefs/error.h"
#include "mcorefs/pickle.h"
#include "mcorefs/torchfile.h"
#include "mcorefs/zip.h"

/* Input bytes as an fd (the readers take fds, not buffers). */
static inline int fz_memfd(const uint8_t *data, size_t len)
{
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return fd;
}

static inline int fz_zip(const uint8_t *data, size_t len)
{
    int fd = fz_memfd(data, len);
    if (fd < 0)
        return MF_ERR_IO;
    mf_zip z;
    int rc = mf_zip_open(&z, fd, "fuzz.zip", 0, 0);
    if (rc == MF_OK) {
        size_t pl = strlen(z.prefix);
        for (size_t i = 0; i < z.n_entries; i++) {
            const mf_zip_entry *e = &z.entries[i];
            uint8_t *buf;
            size_t n;
            /* Names are unique, so lookup must find this very entry. */
            if (strncmp(e->name, z.prefix, pl) == 0 && e->name[pl] == '/' && mf_zip_find(&z, e->name + pl + 1) != e)
                abort();
            if (mf_zip_read(&z, e, 1 << 20, &buf, &n) == MF_OK)
                free(buf);
        }
        (void)mf_zip_find(&z, "data.pkl");
        mf_zip_close(&z);
    }
    close(fd);
    return rc;
}

static inline int fz_pickle(const uint8_t *data, size_t len)
{
    mf_pickle_limits lim = {.max_bytes = 64u << 20, .max_depth = 1000};
    mf_pickle *pk;
    mf_pv *root;
    int rc = mf_pickle_load(data, len, "fuzz.pkl", &lim, &pk, &root);
    if (rc == MF_OK) {
        int64_t i;
        double f;
        (void)mf_pv_get_int(root, &i);
        (void)mf_pv_get_float(root, &f);
        (void)mf_pv_dict_get(root, "args");
        (void)mf_pv_obj_state(root);
        mf_pickle_free(pk);
    }
    /* Again, skimming the values of a few keys (the DCP reader's mode). */
    static const char *const skip[] = {"a", "args", "all_local_plans", NULL};
    lim.skip_keys = skip;
    if (mf_pickle_load(data, len, "fuzz.pkl", &lim, &pk, &root) == MF_OK) {
        (void)mf_pv_dict_get(root, "b");
        (void)mf_pv_obj_state(root);
        mf_pickle_free(pk);
    }
    return rc;
}

/* Visit the value DAG (bounded: shared nodes could make a plain walk exponential). */
static inline void fz_walk(const mf_torchfile *tf, const mf_pv *v, int depth, long *budget)
{
    if (!v || depth > 64 || --*budget < 0)
        return;
    if (mf_torchfile_is_tensor(v)) {
        mf_tensor t;
        if (mf_torchfile_tensor(tf, v, "fuzz", &t) == MF_OK && t.ndim >= 0) {
            uint8_t b;
            if (t.storage_bytes && pread(tf->fd, &b, 1, (off_t)t.offset) < 0)
                abort();
        }
    }
    switch (v->kind) {
    case MF_PV_TUPLE:
    case MF_PV_LIST:
    case MF_PV_SET:
        for (size_t i = 0; i < v->u.seq.n; i++)
            fz_walk(tf, v->u.seq.items[i], depth + 1, budget);
        break;
    case MF_PV_DICT:
        for (size_t i = 0; i < v->u.dict.n; i++)
            fz_walk(tf, v->u.dict.vals[i], depth + 1, budget);
        break;
    case MF_PV_OBJECT:
        fz_walk(tf, v->u.obj.args, depth + 1, budget);
        fz_walk(tf, v->u.obj.state, depth + 1, budget);
        break;
    default:
        break;
    }
}

static inline int fz_torchfile(const uint8_t *data, size_t len)
{
    int fd = fz_memfd(data, len);
    if (fd < 0)
        return MF_ERR_IO;
    mf_torchfile tf;
    int rc = mf_torchfile_open_window(&tf, fd, "fuzz.pt", 0, 0, 16u << 20);
    if (rc == MF_OK) {
        long budget = 100000;
        fz_walk(&tf, tf.root, 0, &budget);
        mf_torchfile_close(&tf);
    }
    close(fd);
    return rc;
}

#endif
