/* ceilingfs: the fastest FUSE read path this machine offers, as a baseline for mcorefs.
 *
 * Same libfuse3 high-level setup as the mcorefs daemon (fs/ops.c): kernel_cache, no direct_io,
 * 1 hour entry/attr timeouts, conn->max_readahead = 1 MiB, FUSE_CAP_ASYNC_READ, keep_cache,
 * multithreaded fuse_main.  It serves files f0.bin, f1.bin, ... of the sizes given with
 * -o sizes=N1:N2:..., and `read` just fills the buffer with a cheap pattern (memset).
 *
 *   ceilingfs MOUNTPOINT -o sizes=3145728000[:...] [-f] [-o max_read=N]
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 64

static unsigned long long sizes[MAX_FILES];
static int n_files;

static struct {
    char *sizes;
} opts;

static const struct fuse_opt spec[] = {
    { "sizes=%s", offsetof(__typeof__(opts), sizes), 0 },
    FUSE_OPT_END
};

static int file_index(const char *path)
{
    int i;
    char tail;
    if (sscanf(path, "/f%d.bi%c", &i, &tail) != 2 || tail != 'n' || i < 0 || i >= n_files)
        return -1;
    char want[32];
    snprintf(want, sizeof(want), "/f%d.bin", i);
    return strcmp(want, path) == 0 ? i : -1;
}

static void *c_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    cfg->kernel_cache = 1;
    cfg->entry_timeout = 3600.0;
    cfg->attr_timeout = 3600.0;
    cfg->negative_timeout = 3600.0;
    cfg->direct_io = 0;
    conn->max_readahead = 1u << 20;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    return NULL;
}

static int c_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    memset(st, 0, sizeof(*st));
    if (strcmp(path, "/") == 0) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        return 0;
    }
    int i = file_index(path);
    if (i < 0)
        return -ENOENT;
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)sizes[i];
    st->st_blocks = (blkcnt_t)((sizes[i] + 511) / 512);
    return 0;
}

static int c_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                     struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    if (strcmp(path, "/") != 0)
        return -ENOTDIR;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    for (int i = 0; i < n_files; i++) {
        char name[32];
        snprintf(name, sizeof(name), "f%d.bin", i);
        fill(buf, name, NULL, 0, 0);
    }
    return 0;
}

static int c_open(const char *path, struct fuse_file_info *fi)
{
    int i = file_index(path);
    if (i < 0)
        return -ENOENT;
    if ((fi->flags & O_ACCMODE) != O_RDONLY)
        return -EROFS;
    fi->keep_cache = 1;
    fi->fh = (uint64_t)i;
    return 0;
}

static int c_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    unsigned long long n = sizes[fi->fh];
    if ((unsigned long long)off >= n)
        return 0;
    if (size > n - (unsigned long long)off)
        size = (size_t)(n - (unsigned long long)off);
    memset(buf, (int)((off >> 12) & 0xff), size);
    return (int)size;
}

static const struct fuse_operations ops = {
    .init = c_init,
    .getattr = c_getattr,
    .readdir = c_readdir,
    .open = c_open,
    .read = c_read,
};

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    if (fuse_opt_parse(&args, &opts, spec, NULL) != 0)
        return 1;
    if (!opts.sizes) {
        fprintf(stderr, "ceilingfs: need -o sizes=N1[:N2...]\n");
        return 1;
    }
    for (char *p = opts.sizes; *p && n_files < MAX_FILES;) {
        char *end;
        sizes[n_files++] = strtoull(p, &end, 10);
        if (end == p)
            return 1;
        p = *end == ':' ? end + 1 : end;
    }
    fuse_opt_add_arg(&args, "-ofsname=ceilingfs,subtype=ceilingfs,ro");
    int rc = fuse_main(args.argc, args.argv, &ops, NULL);
    fuse_opt_free_args(&args);
    return rc ? 1 : 0;
}
