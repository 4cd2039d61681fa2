/* Read-only reader for the STORED zip archives torch.save writes (ZIP64 aware).
 * Works on a byte window [base, base+len) of an open file, so archives embedded in
 * larger files (torch_dist .distcp items) are read the same way as whole files. */
#ifndef MCOREFS_ZIP_H
#define MCOREFS_ZIP_H

#include <stdint.h>
#include <stddef.h>

typedef struct {
    char *name;            /* full entry name, e.g. "model_optim_rng/data/3" (NUL-terminated) */
    uint64_t data_offset;  /* ABSOLUTE file offset of the first data byte (from the local header) */
    uint64_t size;         /* uncompressed size from the central directory / ZIP64 extra */
    uint16_t method;       /* 0 = stored; anything else is rejected by mf_zip_open */
} mf_zip_entry;

typedef struct {
    int fd;                /* not owned */
    char *path;            /* copy, for messages */
    uint64_t base, len;    /* archive window inside the file */
    mf_zip_entry *entries; /* sorted by name for lookup */
    size_t n_entries;
    char *prefix;          /* archive prefix: first central-directory entry up to its first '/' */
    /* private: copies of the window's first head_n bytes and of its end from tail_off. For the
     * small archives torch_dist embeds, every header read is served from here. */
    uint8_t *cache;
    uint64_t head_n, tail_off;
} mf_zip;

/* Parse the central directory of the archive in [base, base+len) of fd.
 * len == 0 means "to end of file". Every entry must be STORED and lie inside the window.
 * Returns MF_OK or a negative mf_status with mf_error() naming `path`. */
int mf_zip_open(mf_zip *z, int fd, const char *path, uint64_t base, uint64_t len);
void mf_zip_close(mf_zip *z);
/* Look up "<prefix>/<rel>" (e.g. rel = "data.pkl" or "data/0"). NULL if absent. */
const mf_zip_entry *mf_zip_find(const mf_zip *z, const char *rel);
/* Read a whole entry into a malloc'ed buffer (caller frees). Fails if size > max_size. */
int mf_zip_read(const mf_zip *z, const mf_zip_entry *e, size_t max_size, uint8_t **out, size_t *out_len);

#endif
