/* The virtual HF directory: config.json, safetensors shards, the index, overlays.
 * Every size is fixed at mount time; reads go to memory (JSON, headers) or the gather engine. */
#ifndef MCOREFS_VIEW_H
#define MCOREFS_VIEW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include "mcorefs/checkpoint.h"
#include "mcorefs/gather.h"
#include "mcorefs/mapping.h"
#include "mcorefs/options.h"

typedef enum {
    MF_VF_MEMORY,       /* JSON built at mount */
    MF_VF_SAFETENSORS,  /* header in memory, data gathered */
    MF_VF_STATS,        /* live counters, rendered on each read (size 0: read with direct_io) */
    MF_VF_LAZY,         /* JSON built on first use (the manifest: large, rarely read) */
} mf_vfile_kind;

typedef struct {
    char *name;            /* path inside the mount, without leading '/', e.g. "config.json" */
    mf_vfile_kind kind;
    uint64_t size;
    char *data;            /* MEMORY: contents; SAFETENSORS: 8-byte length + header JSON */
    uint64_t header_len;   /* SAFETENSORS: bytes before the data section */
    uint32_t *tensors;     /* SAFETENSORS: indexes into the mapping, in data-offset order */
    uint32_t n_tensors;
    /* shown owner, group and permission bits (see core/permissions.c) */
    uid_t uid;
    gid_t gid;
    mode_t mode;
    uint8_t own_perms;     /* set from the file's own stat (tokenizer overlays), kept as is */
} mf_vfile;

typedef struct mf_session {
    mf_options opts;
    mf_checkpoint ckpt;
    mf_mapping map;
    mf_vfile *files;
    size_t n_files;
    int *fds;              /* rank file descriptors, indexed like ckpt.files */
    uint64_t *file_bytes;  /* bytes gathered per rank file (atomic counters) */
    uint64_t n_reads, n_bytes, n_errors;  /* atomic counters */
    uint64_t n_source_changed;            /* reads refused: a rank file changed since mount */
    char *config_json;     /* also in files[], kept for tools */
    int64_t mtime;         /* shown for every entry: the iteration folder's mtime */
    uid_t dir_uid;         /* the folders of the view (root, .mcorefs): the iteration folder's */
    gid_t dir_gid;
    mode_t dir_mode;
    struct stat hf_config_st;  /* -o hf_config's file at mount (its bits also bound config.json's) */
    struct mf_fp8_state *fp8;  /* -o quant=fp8: the block-scale cache (core/fp8_view.c); else NULL */
} mf_session;

/* Open the checkpoint at `path` with options and build the whole view. */
int mf_session_open(mf_session **out, const char *path, const mf_options *o);
void mf_session_close(mf_session *s);
/* Lookup by name. A lazy file is built on first lookup (thread-safe); NULL if absent or if
 * building it failed. */
const mf_vfile *mf_session_lookup(const mf_session *s, const char *name);
/* Read up to len bytes at off. Returns bytes read (short only at EOF) or a negative mf_status
 * (MF_ERR_CHANGED: a rank file changed since mount), with mf_error() set. */
ssize_t mf_session_read(const mf_session *s, const mf_vfile *f, char *buf, size_t len, uint64_t off);

/* Like mf_session_read, but file ranges that need no gathering come back as fd segments (for
 * splicing) instead of being copied; everything else is gathered into buf at its request offset.
 * Returns the number of segments (covering the bytes up to EOF, in order) or a negative mf_status. */
ssize_t mf_session_read_segments(const mf_session *s, const mf_vfile *f, char *buf, size_t len, uint64_t off,
                                 mf_segment *segs, size_t max_segs);
/* Turn the segments of mf_session_read_segments into one buffer segment: each file range is read
 * to its place in buf (which holds the gathered bytes at their request offsets), and its rank
 * file's identity checked after. Returns 1 (0 when n is 0) or a negative mf_status. */
ssize_t mf_session_fill_segments(const mf_session *s, char *buf, mf_segment *segs, size_t n);

/* Names under the hidden ".mcorefs/" folder: manifest.json (where every byte comes from), stats. */
#define MF_META_DIR ".mcorefs"

/* Lower-level pieces, used by the session and tests. */
/* Append a zeroed virtual file named name (copied; NULL: the caller names it) to the view. */
int mf_view_add_file(mf_session *s, const char *name, mf_vfile **out);
/* Append a file served from memory; the view owns data from this call on (freed on failure). */
int mf_view_add_memory_file(mf_session *s, const char *name, char *data, size_t size);
char *mf_manifest_build(const mf_session *s);
char *mf_stats_render(const mf_session *s);
int mf_view_build_shards(mf_session *s);
/* -o tokenizer=DIR: its tokenizer files, loaded at mount (core/overlays.c). */
int mf_view_add_overlays(mf_session *s, const char *dir);
/* Owner, group and mode bits of every entry from the checkpoint's files (core/permissions.c). */
int mf_view_set_permissions(mf_session *s);
/* config.json text; with o->hf_config, that file's stat goes to *hf_config_st. */
char *mf_config_build(const mf_checkpoint *c, const mf_options *o, struct stat *hf_config_st);

#endif
