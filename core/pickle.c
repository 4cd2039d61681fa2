/* Safe pickle VM: builds an inert value tree, never imports or calls anything.
 *
 * Cycle/depth rule: a container or object becomes "frozen" when it is placed inside another
 * value. Later SETITEM(S)/APPEND(S)/ADDITEMS/BUILD on a frozen value are ignored. The Python
 * pickler always finishes a container before its parent references it, so this only drops
 * data from recursive structures, and it guarantees the result is acyclic with an exact,
 * bounded nesting depth (kept in the private node header). */
#include "mcorefs/pickle.h"
#include "mcorefs/error.h"
#include "bigmem.h"

#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
static int is_frozen(const mf_pv *v) { return (v->vm_meta_ & FROZEN_BIT) != 0; }
static void freeze(mf_pv *v) { v->vm_meta_ |= FROZEN_BIT; }
static uint32_t depth_of(const mf_pv *v) { return v->vm_meta_ & ~FROZEN_BIT; }
static void set_depth(mf_pv *v, uint32_t d) { v->vm_meta_ = (v->vm_meta_ & FROZEN_BIT) | d; }

#define SMALL_INT_MIN (-1)
#define SMALL_INT_MAX 255

typedef struct {
    mf_pickle *pk;
    const uint8_t *buf;
    size_t len, pos, op_pos;
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

static void *aalloc(mf_pickle *pk, size_t n)
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

static int fail(vm *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(vm *m, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mf_fail(code, "%s: pickle: %s (opcode 0x%02x at offset %zu)", m->name, msg, m->op, m->op_pos);
}

static int oom(vm *m)
{
    if (m->pk->over_budget)
        return m->pk->budget >= ((size_t)1 << 20)
                   ? fail(m, MF_ERR_LIMIT, "its values need more than the %zu MiB of memory allowed for them",
                          m->pk->budget >> 20)
                   : fail(m, MF_ERR_LIMIT, "its values need more than the %zu bytes of memory allowed for them",
                          m->pk->budget);
    return fail(m, MF_ERR_NOMEM, "out of memory");
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
static int grow_(vm *m, const void *arr, size_t *cap, size_t need, size_t elsize)
{
    m->grown = (void *)(uintptr_t)arr;
    size_t nc;
    if (need <= *cap)
        return 0;
    if (doubled_cap(*cap ? *cap : 4, need, elsize, &nc))
        return m->pk->over_budget = 1, oom(m);
    void *p = aalloc(m->pk, nc * elsize);
    if (!p)
        return oom(m);
    if (*cap && arr)
        memcpy(p, arr, *cap * elsize);
    m->grown = p;
    *cap = nc;
    return 0;
}
#define GROW(m, arr, cap, need) \
    (((m)->grow_rc = grow_((m), (arr), (cap), (need), sizeof *(arr))) ? (m)->grow_rc : ((arr) = (m)->grown, 0))

/* The VM's own arrays (stack, marks, memo) live outside the arena: they are dropped after the
 * load, and realloc does not leave every outgrown copy behind. They count against the budget. */
static int vgrow_(vm *m, void *arr, size_t *cap, size_t need, size_t elsize)
{
    m->grown = arr;
    size_t nc;
    if (need <= *cap)
        return 0;
    if (doubled_cap(*cap ? *cap : 16, need, elsize, &nc))
        return m->pk->over_budget = 1, oom(m);
    size_t add = (nc - *cap) * elsize;
    if (add > room(m->pk))
        return m->pk->over_budget = 1, oom(m);
    void *p = mf_array_grow(arr, *cap * elsize, nc * elsize); /* the memo of a big .metadata: tens of MB */
    if (!p)
        return oom(m);
    m->pk->temp += add;
    m->grown = p;
    *cap = nc;
    return 0;
}
#define VGROW(m, arr, cap, need) \
    (((m)->grow_rc = vgrow_((m), (arr), (cap), (need), sizeof *(arr))) ? (m)->grow_rc : ((arr) = (m)->grown, 0))

/* ---- values ---- */

static mf_pv *newv(vm *m, mf_pv_kind kind)
{
    mf_pv *v = aalloc(m->pk, sizeof *v);
    if (!v)
        return NULL;
    memset(v, 0, sizeof *v);
    v->kind = kind;
    return v;
}

/* A shared immutable leaf: created once, frozen, so no container op can ever change it. */
static mf_pv *shared(vm *m, mf_pv **slot, mf_pv_kind kind, int64_t i)
{
    if (!*slot && (*slot = newv(m, kind)) != NULL) {
        (*slot)->u.i = i;
        freeze(*slot);
    }
    return *slot;
}

static mf_pv *new_int(vm *m, int64_t x)
{
    if (x >= SMALL_INT_MIN && x <= SMALL_INT_MAX)
        return shared(m, &m->small_ints[x - SMALL_INT_MIN], MF_PV_INT, x);
    mf_pv *v = newv(m, MF_PV_INT);
    if (v)
        v->u.i = x;
    return v;
}

static mf_pv *new_str(vm *m, mf_pv_kind kind, const void *s, size_t len)
{
    mf_pv *v = newv(m, kind);
    char *d = v && len < SIZE_MAX ? aalloc(m->pk, len + 1) : NULL;
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
static int adopt(vm *m, mf_pv *parent, mf_pv *child)
{
    if (parent == child || is_frozen(parent))
        return 1;
    freeze(child);
    size_t d = (size_t)depth_of(child) + 1;
    if (d > m->max_depth)
        return fail(m, MF_ERR_LIMIT, "values nested deeper than %zu", m->max_depth);
    if (d > depth_of(parent))
        set_depth(parent, (uint32_t)d);
    return 0;
}

static int seq_add(vm *m, mf_pv *seq, mf_pv *item)
{
    int rc = adopt(m, seq, item);
    if (rc)
        return rc < 0 ? rc : 0;
    if (GROW(m, seq->u.seq.items, &seq->u.seq.cap, seq->u.seq.n + 1))
        return m->grow_rc;
    seq->u.seq.items[seq->u.seq.n++] = item;
    return 0;
}

/* Keys and values share one arena block (vals = keys + cap): one allocation per growth. */
static int dict_reserve(vm *m, mf_pv *d, size_t need)
{
    size_t cap = d->u.dict.cap;
    if (need <= cap)
        return 0;
    size_t half = cap ? 2 * cap : need; /* SETITEMS reserves a whole batch: exact at first */
    if (half < need)
        half = need;
    if (half > UINT32_MAX)
        return m->pk->over_budget = 1, oom(m);
    mf_pv **block = aalloc(m->pk, 2 * half * sizeof *block);
    if (!block)
        return oom(m);
    if (d->u.dict.n) {
        memcpy(block, d->u.dict.keys, d->u.dict.n * sizeof *block);
        memcpy(block + half, d->u.dict.vals, d->u.dict.n * sizeof *block);
    }
    d->u.dict.keys = block;
    d->u.dict.vals = block + half;
    d->u.dict.cap = (uint32_t)half;
    return 0;
}

static int dict_add(vm *m, mf_pv *d, mf_pv *k, mf_pv *v)
{
    if (is_frozen(d) || k == d || v == d)
        return 0;
    int rc = adopt(m, d, k);
    if (rc == 0)
        rc = adopt(m, d, v);
    if (rc)
        return rc < 0 ? rc : 0;
    if ((rc = dict_reserve(m, d, d->u.dict.n + 1)))
        return rc;
    d->u.dict.keys[d->u.dict.n] = k;
    d->u.dict.vals[d->u.dict.n++] = v;
    return 0;
}

/* ---- stack ---- */

static size_t floor_(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

static int is_skip_key(const vm *m, const mf_pv *v);

static int push(vm *m, mf_pv *v)
{
    if (!v)
        return oom(m);
    if (m->sp == m->scap && VGROW(m, m->stack, &m->scap, m->sp + 1))
        return m->grow_rc;
    if (m->skip_keys && v->kind == MF_PV_STR && !m->skip_at && is_skip_key(m, v)) {
        m->skip_at = m->sp;
        m->skip_next = 0;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static int pop(vm *m, mf_pv **v)
{
    if (m->sp <= floor_(m))
        return fail(m, MF_ERR_FORMAT, "stack underflow");
    *v = m->stack[--m->sp];
    return 0;
}

static int peek(vm *m, mf_pv **v)
{
    if (m->sp <= floor_(m))
        return fail(m, MF_ERR_FORMAT, "stack underflow");
    *v = m->stack[m->sp - 1];
    return 0;
}

/* Items above the top mark: [*start, m->sp). Caller sets m->sp = *start when done. */
static int pop_mark(vm *m, size_t *start)
{
    if (!m->nmarks)
        return fail(m, MF_ERR_FORMAT, "no MARK on the stack");
    *start = m->marks[--m->nmarks];
    return 0;
}

static int make_seq(vm *m, mf_pv_kind kind, mf_pv **items, size_t n, mf_pv **out)
{
    mf_pv *s = newv(m, kind);
    if (!s || GROW(m, s->u.seq.items, &s->u.seq.cap, n))
        return s ? m->grow_rc : oom(m);
    for (size_t i = 0; i < n; i++) {
        int rc = seq_add(m, s, items[i]);
        if (rc)
            return rc;
    }
    *out = s;
    return 0;
}

/* ---- reading operands ---- */

static int need(vm *m, uint64_t n)
{
    if (n > m->len - m->pos)
        return fail(m, MF_ERR_FORMAT, "truncated: needs %llu bytes, %zu left", (unsigned long long)n, m->len - m->pos);
    return 0;
}

static uint64_t rd_le(vm *m, unsigned n)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++)
        x |= (uint64_t)m->buf[m->pos + i] << (8 * i);
    m->pos += n;
    return x;
}

/* Length-prefixed string/bytes: `lb` length bytes, then the data. */
static int op_str(vm *m, unsigned lb, mf_pv_kind kind, int signed32)
{
    int rc = need(m, lb);
    if (rc)
        return rc;
    uint64_t n = rd_le(m, lb);
    if (signed32 && n > INT32_MAX)
        return fail(m, MF_ERR_FORMAT, "negative string length");
    if ((rc = need(m, n)))
        return rc;
    mf_pv *v = new_str(m, kind, m->buf + m->pos, (size_t)n);
    m->pos += (size_t)n;
    return push(m, v);
}

static mf_pv *new_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    /* Python 2 spellings, as pickle's fix_imports maps them. */
    if (ml == 11 && memcmp(mod, "__builtin__", 11) == 0)
        mod = "builtins", ml = 8;
    else if (ml == 8 && memcmp(mod, "copy_reg", 8) == 0)
        mod = "copyreg", ml = 7;
    mf_pv *g = newv(m, MF_PV_GLOBAL);
    char *a = g ? aalloc(m->pk, ml + 1) : NULL, *b = a ? aalloc(m->pk, nl + 1) : NULL;
    if (!b)
        return NULL;
    memcpy(a, mod, ml), a[ml] = '\0';
    memcpy(b, name, nl), b[nl] = '\0';
    g->u.global.module = a;
    g->u.global.name = b;
    return g;
}

static int op_global(vm *m)
{
    const char *s[2];
    size_t l[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *p = m->buf + m->pos, *nl = memchr(p, '\n', m->len - m->pos);
        if (!nl)
            return fail(m, MF_ERR_FORMAT, "GLOBAL line without newline");
        s[i] = (const char *)p;
        l[i] = (size_t)(nl - p);
        m->pos += l[i] + 1;
    }
    return push(m, new_global(m, s[0], l[0], s[1], l[1]));
}

/* LONG1/LONG4: little-endian two's complement. Beyond int64 -> inert builtins.int(bytes). */
static int op_long(vm *m, unsigned lb)
{
    int rc = need(m, lb);
    if (rc)
        return rc;
    uint64_t n = rd_le(m, lb);
    if (lb == 4 && n > INT32_MAX)
        return fail(m, MF_ERR_FORMAT, "negative LONG4 length");
    if ((rc = need(m, n)))
        return rc;
    const uint8_t *p = m->buf + m->pos;
    m->pos += (size_t)n;
    int neg = n && (p[n - 1] & 0x80);
    int fits = 1;
    for (uint64_t i = 8; i < n; i++)
        fits &= p[i] == (neg ? 0xFF : 0x00);
    if (n > 8)
        fits &= ((p[7] & 0x80) != 0) == neg;
    if (fits) {
        uint64_t x = neg ? UINT64_MAX : 0;
        for (uint64_t i = 0; i < n && i < 8; i++) {
            x &= ~((uint64_t)0xFF << (8 * i));
            x |= (uint64_t)p[i] << (8 * i);
        }
        int64_t i;
        memcpy(&i, &x, sizeof x); /* two's complement reinterpretation */
        return push(m, new_int(m, i));
    }
    mf_pv *o = newv(m, MF_PV_OBJECT), *g = new_global(m, "builtins", 8, "int", 3);
    mf_pv *b = new_str(m, MF_PV_BYTES, p, (size_t)n);
    if (!o || !g || !b)
        return oom(m);
    o->u.obj.callable = g;
    o->u.obj.args = b;
    freeze(g);
    freeze(b);
    set_depth(o, 1);
    return push(m, o);
}

static int memo_put(vm *m, uint64_t id)
{
    mf_pv *v = NULL;
    int rc = peek(m, &v);
    if (rc)
        return rc;
    if (id >= MAX_MEMO_ID)
        return fail(m, MF_ERR_LIMIT, "memo id %llu exceeds the largest allowed, %u", (unsigned long long)id,
                    MAX_MEMO_ID - 1);
    if (m->memo_skip_hi > m->memo_hi) { /* store the skipped ids before anything after them */
        if (VGROW(m, m->memo, &m->memo_cap, m->memo_skip_hi))
            return m->grow_rc;
        for (size_t i = m->memo_hi; i < m->memo_skip_hi; i++)
            m->memo[i] = m->skipped;
        m->memo_hi = m->memo_skip_hi;
    }
    if (VGROW(m, m->memo, &m->memo_cap, (size_t)id + 1))
        return m->grow_rc;
    if (id >= m->memo_hi) { /* ids normally come in order: only a gap needs clearing */
        if (id > m->memo_hi)
            memset(m->memo + m->memo_hi, 0, ((size_t)id - m->memo_hi) * sizeof(mf_pv *));
        m->memo_hi = (size_t)id + 1;
        m->memo_count++;
    } else if (!m->memo[id]) {
        m->memo_count++;
    }
    m->memo[id] = v;
    return 0;
}

/* The value of memo id, or NULL when it is not defined. */
static mf_pv *memo_at(const vm *m, uint64_t id)
{
    if (id < m->memo_hi)
        return m->memo[id];
    return id < m->memo_skip_hi ? m->skipped : NULL;
}

static int memo_get(vm *m, uint64_t id)
{
    mf_pv *v = memo_at(m, id);
    if (!v)
        return fail(m, MF_ERR_FORMAT, "memo id %llu not defined", (unsigned long long)id);
    return push(m, v);
}

/* ---- REDUCE folding of pure-data constructors ---- */

static int args_n(const mf_pv *a, size_t n) { return a->kind == MF_PV_TUPLE && a->u.seq.n == n; }
static int is_seq(const mf_pv *v) { return v->kind == MF_PV_LIST || v->kind == MF_PV_TUPLE; }

/* UTF-8 -> Latin-1 bytes (what _codecs.encode(s, 'latin1') returns for pickled bytes). */
static int latin1(vm *m, const mf_pv *s, mf_pv **out)
{
    mf_pv *b = new_str(m, MF_PV_BYTES, NULL, s->u.str.len);
    if (!b)
        return oom(m);
    const uint8_t *p = (const uint8_t *)s->u.str.s, *e = p + s->u.str.len;
    size_t n = 0;
    while (p < e) {
        unsigned c = *p++;
        if (c >= 0x80) {
            if ((c & 0xE0) != 0xC0 || p >= e || (*p & 0xC0) != 0x80)
                return fail(m, MF_ERR_FORMAT, "_codecs.encode: string is not latin-1 encodable");
            c = ((c & 0x1F) << 6) | (*p++ & 0x3F);
            if (c < 0x80 || c > 0xFF)
                return fail(m, MF_ERR_FORMAT, "_codecs.encode: string is not latin-1 encodable");
        }
        b->u.str.s[n++] = (char)c;
    }
    b->u.str.s[n] = '\0';
    b->u.str.len = n;
    *out = b;
    return 0;
}

static int reduce(vm *m, mf_pv *fn, mf_pv *args, mf_pv **out)
{
    int rc;
    if (args->kind == MF_PV_TUPLE) {
        if (mf_pv_is_global(fn, "collections", "OrderedDict")) {
            if (args_n(args, 0))
                return (*out = newv(m, MF_PV_DICT)) ? 0 : oom(m);
            mf_pv *l = args_n(args, 1) ? args->u.seq.items[0] : NULL;
            int ok = l && is_seq(l);
            for (size_t i = 0; ok && i < l->u.seq.n; i++)
                ok = args_n(l->u.seq.items[i], 2);
            if (ok) {
                mf_pv *d = newv(m, MF_PV_DICT);
                if (!d)
                    return oom(m);
                for (size_t i = 0; i < l->u.seq.n; i++)
                    if ((rc = dict_add(m, d, l->u.seq.items[i]->u.seq.items[0], l->u.seq.items[i]->u.seq.items[1])))
                        return rc;
                return *out = d, 0;
            }
        }
        if (mf_pv_is_global(fn, "torch", "Size") && args_n(args, 1) && args->u.seq.items[0]->kind == MF_PV_TUPLE)
            return *out = args->u.seq.items[0], 0;
        if (mf_pv_is_global(fn, "_codecs", "encode") && args_n(args, 2) && args->u.seq.items[0]->kind == MF_PV_STR) {
            const char *enc = mf_pv_get_str(args->u.seq.items[1]);
            if (enc && (strcmp(enc, "latin1") == 0 || strcmp(enc, "latin-1") == 0))
                return latin1(m, args->u.seq.items[0], out);
        }
        if (mf_pv_is_global(fn, "builtins", "bytes") && args_n(args, 0))
            return (*out = new_str(m, MF_PV_BYTES, "", 0)) ? 0 : oom(m);
        if ((mf_pv_is_global(fn, "builtins", "set") || mf_pv_is_global(fn, "builtins", "frozenset"))) {
            if (args_n(args, 0))
                return (*out = newv(m, MF_PV_SET)) ? 0 : oom(m);
            if (args_n(args, 1) && is_seq(args->u.seq.items[0]))
                return make_seq(m, MF_PV_SET, args->u.seq.items[0]->u.seq.items, args->u.seq.items[0]->u.seq.n, out);
        }
    }
    mf_pv *o = newv(m, MF_PV_OBJECT);
    if (!o)
        return oom(m);
    if ((rc = adopt(m, o, fn)) < 0 || (rc = adopt(m, o, args)) < 0)
        return rc;
    o->u.obj.callable = fn;
    o->u.obj.args = args;
    return *out = o, 0;
}

/* ---- mark-based container ops ---- */

static int op_setitems(vm *m, int single)
{
    size_t start = 0;
    int rc;
    if (single) {
        if (m->sp < floor_(m) + 2)
            return fail(m, MF_ERR_FORMAT, "stack underflow");
        start = m->sp - 2;
    } else if ((rc = pop_mark(m, &start))) {
        return rc;
    }
    if ((m->sp - start) % 2)
        return fail(m, MF_ERR_FORMAT, "odd number of items for SETITEMS");
    if (start <= floor_(m))
        return fail(m, MF_ERR_FORMAT, "SETITEMS without a target");
    mf_pv *d = m->stack[start - 1];
    if (d->kind == MF_PV_DICT) {
        if (!is_frozen(d) && (rc = dict_reserve(m, d, d->u.dict.n + (m->sp - start) / 2)))
            return rc;
        for (size_t i = start; i < m->sp; i += 2)
            if ((rc = dict_add(m, d, m->stack[i], m->stack[i + 1])))
                return rc;
    } else if (d->kind != MF_PV_OBJECT) { /* objects: __setitem__ is never run */
        return fail(m, MF_ERR_FORMAT, "SETITEM on a non-dict value");
    }
    m->sp = start;
    return 0;
}

static int op_appends(vm *m, int single, mf_pv_kind want)
{
    size_t start = 0;
    int rc;
    if (single) {
        if (m->sp < floor_(m) + 1)
            return fail(m, MF_ERR_FORMAT, "stack underflow");
        start = m->sp - 1;
    } else if ((rc = pop_mark(m, &start))) {
        return rc;
    }
    if (start <= floor_(m))
        return fail(m, MF_ERR_FORMAT, "APPEND without a target");
    mf_pv *l = m->stack[start - 1];
    if (l->kind == want) {
        if (!is_frozen(l) && GROW(m, l->u.seq.items, &l->u.seq.cap, l->u.seq.n + (m->sp - start)))
            return m->grow_rc;
        for (size_t i = start; i < m->sp; i++)
            if ((rc = seq_add(m, l, m->stack[i])))
                return rc;
    } else if (l->kind != MF_PV_OBJECT) {
        return fail(m, MF_ERR_FORMAT, "APPEND/ADDITEMS on a value of the wrong kind");
    }
    m->sp = start;
    return 0;
}

static int op_collect(vm *m, mf_pv_kind kind) /* TUPLE, LIST, FROZENSET, DICT after MARK */
{
    size_t start = 0;
    int rc = pop_mark(m, &start);
    if (rc)
        return rc;
    mf_pv *v = NULL;
    if (kind == MF_PV_DICT) {
        if ((m->sp - start) % 2)
            return fail(m, MF_ERR_FORMAT, "odd number of items for DICT");
        if (!(v = newv(m, MF_PV_DICT)))
            return oom(m);
        if ((rc = dict_reserve(m, v, (m->sp - start) / 2)))
            return rc;
        for (size_t i = start; i < m->sp; i += 2)
            if ((rc = dict_add(m, v, m->stack[i], m->stack[i + 1])))
                return rc;
    } else if ((rc = make_seq(m, kind, m->stack + start, m->sp - start, &v))) {
        return rc;
    }
    m->sp = start;
    return push(m, v);
}

static int op_tuple_n(vm *m, size_t n)
{
    if (m->sp < floor_(m) + n)
        return fail(m, MF_ERR_FORMAT, "stack underflow");
    mf_pv *t;
    int rc = make_seq(m, MF_PV_TUPLE, m->stack + m->sp - n, n, &t);
    if (rc)
        return rc;
    m->sp -= n;
    return push(m, t);
}

/* ---- the VM loop ---- */

static int step(vm *m, int *done, mf_pv **result)
{
    mf_pv *a = NULL, *b = NULL, *c = NULL, *v = NULL;
    int rc;
    m->op_pos = m->pos;
    m->op = m->buf[m->pos++];
    switch (m->op) {
    case 0x80: /* PROTO */
        if ((rc = need(m, 1)))
            return rc;
        if (m->buf[m->pos] > 5)
            return fail(m, MF_ERR_UNSUPPORTED, "pickle protocol %u is not supported", m->buf[m->pos]);
        m->pos++;
        return 0;
    case 0x95: /* FRAME: framing is only a read-ahead hint */
        if ((rc = need(m, 8)))
            return rc;
        m->pos += 8;
        return 0;
    case '.': /* STOP */
        if ((rc = pop(m, result)))
            return rc;
        *done = 1;
        return 0;
    case '(': /* MARK */
        if (m->nmarks >= m->max_depth)
            return fail(m, MF_ERR_LIMIT, "more than %zu nested MARKs", m->max_depth);
        if (VGROW(m, m->marks, &m->mcap, m->nmarks + 1))
            return m->grow_rc;
        m->marks[m->nmarks++] = m->sp;
        return 0;
    case '0': /* POP: like CPython, pops a mark when the stack above it is empty */
        if (m->sp > floor_(m))
            return m->sp--, 0;
        return pop_mark(m, &m->sp);
    case '1': /* POP_MARK */
        return pop_mark(m, &m->sp);
    case '2': /* DUP */
        return (rc = peek(m, &v)) ? rc : push(m, v);
    case 'N': return push(m, shared(m, &m->none, MF_PV_NONE, 0));
    case 0x88:
    case 0x89:
        return push(m, shared(m, &m->bools[m->op == 0x88], MF_PV_BOOL, m->op == 0x88));
    case 'J':
    case 'K':
    case 'M': {
        unsigned n = m->op == 'J' ? 4 : m->op == 'K' ? 1 : 2;
        if ((rc = need(m, n)))
            return rc;
        uint64_t x = rd_le(m, n);
        return push(m, new_int(m, n == 4 ? (int64_t)(int32_t)(uint32_t)x : (int64_t)x));
    }
    case 0x8a: return op_long(m, 1);
    case 0x8b: return op_long(m, 4);
    case 'G': { /* BINFLOAT: big-endian IEEE double */
        if ((rc = need(m, 8)))
            return rc;
        uint64_t x = 0;
        for (int i = 0; i < 8; i++)
            x = x << 8 | m->buf[m->pos++];
        if ((v = newv(m, MF_PV_FLOAT)))
            memcpy(&v->u.f, &x, sizeof x);
        return push(m, v);
    }
    case 'X': return op_str(m, 4, MF_PV_STR, 0);
    case 0x8c: return op_str(m, 1, MF_PV_STR, 0);
    case 0x8d: return op_str(m, 8, MF_PV_STR, 0);
    case 'U': return op_str(m, 1, MF_PV_STR, 0);
    case 'T': return op_str(m, 4, MF_PV_STR, 1);
    case 'C': return op_str(m, 1, MF_PV_BYTES, 0);
    case 'B': return op_str(m, 4, MF_PV_BYTES, 0);
    case 0x8e:
    case 0x96: return op_str(m, 8, MF_PV_BYTES, 0);
    case ')': return push(m, shared(m, &m->empty_tuple, MF_PV_TUPLE, 0));
    case 't': return op_collect(m, MF_PV_TUPLE);
    case 0x85: return op_tuple_n(m, 1);
    case 0x86: return op_tuple_n(m, 2);
    case 0x87: return op_tuple_n(m, 3);
    case ']': return push(m, newv(m, MF_PV_LIST));
    case 'l': return op_collect(m, MF_PV_LIST);
    case 'a': return op_appends(m, 1, MF_PV_LIST);
    case 'e': return op_appends(m, 0, MF_PV_LIST);
    case '}': return push(m, newv(m, MF_PV_DICT));
    case 'd': return op_collect(m, MF_PV_DICT);
    case 's': return op_setitems(m, 1);
    case 'u': return op_setitems(m, 0);
    case 0x8f: return push(m, newv(m, MF_PV_SET));
    case 0x90: return op_appends(m, 0, MF_PV_SET);
    case 0x91: return op_collect(m, MF_PV_SET);
    case 'c': return op_global(m);
    case 0x93: /* STACK_GLOBAL */
        if ((rc = pop(m, &b)) || (rc = pop(m, &a)))
            return rc;
        if (a->kind != MF_PV_STR || b->kind != MF_PV_STR)
            return fail(m, MF_ERR_FORMAT, "STACK_GLOBAL needs two strings");
        return push(m, new_global(m, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len));
    case 'R': /* REDUCE */
        if ((rc = pop(m, &b)) || (rc = pop(m, &a)) || (rc = reduce(m, a, b, &v)))
            return rc;
        return push(m, v);
    case 0x81: /* NEWOBJ */
    case 0x92: /* NEWOBJ_EX: kwargs are dropped */
        if (m->op == 0x92 && (rc = pop(m, &c)))
            return rc;
        if ((rc = pop(m, &b)) || (rc = pop(m, &a)))
            return rc;
        if (!(v = newv(m, MF_PV_OBJECT)))
            return oom(m);
        if ((rc = adopt(m, v, a)) < 0 || (rc = adopt(m, v, b)) < 0)
            return rc;
        v->u.obj.callable = a;
        v->u.obj.args = b;
        return push(m, v);
    case 'b': /* BUILD: state on objects only; ignored on dicts (OrderedDict _metadata) etc. */
        if ((rc = pop(m, &b)) || (rc = peek(m, &a)))
            return rc;
        if (a->kind == MF_PV_OBJECT && (rc = adopt(m, a, b)) <= 0) {
            if (rc < 0)
                return rc;
            a->u.obj.state = b;
        }
        return 0;
    case 'q':
        if ((rc = need(m, 1)))
            return rc;
        return memo_put(m, rd_le(m, 1));
    case 'r':
        if ((rc = need(m, 4)))
            return rc;
        return memo_put(m, rd_le(m, 4));
    case 0x94: return memo_put(m, m->memo_count);
    case 'h':
        if ((rc = need(m, 1)))
            return rc;
        return memo_get(m, rd_le(m, 1));
    case 'j':
        if ((rc = need(m, 4)))
            return rc;
        return memo_get(m, rd_le(m, 4));
    case 'Q': /* BINPERSID */
        if ((rc = pop(m, &a)))
            return rc;
        if (!(v = newv(m, MF_PV_PERSID)))
            return oom(m);
        if ((rc = adopt(m, v, a)) < 0)
            return rc;
        v->u.persid.pid = a;
        return push(m, v);
    default:
        if (m->op >= 0x20 && m->op < 0x7f)
            return fail(m, MF_ERR_UNSUPPORTED, "unsupported opcode '%c'", m->op);
        return fail(m, MF_ERR_UNSUPPORTED, "unsupported opcode");
    }
}

/* ---- skipped values (limits->skip_keys) ---- */

/* v is about to be pushed at index sp: is it one of the keys, in key position of a dict being
 * filled (by SETITEMS after a MARK, or by a single SETITEM)? */
static int is_skip_key(const vm *m, const mf_pv *v)
{
    size_t k = m->sp, f = floor_(m);
    int key_pos = (m->nmarks && f >= 1 && (k - f) % 2 == 0 && m->stack[f - 1]->kind == MF_PV_DICT) ||
                  (k >= 1 && k - 1 >= f && m->stack[k - 1]->kind == MF_PV_DICT);
    if (!key_pos)
        return 0;
    for (const char *const *s = m->skip_keys; *s; s++)
        if (strcmp(*s, v->u.str.s) == 0)
            return 1;
    return 0;
}

/* How an opcode that builds or consumes values moves the stack while a value is skipped. */
enum { FX_PUSH, FX_POP_PUSH, FX_POP, FX_COLLECT, FX_MARKPOP, FX_MEMO_GET, FX_OTHER };
typedef struct {
    uint8_t fx, pops;
    uint8_t operand;  /* 0, or fixed size 1/2/4/8; LEN|n: an n-byte length, then data; LINES: GLOBAL */
} op_shape;
#define LEN 0x10
#define LINES 0x20

static op_shape shape_of(uint8_t op)
{
    switch (op) {
    case 'N': case 0x88: case 0x89: case ')': case ']': case '}': case 0x8f:
        return (op_shape){FX_PUSH, 0, 0};
    case 'K': return (op_shape){FX_PUSH, 0, 1};
    case 'M': return (op_shape){FX_PUSH, 0, 2};
    case 'J': return (op_shape){FX_PUSH, 0, 4};
    case 'G': return (op_shape){FX_PUSH, 0, 8};
    case 0x8a: case 0x8c: case 'U': case 'C': return (op_shape){FX_PUSH, 0, LEN | 1};
    case 0x8b: case 'X': case 'T': case 'B': return (op_shape){FX_PUSH, 0, LEN | 4};
    case 0x8d: case 0x8e: case 0x96: return (op_shape){FX_PUSH, 0, LEN | 8};
    case 'c': return (op_shape){FX_PUSH, 0, LINES};
    case 0x85: case 'Q': return (op_shape){FX_POP_PUSH, 1, 0};
    case 0x86: case 0x93: case 'R': case 0x81: return (op_shape){FX_POP_PUSH, 2, 0};
    case 0x87: case 0x92: return (op_shape){FX_POP_PUSH, 3, 0};
    case 'a': case 'b': return (op_shape){FX_POP, 1, 0};
    case 's': return (op_shape){FX_POP, 2, 0};
    case 't': case 'l': case 'd': case 0x91: return (op_shape){FX_COLLECT, 0, 0};
    case 'e': case 'u': case 0x90: return (op_shape){FX_MARKPOP, 0, 0};
    case 'h': return (op_shape){FX_MEMO_GET, 0, 1};
    case 'j': return (op_shape){FX_MEMO_GET, 0, 4};
    default: return (op_shape){FX_OTHER, 0, 0}; /* builds nothing: run it as usual */
    }
}

static int skip_operand(vm *m, uint8_t operand)
{
    int rc;
    if (operand == LINES) {
        for (int i = 0; i < 2; i++) {
            const uint8_t *p = m->buf + m->pos, *nl = memchr(p, '\n', m->len - m->pos);
            if (!nl)
                return fail(m, MF_ERR_FORMAT, "GLOBAL line without newline");
            m->pos += (size_t)(nl - p) + 1;
        }
        return 0;
    }
    unsigned n = operand & 0x0f;
    if ((rc = need(m, n)))
        return rc;
    uint64_t x = rd_le(m, n);
    if (!(operand & LEN))
        return 0;
    if ((rc = need(m, x)))
        return rc;
    m->pos += (size_t)x;
    return 0;
}

/* Back to where the key after the skipped value started, without the skipped pair: memo ids
 * handed out since then were only given to skipped values, so they are handed out again. */
static int skip_rewind(vm *m)
{
    /* A batch of many skipped pairs would be re-read once per pair: bound the extra work. */
    m->reread += m->pos - m->skip_next;
    if (m->reread > 4 * (uint64_t)m->len + ((uint64_t)1 << 20))
        return fail(m, MF_ERR_LIMIT, "too many skipped dict entries in one batch");
    for (size_t i = m->skip_next_memo; i < m->memo_hi; i++)
        if (m->memo[i] == m->skipped)
            m->memo[i] = NULL;
    m->memo_skip_hi = m->skip_next_memo > m->memo_hi ? m->skip_next_memo : 0;
    m->memo_count = m->skip_next_memo;
    m->pos = m->skip_next;
    m->sp = m->skip_at;
    m->skip_at = 0;
    return 0;
}

/* One opcode while a skipped value is read: operands are checked and skipped, the stack moves
 * as it would, but every value pushed is m->skipped. The mode ends with the opcode that
 * consumes the key, a SETITEM(S): the skipped pair is dropped; pairs after it in the same batch
 * were only skimmed, so reading goes back to the first of them (m->skip_next) and builds them. */
static int skip_step(vm *m, int *done, mf_pv **result)
{
    uint8_t op = m->buf[m->pos];
    op_shape s = shape_of(op);
    size_t key = m->skip_at, f = floor_(m);
    int marked = s.fx == FX_COLLECT || s.fx == FX_MARKPOP || op == '1' || (op == '0' && m->sp <= f);
    size_t pops = op == '0' ? 1 : s.pops; /* POP above the mark pops one item */
    int popping = s.fx == FX_POP || s.fx == FX_POP_PUSH || op == '0';
    int reaches = op == '.' || (marked ? m->nmarks && f <= key : popping && m->sp - f >= pops && m->sp - pops <= key);
    if (reaches) {
        if (op == 'u' && m->nmarks && (key - f) % 2 == 0) {
            if (m->sp > key + 2 && m->skip_next)
                return skip_rewind(m);
            m->sp = key;
        } else if (op == 's' && m->sp == key + 2) {
            m->sp = key;
            m->skip_at = 0;
            m->pos++;
            return 0;
        }
        m->skip_at = 0;
        return step(m, done, result);
    }
    /* The first opcode that puts something at key + 2 once the value is done starts the next key. */
    if (m->sp == key + 2 && (s.fx == FX_PUSH || s.fx == FX_MEMO_GET || op == '(' || op == '2')) {
        m->skip_next = m->pos;
        m->skip_next_memo = m->memo_count;
    }
    if (op == 0x94 && m->sp > key + 1 && m->sp > f && m->memo_count >= m->memo_hi && m->memo_count >= m->memo_skip_hi &&
        m->memo_count < MAX_MEMO_ID) { /* MEMOIZE of a skipped value (above the key): counted, not stored */
        m->memo_skip_hi = ++m->memo_count;
        m->pos++;
        return 0;
    }
    if (s.fx == FX_OTHER)
        return step(m, done, result);
    m->op_pos = m->pos;
    m->op = op;
    m->pos++;
    int rc;
    if (s.fx == FX_MEMO_GET) { /* same check as memo_get, but the value is not used */
        if ((rc = need(m, s.operand)))
            return rc;
        uint64_t id = rd_le(m, s.operand);
        if (!memo_at(m, id))
            return fail(m, MF_ERR_FORMAT, "memo id %llu not defined", (unsigned long long)id);
        return push(m, m->skipped);
    }
    if ((rc = skip_operand(m, s.operand)))
        return rc;
    size_t start = m->sp;
    switch (s.fx) {
    case FX_POP:
    case FX_POP_PUSH:
        if (m->sp < f + s.pops)
            return fail(m, MF_ERR_FORMAT, "stack underflow");
        m->sp -= s.pops;
        break;
    case FX_COLLECT:
    case FX_MARKPOP:
        if ((rc = pop_mark(m, &start)))
            return rc;
        if (s.fx == FX_MARKPOP && start <= floor_(m))
            return fail(m, MF_ERR_FORMAT, "SETITEMS/APPENDS without a target");
        m->sp = start;
        break;
    default:
        break;
    }
    return s.fx == FX_POP || s.fx == FX_MARKPOP ? 0 : push(m, m->skipped);
}

int mf_pickle_load(const uint8_t *buf, size_t len, const char *name, const mf_pickle_limits *limits, mf_pickle **pk,
                   mf_pv **out)
{
    *pk = NULL;
    *out = NULL;
    vm m = {.buf = buf, .len = len, .name = name ? name : "pickle"};
    m.max_depth = limits && limits->max_depth ? limits->max_depth : DEFAULT_DEPTH;
    if (m.max_depth > MAX_NODE_DEPTH)
        m.max_depth = MAX_NODE_DEPTH; /* depths share 32 bits with the frozen flag */
    m.pk = calloc(1, sizeof *m.pk);
    if (!m.pk)
        return mf_fail(MF_ERR_NOMEM, "%s: out of memory", m.name);
    m.pk->budget = limits && limits->max_bytes ? limits->max_bytes : DEFAULT_BUDGET;
    int done = 0, rc = 0;
    mf_pv *result = NULL;
    /* Never-NULL stack: `stack + start` on an empty stack must stay defined. */
    if (VGROW(&m, m.stack, &m.scap, 64) || VGROW(&m, m.marks, &m.mcap, 16))
        rc = m.grow_rc;
    if (!rc && limits && limits->skip_keys && limits->skip_keys[0]) {
        m.skip_keys = limits->skip_keys;
        if (!shared(&m, &m.skipped, MF_PV_NONE, 0))
            rc = oom(&m);
    }
    while (!done && !rc) {
        if (m.pos >= m.len) {
            m.op_pos = m.pos;
            rc = mf_fail(MF_ERR_FORMAT, "%s: pickle: truncated: no STOP opcode before offset %zu", m.name, m.len);
            break;
        }
        rc = m.skip_at ? skip_step(&m, &done, &result) : step(&m, &done, &result);
    }
    mf_array_free(m.stack, m.scap * sizeof *m.stack);
    mf_array_free(m.marks, m.mcap * sizeof *m.marks);
    mf_array_free(m.memo, m.memo_cap * sizeof *m.memo);
    m.pk->temp = 0;
    if (rc) {
        mf_pickle_free(m.pk);
        return rc;
    }
    *pk = m.pk;
    *out = result;
    return MF_OK;
}

/* ---- helpers over the tree ---- */

mf_pv *mf_pv_dict_get(const mf_pv *dict, const char *key)
{
    if (!dict || dict->kind != MF_PV_DICT || !key)
        return NULL;
    for (size_t i = dict->u.dict.n; i-- > 0;) { /* last wins, like a re-assigned Python key */
        const mf_pv *k = dict->u.dict.keys[i];
        if (k->kind == MF_PV_STR && strcmp(k->u.str.s, key) == 0)
            return dict->u.dict.vals[i];
    }
    return NULL;
}

mf_pv *mf_pv_obj_state(const mf_pv *obj)
{
    if (!obj || obj->kind != MF_PV_OBJECT || !obj->u.obj.state)
        return NULL;
    mf_pv *s = obj->u.obj.state;
    if (s->kind == MF_PV_TUPLE && s->u.seq.n == 2) /* (state, slotstate) */
        s = s->u.seq.items[0];
    return s->kind == MF_PV_DICT ? s : NULL;
}

int mf_pv_is_global(const mf_pv *v, const char *module, const char *name)
{
    return v && v->kind == MF_PV_GLOBAL && strcmp(v->u.global.module, module) == 0 && strcmp(v->u.global.name, name) == 0;
}

int mf_pv_is_call_of(const mf_pv *v, const char *module, const char *name)
{
    return v && v->kind == MF_PV_OBJECT && mf_pv_is_global(v->u.obj.callable, module, name);
}

int mf_pv_get_int(const mf_pv *v, int64_t *out)
{
    if (!v || (v->kind != MF_PV_INT && v->kind != MF_PV_BOOL))
        return MF_ERR_FORMAT;
    *out = v->u.i;
    return MF_OK;
}

int mf_pv_get_float(const mf_pv *v, double *out)
{
    if (v && v->kind == MF_PV_FLOAT)
        return *out = v->u.f, MF_OK;
    if (v && v->kind == MF_PV_INT)
        return *out = (double)v->u.i, MF_OK;
    return MF_ERR_FORMAT;
}

const char *mf_pv_get_str(const mf_pv *v)
{
    return v && v->kind == MF_PV_STR ? v->u.str.s : NULL;
}
