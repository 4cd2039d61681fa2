/* Safe pickle VM: builds an inert value tree, never imports or calls anything.
 *
 * Cycle/depth rule: a container or object becomes "frozen" when it is placed inside another
 * value. Later SETITEM(S)/APPEND(S)/ADDITEMS/BUILD on a frozen value are ignored. The Python
 * pickler always finishes a container before its parent references it, so this only drops
 * data from recursive structures, and it guarantees the result is acyclic with an exact,
 * bounded nesting depth (kept in the private node header). */
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

#define RELEASE_STEP ((size_t)2 << 20) /* release_input: hand back read input every 2 MiB */
#define FILL_STEP ((size_t)2 << 20)    /* input read on demand: 2 MiB at a time */
#define FILL_AHEAD ((size_t)64 << 10)  /* ... kept at least this far ahead of the read position */

int vm_fill(vm *m, uint64_t n)
{
    if (!m->fill || m->fill_rc || n > m->total - m->pos)
        return m->fill_rc ? m->fill_rc : -1;
    size_t want = m->pos + (size_t)n, to = m->len + FILL_STEP;
    if (to < want)
        to = want;
    if (to > m->total)
        to = m->total;
    if (to > m->len) {
        int rc = m->fill(m->fill_ctx, (uint8_t *)(uintptr_t)m->buf + m->len, m->len, to - m->len);
        if (rc)
            return m->fill_rc = rc;
        m->len = to;
    }
    return 0;
}

const uint8_t *vm_line_end(vm *m)
{
    for (size_t from = m->pos;;) {
        const uint8_t *nl = memchr(m->buf + from, '\n', m->len - from);
        if (nl || m->len >= m->total)
            return nl;
        from = m->len; /* only the bytes read next are searched */
        if (vm_fill(m, m->len - m->pos + 1))
            return NULL;
    }
}

/* ---- reading operands ---- */

/* Length-prefixed string/bytes: `lb` length bytes, then the data. */
static int op_str(vm *m, unsigned lb, mf_pv_kind kind, int signed32)
{
    int rc = vm_need(m, lb);
    if (rc)
        return rc;
    uint64_t n = vm_rd_le(m, lb);
    if (signed32 && n > INT32_MAX)
        return vm_fail(m, MF_ERR_FORMAT, "negative string length");
    if ((rc = vm_need(m, n)))
        return rc;
    mf_pv *v = vm_new_str(m, kind, m->buf + m->pos, (size_t)n);
    m->pos += (size_t)n;
    return vm_push(m, v);
}

static mf_pv *new_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    /* Python 2 spellings, as pickle's fix_imports maps them. */
    if (ml == 11 && memcmp(mod, "__builtin__", 11) == 0)
        mod = "builtins", ml = 8;
    else if (ml == 8 && memcmp(mod, "copy_reg", 8) == 0)
        mod = "copyreg", ml = 7;
    mf_pv *g = vm_newv(m, MF_PV_GLOBAL);
    char *a = g ? vm_aalloc(m->pk, ml + 1) : NULL, *b = a ? vm_aalloc(m->pk, nl + 1) : NULL;
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
        const uint8_t *p = m->buf + m->pos, *nl = vm_line_end(m);
        if (!nl)
            return m->fill_rc ? m->fill_rc : vm_fail(m, MF_ERR_FORMAT, "GLOBAL line without newline");
        s[i] = (const char *)p;
        l[i] = (size_t)(nl - p);
        m->pos += l[i] + 1;
    }
    return vm_push(m, new_global(m, s[0], l[0], s[1], l[1]));
}

/* LONG1/LONG4: little-endian two's complement. Beyond int64 -> inert builtins.int(bytes). */
static int op_long(vm *m, unsigned lb)
{
    int rc = vm_need(m, lb);
    if (rc)
        return rc;
    uint64_t n = vm_rd_le(m, lb);
    if (lb == 4 && n > INT32_MAX)
        return vm_fail(m, MF_ERR_FORMAT, "negative LONG4 length");
    if ((rc = vm_need(m, n)))
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
        return vm_push(m, vm_new_int(m, i));
    }
    mf_pv *o = vm_newv(m, MF_PV_OBJECT), *g = new_global(m, "builtins", 8, "int", 3);
    mf_pv *b = vm_new_str(m, MF_PV_BYTES, p, (size_t)n);
    if (!o || !g || !b)
        return vm_oom(m);
    o->u.obj.callable = g;
    o->u.obj.args = b;
    freeze(g);
    freeze(b);
    set_depth(o, 1);
    return vm_push(m, o);
}

static int memo_put(vm *m, uint64_t id)
{
    mf_pv *v = NULL;
    int rc = vm_peek(m, &v);
    if (rc)
        return rc;
    if (id >= MAX_MEMO_ID)
        return vm_fail(m, MF_ERR_LIMIT, "memo id %llu exceeds the largest allowed, %u", (unsigned long long)id,
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
mf_pv *vm_memo_at(const vm *m, uint64_t id)
{
    if (id < m->memo_hi)
        return m->memo[id];
    return id < m->memo_skip_hi ? m->skipped : NULL;
}

static int memo_get(vm *m, uint64_t id)
{
    mf_pv *v = vm_memo_at(m, id);
    if (!v)
        return vm_fail(m, MF_ERR_FORMAT, "memo id %llu not defined", (unsigned long long)id);
    return vm_push(m, v);
}

/* ---- REDUCE folding of pure-data constructors ---- */

static int args_n(const mf_pv *a, size_t n) { return a->kind == MF_PV_TUPLE && a->u.seq.n == n; }
static int is_seq(const mf_pv *v) { return v->kind == MF_PV_LIST || v->kind == MF_PV_TUPLE; }

/* UTF-8 -> Latin-1 bytes (what _codecs.encode(s, 'latin1') returns for pickled bytes). */
static int latin1(vm *m, const mf_pv *s, mf_pv **out)
{
    mf_pv *b = vm_new_str(m, MF_PV_BYTES, NULL, s->u.str.len);
    if (!b)
        return vm_oom(m);
    const uint8_t *p = (const uint8_t *)s->u.str.s, *e = p + s->u.str.len;
    size_t n = 0;
    while (p < e) {
        unsigned c = *p++;
        if (c >= 0x80) {
            if ((c & 0xE0) != 0xC0 || p >= e || (*p & 0xC0) != 0x80)
                return vm_fail(m, MF_ERR_FORMAT, "_codecs.encode: string is not latin-1 encodable");
            c = ((c & 0x1F) << 6) | (*p++ & 0x3F);
            if (c < 0x80 || c > 0xFF)
                return vm_fail(m, MF_ERR_FORMAT, "_codecs.encode: string is not latin-1 encodable");
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
                return (*out = vm_newv(m, MF_PV_DICT)) ? 0 : vm_oom(m);
            mf_pv *l = args_n(args, 1) ? args->u.seq.items[0] : NULL;
            int ok = l && is_seq(l);
            for (size_t i = 0; ok && i < l->u.seq.n; i++)
                ok = args_n(l->u.seq.items[i], 2);
            if (ok) {
                mf_pv *d = vm_newv(m, MF_PV_DICT);
                if (!d)
                    return vm_oom(m);
                for (size_t i = 0; i < l->u.seq.n; i++)
                    if ((rc = vm_dict_add(m, d, l->u.seq.items[i]->u.seq.items[0], l->u.seq.items[i]->u.seq.items[1])))
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
            return (*out = vm_new_str(m, MF_PV_BYTES, "", 0)) ? 0 : vm_oom(m);
        if ((mf_pv_is_global(fn, "builtins", "set") || mf_pv_is_global(fn, "builtins", "frozenset"))) {
            if (args_n(args, 0))
                return (*out = vm_newv(m, MF_PV_SET)) ? 0 : vm_oom(m);
            if (args_n(args, 1) && is_seq(args->u.seq.items[0]))
                return vm_make_seq(m, MF_PV_SET, args->u.seq.items[0]->u.seq.items, args->u.seq.items[0]->u.seq.n, out);
        }
    }
    mf_pv *o = vm_newv(m, MF_PV_OBJECT);
    if (!o)
        return vm_oom(m);
    if ((rc = vm_adopt(m, o, fn)) < 0 || (rc = vm_adopt(m, o, args)) < 0)
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
        if (m->sp < vm_floor(m) + 2)
            return vm_fail(m, MF_ERR_FORMAT, "stack underflow");
        start = m->sp - 2;
    } else if ((rc = vm_pop_mark(m, &start))) {
        return rc;
    }
    if ((m->sp - start) % 2)
        return vm_fail(m, MF_ERR_FORMAT, "odd number of items for SETITEMS");
    if (start <= vm_floor(m))
        return vm_fail(m, MF_ERR_FORMAT, "SETITEMS without a target");
    mf_pv *d = m->stack[start - 1];
    if (d->kind == MF_PV_DICT) {
        if (!is_frozen(d) && (rc = vm_dict_reserve(m, d, d->u.dict.n + (m->sp - start) / 2)))
            return rc;
        for (size_t i = start; i < m->sp; i += 2)
            if ((rc = vm_dict_add(m, d, m->stack[i], m->stack[i + 1])))
                return rc;
    } else if (d->kind != MF_PV_OBJECT) { /* objects: __setitem__ is never run */
        return vm_fail(m, MF_ERR_FORMAT, "SETITEM on a non-dict value");
    }
    m->sp = start;
    return 0;
}

static int op_appends(vm *m, int single, mf_pv_kind want)
{
    size_t start = 0;
    int rc;
    if (single) {
        if (m->sp < vm_floor(m) + 1)
            return vm_fail(m, MF_ERR_FORMAT, "stack underflow");
        start = m->sp - 1;
    } else if ((rc = vm_pop_mark(m, &start))) {
        return rc;
    }
    if (start <= vm_floor(m))
        return vm_fail(m, MF_ERR_FORMAT, "APPEND without a target");
    mf_pv *l = m->stack[start - 1];
    if (l->kind == want) {
        if (!is_frozen(l) && GROW(m, l->u.seq.items, &l->u.seq.cap, l->u.seq.n + (m->sp - start)))
            return m->grow_rc;
        for (size_t i = start; i < m->sp; i++)
            if ((rc = vm_seq_add(m, l, m->stack[i])))
                return rc;
    } else if (l->kind != MF_PV_OBJECT) {
        return vm_fail(m, MF_ERR_FORMAT, "APPEND/ADDITEMS on a value of the wrong kind");
    }
    m->sp = start;
    return 0;
}

static int op_collect(vm *m, mf_pv_kind kind) /* TUPLE, LIST, FROZENSET, DICT after MARK */
{
    size_t start = 0;
    int rc = vm_pop_mark(m, &start);
    if (rc)
        return rc;
    mf_pv *v = NULL;
    if (kind == MF_PV_DICT) {
        if ((m->sp - start) % 2)
            return vm_fail(m, MF_ERR_FORMAT, "odd number of items for DICT");
        if (!(v = vm_newv(m, MF_PV_DICT)))
            return vm_oom(m);
        if ((rc = vm_dict_reserve(m, v, (m->sp - start) / 2)))
            return rc;
        for (size_t i = start; i < m->sp; i += 2)
            if ((rc = vm_dict_add(m, v, m->stack[i], m->stack[i + 1])))
                return rc;
    } else if ((rc = vm_make_seq(m, kind, m->stack + start, m->sp - start, &v))) {
        return rc;
    }
    m->sp = start;
    return vm_push(m, v);
}

static int op_tuple_n(vm *m, size_t n)
{
    if (m->sp < vm_floor(m) + n)
        return vm_fail(m, MF_ERR_FORMAT, "stack underflow");
    mf_pv *t;
    int rc = vm_make_seq(m, MF_PV_TUPLE, m->stack + m->sp - n, n, &t);
    if (rc)
        return rc;
    m->sp -= n;
    return vm_push(m, t);
}

/* ---- opcodes with more than one line of work ---- */

static int op_proto(vm *m)
{
    int rc = vm_need(m, 1);
    if (rc)
        return rc;
    if (m->buf[m->pos] > 5)
        return vm_fail(m, MF_ERR_UNSUPPORTED, "pickle protocol %u is not supported", m->buf[m->pos]);
    m->pos++;
    return 0;
}

static int op_frame(vm *m, unsigned n) /* FRAME: framing is only a read-ahead hint */
{
    int rc = vm_need(m, n);
    if (rc)
        return rc;
    m->pos += n;
    return 0;
}

static int op_mark(vm *m)
{
    if (m->nmarks >= m->max_depth)
        return vm_fail(m, MF_ERR_LIMIT, "more than %zu nested MARKs", m->max_depth);
    if (VGROW(m, m->marks, &m->mcap, m->nmarks + 1))
        return m->grow_rc;
    m->marks[m->nmarks++] = m->sp;
    return 0;
}

/* BININT, BININT1, BININT2: n little-endian bytes, signed only for the 4-byte form. */
static int op_int(vm *m, unsigned n)
{
    int rc = vm_need(m, n);
    if (rc)
        return rc;
    uint64_t x = vm_rd_le(m, n);
    return vm_push(m, vm_new_int(m, n == 4 ? (int64_t)(int32_t)(uint32_t)x : (int64_t)x));
}

static int op_binfloat(vm *m) /* big-endian IEEE double */
{
    int rc = vm_need(m, 8);
    if (rc)
        return rc;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | m->buf[m->pos++];
    mf_pv *v = vm_newv(m, MF_PV_FLOAT);
    if (v)
        memcpy(&v->u.f, &x, sizeof x);
    return vm_push(m, v);
}

static int op_stack_global(vm *m)
{
    mf_pv *a = NULL, *b = NULL;
    int rc;
    if ((rc = vm_pop(m, &b)) || (rc = vm_pop(m, &a)))
        return rc;
    if (a->kind != MF_PV_STR || b->kind != MF_PV_STR)
        return vm_fail(m, MF_ERR_FORMAT, "STACK_GLOBAL needs two strings");
    return vm_push(m, new_global(m, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len));
}

static int op_reduce(vm *m)
{
    mf_pv *a = NULL, *b = NULL, *v = NULL;
    int rc;
    if ((rc = vm_pop(m, &b)) || (rc = vm_pop(m, &a)) || (rc = reduce(m, a, b, &v)))
        return rc;
    return vm_push(m, v);
}

static int op_newobj(vm *m) /* NEWOBJ, NEWOBJ_EX: kwargs are dropped */
{
    mf_pv *a = NULL, *b = NULL, *c = NULL, *v = NULL;
    int rc;
    if (m->op == 0x92 && (rc = vm_pop(m, &c)))
        return rc;
    if ((rc = vm_pop(m, &b)) || (rc = vm_pop(m, &a)))
        return rc;
    if (!(v = vm_newv(m, MF_PV_OBJECT)))
        return vm_oom(m);
    if ((rc = vm_adopt(m, v, a)) < 0 || (rc = vm_adopt(m, v, b)) < 0)
        return rc;
    v->u.obj.callable = a;
    v->u.obj.args = b;
    return vm_push(m, v);
}

static int op_build(vm *m) /* state on objects only; ignored on dicts (OrderedDict _metadata) etc. */
{
    mf_pv *a = NULL, *b = NULL;
    int rc;
    if ((rc = vm_pop(m, &b)) || (rc = vm_peek(m, &a)))
        return rc;
    if (a->kind == MF_PV_OBJECT && (rc = vm_adopt(m, a, b)) <= 0) {
        if (rc < 0)
            return rc;
        a->u.obj.state = b;
    }
    return 0;
}

/* BINPUT/LONG_BINPUT (put) and BINGET/LONG_BINGET: an n-byte memo id. */
static int op_memo(vm *m, unsigned n, int put)
{
    int rc = vm_need(m, n);
    if (rc)
        return rc;
    uint64_t id = vm_rd_le(m, n);
    return put ? memo_put(m, id) : memo_get(m, id);
}

static int op_binpersid(vm *m)
{
    mf_pv *a = NULL, *v = NULL;
    int rc;
    if ((rc = vm_pop(m, &a)))
        return rc;
    if (!(v = vm_newv(m, MF_PV_PERSID)))
        return vm_oom(m);
    if ((rc = vm_adopt(m, v, a)) < 0)
        return rc;
    v->u.persid.pid = a;
    return vm_push(m, v);
}

/* ---- the VM loop ---- */

int vm_step(vm *m, int *done, mf_pv **result)
{
    mf_pv *v = NULL;
    int rc;
    m->op_pos = m->pos;
    m->op = m->buf[m->pos++];
    switch (m->op) {
    case 0x80: return op_proto(m);
    case 0x95: return op_frame(m, 8);
    case '.': /* STOP */
        if ((rc = vm_pop(m, result)))
            return rc;
        *done = 1;
        return 0;
    case '(': return op_mark(m);
    case '0': /* POP: like CPython, pops a mark when the stack above it is empty */
        if (m->sp > vm_floor(m))
            return m->sp--, 0;
        return vm_pop_mark(m, &m->sp);
    case '1': return vm_pop_mark(m, &m->sp);   /* POP_MARK */
    case '2': return (rc = vm_peek(m, &v)) ? rc : vm_push(m, v);   /* DUP */
    case 'N': return vm_push(m, vm_shared(m, &m->none, MF_PV_NONE, 0));
    case 0x88:
    case 0x89: return vm_push(m, vm_shared(m, &m->bools[m->op == 0x88], MF_PV_BOOL, m->op == 0x88));
    case 'J': return op_int(m, 4);
    case 'K': return op_int(m, 1);
    case 'M': return op_int(m, 2);
    case 0x8a: return op_long(m, 1);
    case 0x8b: return op_long(m, 4);
    case 'G': return op_binfloat(m);
    case 'X': return op_str(m, 4, MF_PV_STR, 0);
    case 0x8c: return op_str(m, 1, MF_PV_STR, 0);
    case 0x8d: return op_str(m, 8, MF_PV_STR, 0);
    case 'U': return op_str(m, 1, MF_PV_STR, 0);
    case 'T': return op_str(m, 4, MF_PV_STR, 1);
    case 'C': return op_str(m, 1, MF_PV_BYTES, 0);
    case 'B': return op_str(m, 4, MF_PV_BYTES, 0);
    case 0x8e:
    case 0x96: return op_str(m, 8, MF_PV_BYTES, 0);
    case ')': return vm_push(m, vm_shared(m, &m->empty_tuple, MF_PV_TUPLE, 0));
    case 't': return op_collect(m, MF_PV_TUPLE);
    case 0x85: return op_tuple_n(m, 1);
    case 0x86: return op_tuple_n(m, 2);
    case 0x87: return op_tuple_n(m, 3);
    case ']': return vm_push(m, vm_newv(m, MF_PV_LIST));
    case 'l': return op_collect(m, MF_PV_LIST);
    case 'a': return op_appends(m, 1, MF_PV_LIST);
    case 'e': return op_appends(m, 0, MF_PV_LIST);
    case '}': return vm_push(m, vm_newv(m, MF_PV_DICT));
    case 'd': return op_collect(m, MF_PV_DICT);
    case 's': return op_setitems(m, 1);
    case 'u': return op_setitems(m, 0);
    case 0x8f: return vm_push(m, vm_newv(m, MF_PV_SET));
    case 0x90: return op_appends(m, 0, MF_PV_SET);
    case 0x91: return op_collect(m, MF_PV_SET);
    case 'c': return op_global(m);
    case 0x93: return op_stack_global(m);
    case 'R': return op_reduce(m);
    case 0x81:
    case 0x92: return op_newobj(m);
    case 'b': return op_build(m);
    case 'q': return op_memo(m, 1, 1);
    case 'r': return op_memo(m, 4, 1);
    case 0x94: return memo_put(m, m->memo_count);   /* MEMOIZE */
    case 'h': return op_memo(m, 1, 0);
    case 'j': return op_memo(m, 4, 0);
    case 'Q': return op_binpersid(m);
    default:
        if (m->op >= 0x20 && m->op < 0x7f)
            return vm_fail(m, MF_ERR_UNSUPPORTED, "unsupported opcode '%c'", m->op);
        return vm_fail(m, MF_ERR_UNSUPPORTED, "unsupported opcode");
    }
}

int mf_pickle_load(const uint8_t *buf, size_t len, const char *name, const mf_pickle_limits *limits, mf_pickle **pk,
                   mf_pv **out)
{
    *pk = NULL;
    *out = NULL;
    vm m = {.buf = buf, .len = len, .total = len, .name = name ? name : "pickle"};
    if (limits && limits->fill) {
        m.len = 0; /* nothing read yet */
        m.fill = limits->fill;
        m.fill_ctx = limits->fill_ctx;
    }
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
        if (!vm_shared(&m, &m.skipped, MF_PV_NONE, 0))
            rc = vm_oom(&m);
    }
    int release = limits && limits->release_input;
    while (!done && !rc) {
        if (release && m.pos - m.released >= RELEASE_STEP) {
            /* Never past a point a skipped dict entry may rewind to (pickle_skip.c), unless the
             * input is read on demand: then a rewind reads the released bytes again. */
            size_t upto = m.skip_at && m.skip_next && m.skip_next < m.pos && !m.fill ? m.skip_next : m.pos;
            if (upto > m.released) {
                mf_big_release((void *)(uintptr_t)buf, upto);
                m.released = upto;
            }
        }
        if (m.len - m.pos < FILL_AHEAD && m.len < m.total && vm_fill(&m, m.total - m.pos < FILL_AHEAD ? m.total - m.pos : FILL_AHEAD)) {
            rc = m.fill_rc;
            break;
        }
        if (m.pos >= m.len) {
            m.op_pos = m.pos;
            rc = mf_fail(MF_ERR_FORMAT, "%s: pickle: truncated: no STOP opcode before offset %zu", m.name, m.total);
            break;
        }
        rc = m.skip_at ? vm_skip_step(&m, &done, &result) : vm_step(&m, &done, &result);
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
