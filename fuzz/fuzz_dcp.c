/* libFuzzer harness: arbitrary bytes as the .metadata of a torch_dist checkpoint folder.
 * The folder (created once) holds the .distcp files of the torch 2.6 DCP sample when the
 * shared fixtures are present (MCOREFS_FUZZ_DCP_FILES), else zero-filled stand-ins, so a
 * mutated .metadata can point chunks at real embedded archives. Every accepted checkpoint is
 * walked: name lookups must find the same tensor, every chunk (bounded) is resolved, the args
 * loader runs; nothing may crash, hang or leak. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mcorefs/dcp.h"
#include "mcorefs/error.h"

#ifndef MCOREFS_FUZZ_DCP_FILES
#define MCOREFS_FUZZ_DCP_FILES ""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];

static void put_file(const char *name, const uint8_t *d, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, d + off, n - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    close(fd);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/fuzz_dcp.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    static const char *names[] = {"__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp", "common.pt"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char src[4096];
        snprintf(src, sizeof src, "%s/%s", MCOREFS_FUZZ_DCP_FILES, names[i]);
        uint8_t *buf = NULL;
        size_t n = 0;
        FILE *f = MCOREFS_FUZZ_DCP_FILES[0] ? fopen(src, "rb") : NULL;
        if (f) {
            buf = malloc(1 << 20);
            n = fread(buf, 1, 1 << 20, f);
            fclose(f);
        } else if (i < 4) {
            n = 16384;
            buf = calloc(1, n);
        }
        if (buf)
            put_file(names[i], buf, n);
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0])
        setup();
    put_file(".metadata", data, size);
    mf_dcp d;
    if (mf_dcp_open(&d, dir) != MF_OK)
        return 0;
    int *fds = calloc(d.n_files + 1, sizeof *fds);
    for (size_t i = 0; i < d.n_files; i++) {
        char p[4352];
        snprintf(p, sizeof p, "%s/%s", dir, d.files[i]);
        fds[i] = open(p, O_RDONLY | O_CLOEXEC);
    }
    size_t budget = 256;
    for (size_t i = 0; i < d.n_tensors; i++) {
        const mf_dcp_tensor *t = &d.tensors[i];
        const mf_dcp_tensor *f = mf_dcp_find(&d, t->fqn);
        if (!f || strcmp(f->fqn, t->fqn) != 0)
            abort();
        for (size_t j = 0; j < t->n_chunks && budget; j++, budget--) {
            const mf_dcp_chunk *c = &t->chunks[j];
            if (c->file < 0 || (size_t)c->file >= d.n_files || c->offset + c->length > d.file_sizes[c->file])
                abort();
            mf_tensor mt;
            if (fds[c->file] >= 0 && mf_dcp_chunk_tensor(&d, fds[c->file], c, &mt) == MF_OK) {
                for (int k = 0; k < t->ndim; k++)
                    if (mt.shape[k] != c->sizes[k])
                        abort();
                if (mt.storage_begin < c->offset || mt.storage_begin + mt.storage_bytes > c->offset + c->length)
                    abort();
            }
        }
    }
    mf_pickle *pk;
    const mf_pv *args;
    if (mf_dcp_load_args(&d, &pk, &args) == MF_OK)
        mf_pickle_free(pk);
    for (size_t i = 0; i < d.n_files; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    mf_dcp_close(&d);
    return 0;
}
