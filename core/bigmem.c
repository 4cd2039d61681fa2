#include "bigmem.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

void *mf_big_alloc(size_t n, size_t *got)
{
    void *p = NULL;
    if (n < HUGE_PAGE) {
        p = malloc(n ? n : 1);
        if (got)
            *got = n;
        return p;
    }
    if (n > SIZE_MAX - HUGE_PAGE)
        return NULL;
    size_t bytes = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    if (posix_memalign(&p, HUGE_PAGE, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* a hint: if refused, only speed is lost */
#endif
    if (got)
        *got = bytes;
    return p;
}
