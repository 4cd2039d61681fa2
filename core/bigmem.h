/* Large scratch allocations (parse arenas, whole-file buffers). They are 2 MiB aligned and
 * marked for transparent huge pages: filling hundreds of MB one 4 KiB page fault at a time
 * costs more than the parsing that fills them. */
#ifndef MCOREFS_BIGMEM_H
#define MCOREFS_BIGMEM_H

#include <stddef.h>

/* At least n bytes (*got: the usable size, >= n). Small sizes come from plain malloc.
 * Free with free(). NULL when out of memory. */
void *mf_big_alloc(size_t n, size_t *got);

#endif
