#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mremap */
#endif
#include "bigmem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE_PAGE ((size_t)2 << 20)

static void advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (e > a)
        madvise((void *)a, e - a, MADV_HUGEPAGE); /* a hint: if refused, only speed is lost */
#else
    (void)p;
    (void)n;
#endif
}

size_t mf_big_size(size_t n)
{
    if (n < HUGE_PAGE)
        return n;
    if (n > SIZE_MAX - HUGE_PAGE)
        return SIZE_MAX;
    return (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

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
    advise_huge(p, bytes);
    if (got)
        *got = bytes;
    return p;
}

#define ARRAY_MAP_BYTES ((size_t)1 << 20) /* from here on an array has its own mapping */

void *mf_array_grow(void *p, size_t old_bytes, size_t new_bytes)
{
    if (new_bytes < ARRAY_MAP_BYTES)
        return realloc(p, new_bytes ? new_bytes : 1);
    void *q;
    if (p && old_bytes >= ARRAY_MAP_BYTES) {
        q = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
    } else {
        q = mmap(NULL, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q != MAP_FAILED && p) {
            memcpy(q, p, old_bytes);
            free(p);
        }
    }
    if (q == MAP_FAILED)
        return NULL;
    advise_huge(q, new_bytes);
    return q;
}

void mf_array_free(void *p, size_t bytes)
{
    if (p && bytes >= ARRAY_MAP_BYTES)
        munmap(p, bytes);
    else
        free(p);
}

void mf_big_release(void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(page - 1);
    if (e > a)
        madvise((void *)a, e - a, MADV_DONTNEED); /* advice: if refused, only memory is kept */
}
