/* Refuse mount points and environments where the mount would fail or do harm, in our words. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "mcorefs/error.h"
#include "mountpoint.h"

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
    char *out = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *out++ = *s;
        }
    }
    *out = 0;
}

/* The source of the mcorefs mount at path (malloc'ed), or NULL when it is not one. */
static char *mcorefs_mount_source(const char *path)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char *line = NULL, *found = NULL;
    size_t cap = 0;
    if (!f)
        return NULL;
    while (getline(&line, &cap, f) > 0) {
        char *save = NULL, *field[5] = { 0 }, *tok = strtok_r(line, " \n", &save);
        for (int i = 0; tok && i < 5; i++, tok = strtok_r(NULL, " \n", &save))
            field[i] = tok;
        while (tok && strcmp(tok, "-") != 0)   /* optional fields end at " - " */
            tok = strtok_r(NULL, " \n", &save);
        char *fstype = tok ? strtok_r(NULL, " \n", &save) : NULL;
        char *source = fstype ? strtok_r(NULL, " \n", &save) : NULL;
        if (!field[4] || !source || strcmp(fstype, "fuse.mcorefs") != 0)
            continue;
        unescape(field[4]);
        if (strcmp(field[4], path) == 0) {   /* the last one wins: it is the one on top */
            free(found);
            unescape(source);
            found = strdup(source);
        }
    }
    free(line);
    fclose(f);
    return found;
}

int fs_check_mountpoint(const char *given, char **abs)
{
    struct stat st;
    *abs = NULL;
    if (stat(given, &st) != 0) {
        if (errno == ENOTCONN)
            return mf_fail(MF_ERR_IO, "mount point %s: %s (a FUSE mount whose daemon is gone; "
                           "unmount it first: fusermount3 -u %s)", given, strerror(errno), given);
        return mf_fail(MF_ERR_IO, "mount point %s: %s", given, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return mf_fail(MF_ERR_INVALID, "mount point %s is not a directory (mounting on a file would hide it); "
                       "give an empty directory", given);
    *abs = realpath(given, NULL);
    if (*abs == NULL)
        return mf_fail(MF_ERR_IO, "mount point %s: %s", given, strerror(errno));
    char *source = mcorefs_mount_source(*abs);
    if (source) {
        mf_fail(MF_ERR_INVALID, "mount point %s is already an mcorefs mount (%s); unmount it first "
                "(fusermount3 -u %s) or choose another directory", *abs, source, *abs);
        free(source);
        free(*abs);
        *abs = NULL;
        return MF_ERR_INVALID;
    }
    return MF_OK;
}

/* fusermount3 lets a non-root user mount when it is owned by root, setuid, and not on a nosuid mount. */
static int setuid_fusermount(void)
{
    static const char *const where[] = { "/usr/bin/fusermount3", "/bin/fusermount3", "/usr/local/bin/fusermount3" };
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        struct stat st;
        struct statvfs vfs;
        if (stat(where[i], &st) == 0 && st.st_uid == 0 && (st.st_mode & S_ISUID) &&
            statvfs(where[i], &vfs) == 0 && !(vfs.f_flag & ST_NOSUID))
            return 1;
    }
    return 0;
}

int fs_check_fuse_device(void)
{
    if (access("/dev/fuse", F_OK) != 0)
        return mf_fail(MF_ERR_IO, "/dev/fuse is missing: load the FUSE module (modprobe fuse), or in a container "
                       "pass the device (docker run --device /dev/fuse --cap-add SYS_ADMIN)");
    if (geteuid() == 0)
        return MF_OK;
    /* libfuse opens /dev/fuse itself and gives up when it cannot (no fallback), then has the setuid
     * fusermount3 mount it, because mount(2) needs root */
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return mf_fail(MF_ERR_IO, "cannot open /dev/fuse (%s): a non-root mount needs read and write access to it; "
                       "ask root to make it usable (chmod 0666 /dev/fuse, the mode the fuse3 package sets, or a group "
                       "you are in), or mount as root", strerror(errno));
    close(fd);
    if (!setuid_fusermount())
        return mf_fail(MF_ERR_IO, "a non-root mount needs a setuid-root fusermount3, and none is usable: install the "
                       "fuse3 package, whose /usr/bin/fusermount3 is setuid root (chmod u+s it if the bit was lost; "
                       "not on a nosuid file system), or mount as root");
    return MF_OK;
}
