/* The pickle VM's memory and values: the arena every value lives in (within the load's
 * budget), errors, value constructors, containers and the VM stack. */
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/pickle.h"
#include "mcorefs/error.h"
#include "bigmem.h"
#include "pickle_vm.h"

/* ---- arena ---- */

static chunk *chunk_new(size_t cap)
{
    size_t got = 0;
    chunk *c = mf_big_alloc(sizeof(chunk) + cap, &got);
    if (!c)
        return NULL;
    c->cap = got - sizeof(chunk);
    c->used = 0;
    return c;
}

/* What is left of the budget. */
static size_t room(const mf_pickle *pk)
{
    size_t used = pk->total + pk->temp;
    return used < pk->budget ? pk->budget - used : 0;
}

void *vm_aalloc_slow(mf_pickle *pk, size_t n)
{
    if (n > SIZE_MAX / 2)
        return pk->over_budget = 1, NULL;
    n = (n + 7) & ~(size_t)7; /* values hold nothing wider than 8 bytes */
    chunk *c = pk->head;
    if (!c || c->cap - c->used < n) {
        size_t regular = pk->next_chunk ? pk->next_chunk : CHUNK_MIN;
        int big = n > regular / 4;
        size_t cap = big ? n : regular;
        if (cap > SIZE_MAX / 2 || mf_big_size(sizeof(chunk) + cap) > room(pk)) {
            pk->over_budget = 1;
            return NULL;
        }
        chunk *nc = chunk_new(cap);
        if (!nc)
            return NULL;
        pk->total += nc->cap;
        if (c && big) { /* keep the current chunk in front */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            pk->head = nc;
            pk->next_chunk = regular < CHUNK_MAX ? 2 * regular : CHUNK_MAX;
        }
        c = nc;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

size_t mf_pickle_bytes(const mf_pickle *pk)
{
    return pk ? pk->total : 0;
}

void mf_pickle_free(mf_pickle *pk)
{
    if (!pk)
        return;
    for (chunk *c = pk->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(pk);
}

/* ---- errors ---- */

int vm_fail(vm *m, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mf_fail(code, "%s: pickle: %s (opcode 0x%02x at offset %zu)", m->name, msg, m->op, m->op_pos);
}

int vm_oom(vm *m)
{
    if (m->pk->over_budget)
        return m->pk->budget >= ((size_t)1 << 20)
                   ? vm_fail(m, MF_ERR_LIMIT, "its values need more than the %zu MiB of memory allowed for them",
                          m->pk->budget >> 20)
                   : vm_fail(m, MF_ERR_LIMIT, "its values need more than the %zu bytes of memory allowed for them",
                          m->pk->budget);
    return vm_fail(m, MF_ERR_NOMEM, "out of memory");
}

/* cap doubled until it holds need elements of elsize bytes; -1 if that overflows. */
static int doubled_cap(size_t cap, size_t need, size_t elsize, size_t *out)
{
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / elsize)
            return -1;
        cap *= 2;
    }
    *out = cap;
    return 0;
}

/* Grow an arena array to hold at least `need` elements (old copy is left in the arena).
 * The new pointer goes through m->grown so no typed pointer is written through a void **. */
int vm_grow(vm *m, const void *arr, size_t *cap, size_t need, size_t elsize)
{
    m->grown = (void *)(uintptr_t)arr;
    size_t nc;
    if (need <= *cap)
        return 0;
    if (doubled_cap(*cap ? *cap : 4, need, elsize, &nc))
        return m->pk->over_budget = 1, vm_oom(m);
    void *p = vm_aalloc(m->pk, nc * elsize);
    if (!p)
        return vm_oom(m);
    if (*cap && arr)
        memcpy(p, arr, *cap * elsize);
    m->grown = p;
    *cap = nc;
    return 0;
}

/* The VM's own arrays (stack, marks, memo) live outside the arena: they are dropped after the
 * load, and realloc does not leave every outgrown copy behind. They count against the budget. */
int vm_vgrow(vm *m, void *arr, size_t *cap, size_t need, size_t elsize)
{
    m->grown = arr;
    size_t nc;
    if (need <= *cap)
        return 0;
    if (doubled_cap(*cap ? *cap : 16, need, elsize, &nc))
        return m->pk->over_budget = 1, vm_oom(m);
    size_t add = (nc - *cap) * elsize;
    if (add > room(m->pk))
        return m->pk->over_budget = 1, vm_oom(m);
    void *p = mf_array_grow(arr, *cap * elsize, nc * elsize); /* the memo of a big .metadata: tens of MB */
    if (!p)
        return vm_oom(m);
    m->pk->temp += add;
    m->grown = p;
    *cap = nc;
    return 0;
}

/* ---- values ---- */

/* A shared immutable leaf: created once, frozen, so no container op can ever change it. */
mf_pv *vm_shared(vm *m, mf_pv **slot, mf_pv_kind kind, int64_t i)
{
    if (!*slot && (*slot = vm_newv(m, kind)) != NULL) {
        (*slot)->u.i = i;
        freeze(*slot);
    }
    return *slot;
}

mf_pv *vm_new_int(vm *m, int64_t x)
{
    if (x >= SMALL_INT_MIN && x <= SMALL_INT_MAX)
        return vm_shared(m, &m->small_ints[x - SMALL_INT_MIN], MF_PV_INT, x);
    mf_pv *v = vm_newv(m, MF_PV_INT);
    if (v)
        v->u.i = x;
    return v;
}

mf_pv *vm_new_str(vm *m, mf_pv_kind kind, const void *s, size_t len)
{
    mf_pv *v = vm_newv(m, kind);
    char *d = v && len < SIZE_MAX ? vm_aalloc(m->pk, len + 1) : NULL;
    if (!d)
        return NULL;
    if (len && s)
        memcpy(d, s, len);
    d[len] = '\0';
    v->u.str.s = d;
    v->u.str.len = len;
    return v;
}

/* Record that child now lives inside parent. 0: ok, 1: refused (would make a cycle), <0: error. */
int vm_adopt(vm *m, mf_pv *parent, mf_pv *child)
{
    if (parent == child || is_frozen(parent))
        return 1;
    freeze(child);
    size_t d = (size_t)depth_of(child) + 1;
    if (d > m->max_depth)
        return vm_fail(m, MF_ERR_LIMIT, "values nested deeper than %zu", m->max_depth);
    if (d > depth_of(parent))
        set_depth(parent, (uint32_t)d);
    return 0;
}

int vm_seq_add(vm *m, mf_pv *seq, mf_pv *item)
{
    int rc = vm_adopt(m, seq, item);
    if (rc)
        return rc < 0 ? rc : 0;
    if (GROW(m, seq->u.seq.items, &seq->u.seq.cap, seq->u.seq.n + 1))
        return m->grow_rc;
    seq->u.seq.items[seq->u.seq.n++] = item;
    return 0;
}

/* Keys and values share one arena block (vals = keys + cap): one allocation per growth. */
int vm_dict_reserve(vm *m, mf_pv *d, size_t need)
{
    size_t cap = d->u.dict.cap;
    if (need <= cap)
        return 0;
    size_t half = cap ? 2 * cap : need; /* SETITEMS reserves a whole batch: exact at first */
    if (half < need)
        half = need;
    if (half > UINT32_MAX)
        return m->pk->over_budget = 1, vm_oom(m);
    mf_pv **block = vm_aalloc(m->pk, 2 * half * sizeof *block);
    if (!block)
        return vm_oom(m);
    if (d->u.dict.n) {
        memcpy(block, d->u.dict.keys, d->u.dict.n * sizeof *block);
        memcpy(block + half, d->u.dict.vals, d->u.dict.n * sizeof *block);
    }
    d->u.dict.keys = block;
    d->u.dict.vals = block + half;
    d->u.dict.cap = (uint32_t)half;
    return 0;
}

int vm_dict_add(vm *m, mf_pv *d, mf_pv *k, mf_pv *v)
{
    if (is_frozen(d) || k == d || v == d)
        return 0;
    int rc = vm_adopt(m, d, k);
    if (rc == 0)
        rc = vm_adopt(m, d, v);
    if (rc)
        return rc < 0 ? rc : 0;
    if ((rc = vm_dict_reserve(m, d, d->u.dict.n + 1)))
        return rc;
    d->u.dict.keys[d->u.dict.n] = k;
    d->u.dict.vals[d->u.dict.n++] = v;
    return 0;
}

/* ---- stack ---- */



/* Items above the top mark: [*start, m->sp). Caller sets m->sp = *start when done. */
int vm_pop_mark(vm *m, size_t *start)
{
    if (!m->nmarks)
        return vm_fail(m, MF_ERR_FORMAT, "no MARK on the stack");
    *start = m->marks[--m->nmarks];
    return 0;
}

int vm_make_seq(vm *m, mf_pv_kind kind, mf_pv **items, size_t n, mf_pv **out)
{
    mf_pv *s = vm_newv(m, kind);
    if (!s || GROW(m, s->u.seq.items, &s->u.seq.cap, n))
        return s ? m->grow_rc : vm_oom(m);
    for (size_t i = 0; i < n; i++) {
        int rc = vm_seq_add(m, s, items[i]);
        if (rc)
            return rc;
    }
    *out = s;
    return 0;
}
