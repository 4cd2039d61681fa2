/* Small user files shown in the view (tokenizer overlays, hf_config): opened once at mount,
 * without following a symlink out of their folder, regular files only, loaded into memory. */
#ifndef MCOREFS_SMALL_FILE_H
#define MCOREFS_SMALL_FILE_H

#include <stddef.h>
#include <sys/stat.h>

/* Largest overlay or hf_config file accepted: these are tokenizer and JSON files. */
#define MF_SMALL_FILE_MAX (64u << 20)

/* Load `name` beneath the folder open as dirfd (symlinks may be followed but never lead out
 * of it: the open fails with a message naming `shown`), or, with dirfd == AT_FDCWD, the path
 * `name` itself. Returns MF_OK with *data (NUL-terminated, *len bytes) and the file's stat,
 * MF_ERR_MISSING when it does not exist (message set), or another error (message set): not a
 * regular file, above MF_SMALL_FILE_MAX, unreadable, a symlink out of the folder. */
int mf_small_file_load(int dirfd, const char *name, const char *shown, char **data, size_t *len, struct stat *st);

#endif
