/* -o tokenizer=DIR: the tokenizer files a Megatron checkpoint lacks, loaded into the view at
 * mount (see small_file.h for what is refused). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "mcorefs/view.h"
#include "small_file.h"

/* The folder overlay files are opened beneath, and their names' prefix there: DIR itself, or,
 * for a Hugging Face hub cache snapshot (REPO/snapshots/REV, whose files are symlinks to
 * REPO/blobs/...), the REPO folder, so that those links are followed but none out of REPO. */
static int overlay_root(const char *dir, char *prefix, size_t n)
{
    prefix[0] = 0;
    char *real = realpath(dir, NULL);
    char *rev = real ? strrchr(real, '/') : NULL;
    if (rev && rev > real) {
        *rev = 0;
        char *snaps = strrchr(real, '/');
        struct stat st;
        if (snaps && snaps > real && strcmp(snaps + 1, "snapshots") == 0) {
            *snaps = 0;
            char blobs[4096];
            snprintf(blobs, sizeof(blobs), "%s/blobs", real);
            if (stat(blobs, &st) == 0 && S_ISDIR(st.st_mode) && strlen(rev + 1) + 12 < n) {
                snprintf(prefix, n, "snapshots/%s/", rev + 1);
                int fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                free(real);
                return fd;
            }
        }
    }
    free(real);
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Tokenizer files a Megatron checkpoint lacks, from -o tokenizer=DIR. Loaded at mount, so the
 * view never reopens a path (no later swap of a link changes it; relative DIRs work although the
 * daemon changes to /), each keeping its own owner and mode bits. */
int mf_view_add_overlays(mf_session *s, const char *dir)
{
    static const char *const names[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "generation_config.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt",
        "added_tokens.json", "chat_template.jinja", NULL };
    int found = 0, rc = MF_OK;
    char prefix[512];
    int dirfd = overlay_root(dir, prefix, sizeof(prefix));
    if (dirfd < 0)
        return mf_fail(MF_ERR_IO, "%s: tokenizer folder not found (%s)", dir, strerror(errno));
    for (int i = 0; names[i] && rc == MF_OK; i++) {
        char shown[4096], rel[1024], *data = NULL;
        size_t len = 0;
        struct stat st;
        if (mf_session_lookup(s, names[i]))
            continue;
        snprintf(shown, sizeof(shown), "%s/%s", dir, names[i]);
        snprintf(rel, sizeof(rel), "%s%s", prefix, names[i]);
        rc = mf_small_file_load(dirfd, rel, shown, &data, &len, &st);
        if (rc == MF_ERR_MISSING) {
            rc = MF_OK;
            continue;
        }
        /* len, not strlen: the file may hold NUL bytes (tokenizer.model) */
        if (rc == MF_OK && (rc = mf_view_add_memory_file(s, names[i], data, len)) == MF_OK) {
            mf_vfile *f = &s->files[s->n_files - 1];
            f->uid = st.st_uid;
            f->gid = st.st_gid;
            f->mode = st.st_mode & 0666;
            f->own_perms = 1;
            found++;
        }
    }
    close(dirfd);
    if (rc == MF_OK && !found)
        return mf_fail(MF_ERR_MISSING, "%s: no tokenizer files (tokenizer.json, tokenizer_config.json, ...)", dir);
    return rc;
}
