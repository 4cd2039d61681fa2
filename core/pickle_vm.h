/* The pickle VM's private state, shared by the files of the pickle reader: pickle.c (opcodes,
 * load), pickle_values.c (arena, values, stack), pickle_skip.c (skipped values). */
#ifndef MCOREFS_PICKLE_VM_H
#define MCOREFS_PICKLE_VM_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "mcorefs/error.h"
#include "mcorefs/pickle.h"


#define CHUNK_MIN ((size_t)4 << 10)    /* first arena chunk: most pickles are small */
#define CHUNK_MAX ((size_t)8 << 20)    /* chunks double up to this */
#define MAX_MEMO_ID (1u << 24)
#define DEFAULT_BUDGET ((size_t)1 << 30)
#define DEFAULT_DEPTH 10000

typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    max_align_t data[];
} chunk;

struct mf_pickle {
    chunk *head;
    size_t total, budget;
    size_t temp;        /* the VM's stack, marks and memo while loading: also within budget */
    size_t next_chunk;  /* size of the next regular chunk */
    int over_budget;
};

/* Every value is one 32-byte mf_pv whose vm_meta_ holds its nesting depth and a frozen bit:
 * a big .metadata holds millions of values, and touching fresh memory is most of the load time. */
#define FROZEN_BIT 0x80000000u
#define MAX_NODE_DEPTH (FROZEN_BIT - 2)
static inline int is_frozen(const mf_pv *v) { return (v->vm_meta_ & FROZEN_BIT) != 0; }
static inline void freeze(mf_pv *v) { v->vm_meta_ |= FROZEN_BIT; }
static inline uint32_t depth_of(const mf_pv *v) { return v->vm_meta_ & ~FROZEN_BIT; }
static inline void set_depth(mf_pv *v, uint32_t d) { v->vm_meta_ = (v->vm_meta_ & FROZEN_BIT) | d; }

#define SMALL_INT_MIN (-1)
#define SMALL_INT_MAX 255

typedef struct {
    mf_pickle *pk;
    const uint8_t *buf;
    size_t len, pos, op_pos;   /* len: bytes of buf that hold input (all, unless read on demand) */
    size_t total;              /* the input's length */
    int (*fill)(void *fill_ctx, uint8_t *dst, size_t off, size_t n);
    void *fill_ctx;
    int fill_rc;               /* what a failed fill returned (its message is set) */
    size_t released;           /* release_input: buf[0, released) was handed back (whole pages) */
    uint8_t op;
    const char *name;
    size_t max_depth;
    mf_pv **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    mf_pv **memo;
    size_t memo_cap, memo_count;
    size_t memo_hi;         /* memo[0, memo_hi) is initialised (NULL or a value); the rest is not */
    size_t memo_skip_hi;    /* if > memo_hi: ids [memo_hi, memo_skip_hi) were given to skipped values
                             * and are not stored (they read as m->skipped) */
    const char *const *skip_keys;
    size_t skip_at;         /* 0, or the stack index of the key whose value is being skipped */
    size_t skip_next;       /* where the item after that value (the next key) starts, 0 if none */
    size_t skip_next_memo;  /* memo_count there */
    size_t reread;          /* bytes read twice because of rewinds, bounded by the input size */
    mf_pv *skipped;         /* what skipped values load as: a frozen None */
    void *grown;
    int grow_rc;            /* what the last GROW/VGROW returned */
    /* Immutable leaves shared by every use (None, bools, small ints, the empty tuple). */
    mf_pv *none, *bools[2], *empty_tuple;
    mf_pv *small_ints[SMALL_INT_MAX - SMALL_INT_MIN + 1];
} vm;

/* pickle_values.c: arena, errors, values and the stack */
int vm_fail(vm *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vm_oom(vm *m);
int vm_grow(vm *m, const void *arr, size_t *cap, size_t need, size_t elsize);
int vm_vgrow(vm *m, void *arr, size_t *cap, size_t need, size_t elsize);
#define GROW(m, arr, cap, need) \
    (((m)->grow_rc = vm_grow((m), (arr), (cap), (need), sizeof *(arr))) ? (m)->grow_rc : ((arr) = (m)->grown, 0))
#define VGROW(m, arr, cap, need) \
    (((m)->grow_rc = vm_vgrow((m), (arr), (cap), (need), sizeof *(arr))) ? (m)->grow_rc : ((arr) = (m)->grown, 0))
mf_pv *vm_shared(vm *m, mf_pv **slot, mf_pv_kind kind, int64_t i);
mf_pv *vm_new_int(vm *m, int64_t x);
mf_pv *vm_new_str(vm *m, mf_pv_kind kind, const void *s, size_t len);
int vm_adopt(vm *m, mf_pv *parent, mf_pv *child);
int vm_seq_add(vm *m, mf_pv *seq, mf_pv *item);
int vm_dict_reserve(vm *m, mf_pv *d, size_t need);
int vm_dict_add(vm *m, mf_pv *d, mf_pv *k, mf_pv *v);
int vm_pop_mark(vm *m, size_t *start);
int vm_make_seq(vm *m, mf_pv_kind kind, mf_pv **items, size_t n, mf_pv **out);
/* pickle.c: operands and the opcodes */
mf_pv *vm_memo_at(const vm *m, uint64_t id);
int vm_step(vm *m, int *done, mf_pv **result);
/* pickle_skip.c: values under limits->skip_keys, read without being built */
int vm_is_skip_key(const vm *m, const mf_pv *v);
int vm_skip_step(vm *m, int *done, mf_pv **result);

/* The hot helpers, inline: the VM runs them for every opcode and every value (millions for a
 * big .metadata), and its files are separate translation units. */
void *vm_aalloc_slow(mf_pickle *pk, size_t n);
/* n bytes from the arena: the current chunk when it has room, else vm_aalloc_slow. */
static inline void *vm_aalloc(mf_pickle *pk, size_t n)
{
    chunk *c = pk->head;
    size_t r = (n + 7) & ~(size_t)7;
    if (n <= SIZE_MAX / 2 && c && c->cap - c->used >= r) {
        void *p = (char *)c->data + c->used;
        c->used += r;
        return p;
    }
    return vm_aalloc_slow(pk, n);
}
static inline size_t vm_floor(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }
/* Input read on demand: make buf hold at least n bytes from the read position (and a window
 * more). 0 when it does; else fill's error (m->fill_rc) or -1 at the end of the input. */
int vm_fill(vm *m, uint64_t n);
/* The end of the line starting at the read position (GLOBAL operands), NULL if none. */
const uint8_t *vm_line_end(vm *m);
static inline int vm_need(vm *m, uint64_t n)
{
    if (n > m->len - m->pos && vm_fill(m, n) != 0)
        return m->fill_rc ? m->fill_rc
                          : vm_fail(m, MF_ERR_FORMAT, "truncated: needs %llu bytes, %zu left", (unsigned long long)n,
                                    m->total - m->pos);
    return 0;
}

static inline uint64_t vm_rd_le(vm *m, unsigned n)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++)
        x |= (uint64_t)m->buf[m->pos + i] << (8 * i);
    m->pos += n;
    return x;
}

static inline mf_pv *vm_newv(vm *m, mf_pv_kind kind)
{
    mf_pv *v = vm_aalloc(m->pk, sizeof *v);
    if (!v)
        return NULL;
    memset(v, 0, sizeof *v);
    v->kind = kind;
    return v;
}

static inline int vm_push(vm *m, mf_pv *v)
{
    if (!v)
        return vm_oom(m);
    if (m->sp == m->scap && VGROW(m, m->stack, &m->scap, m->sp + 1))
        return m->grow_rc;
    if (m->skip_keys && v->kind == MF_PV_STR && !m->skip_at && vm_is_skip_key(m, v)) {
        m->skip_at = m->sp;
        m->skip_next = 0;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static inline int vm_pop(vm *m, mf_pv **v)
{
    if (m->sp <= vm_floor(m))
        return vm_fail(m, MF_ERR_FORMAT, "stack underflow");
    *v = m->stack[--m->sp];
    return 0;
}

static inline int vm_peek(vm *m, mf_pv **v)
{
    if (m->sp <= vm_floor(m))
        return vm_fail(m, MF_ERR_FORMAT, "stack underflow");
    *v = m->stack[m->sp - 1];
    return 0;
}

#endif
