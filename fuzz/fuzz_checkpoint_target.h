/* Whole-checkpoint entry point: one rank file's bytes become a one-file checkpoint, which goes
 * through args -> model -> mapping -> view, and every virtual file is read to the end.
 * Shared by the libFuzzer harness and the corpus regression test. */
#ifndef MCOREFS_FUZZ_CHECKPOINT_TARGET_H
#define MCOREFS_FUZZ_CHECKPOINT_TARGET_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcorefs/error.h"
#include "mcorefs/view.h"

/* A private checkpoint folder, made once per process (tmpfs when available). */
static inline const char *fz_ckpt_root(void)
{
    static char root[64];
    if (root[0] == 0) {
        char tmpl[] = "/dev/shm/mcorefs-fuzz-XXXXXX";
        char tmpl2[] = "/tmp/mcorefs-fuzz-XXXXXX";
        char *d = mkdtemp(tmpl);
        if (!d)
            d = mkdtemp(tmpl2);
        if (!d)
            abort();
        snprintf(root, sizeof(root), "%s", d);
        char p[128];
        snprintf(p, sizeof(p), "%s/iter_0000001", root);
        mkdir(p, 0700);
        snprintf(p, sizeof(p), "%s/iter_0000001/mp_rank_00", root);
        mkdir(p, 0700);
        snprintf(p, sizeof(p), "%s/latest_checkpointed_iteration.txt", root);
        FILE *f = fopen(p, "w");
        if (!f)
            abort();
        fputs("1", f);
        fclose(f);
    }
    return root;
}

static inline int fz_checkpoint(const uint8_t *data, size_t len)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/iter_0000001/mp_rank_00/model_optim_rng.pt", fz_ckpt_root());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    close(fd);

    mf_options o;
    mf_session *s;
    mf_options_init(&o);
    o.shard_size = 100000;   /* several shards and an index */
    int rc = mf_session_open(&s, fz_ckpt_root(), &o);
    if (rc == MF_OK) {
        static char buf[1 << 16];
        for (size_t i = 0; i < s->n_files; i++) {
            const mf_vfile *f = mf_session_lookup(s, s->files[i].name);
            for (uint64_t off = 0; f && off < f->size;) {
                ssize_t n = mf_session_read(s, f, buf, sizeof(buf), off);
                if (n <= 0)
                    break;
                off += (uint64_t)n;
            }
        }
        mf_session_close(s);
    }
    mf_options_free(&o);
    return rc;
}

#endif
