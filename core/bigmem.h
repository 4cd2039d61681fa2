/* Large scratch allocations (parse arenas, whole-file buffers). They are 2 MiB aligned and
 * marked for transparent huge pages: filling hundreds of MB one 4 KiB page fault at a time
 * costs more than the parsing that fills them. */
#ifndef MCOREFS_BIGMEM_H
#define MCOREFS_BIGMEM_H

#include <stddef.h>

/* At least n bytes (*got: the usable size, >= n). Small sizes come from plain malloc.
 * Free with free(). NULL when out of memory. */
void *mf_big_alloc(size_t n, size_t *got);
/* The size mf_big_alloc(n) takes (so a caller with a budget can check it first). */
size_t mf_big_size(size_t n);
/* Arrays that grow to tens of MB (the pickle VM's memo): in malloc while small, then in their
 * own huge-page mapping grown with mremap, so growing never copies the contents (glibc's
 * realloc copies heap blocks). NULL on failure, p still valid. Free with mf_array_free and the
 * same size. */
void *mf_array_grow(void *p, size_t old_bytes, size_t new_bytes);
void mf_array_free(void *p, size_t bytes);
/* Hand the whole pages inside [p, p+n) back to the OS (madvise DONTNEED): the memory stays
 * allocated and reads as zeros afterwards. For a buffer that was read once, front to back. */
void mf_big_release(void *p, size_t n);

#endif
