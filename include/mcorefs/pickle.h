/* A safe pickle VM (protocols 2-5). It only builds a value tree: GLOBAL, REDUCE, NEWOBJ and
 * BUILD become inert objects that remember their callable and arguments. Nothing is ever
 * imported, looked up or executed. A few pure-data constructors are folded into plain values
 * (collections.OrderedDict() -> dict, torch.Size(t) -> tuple, _codecs.encode(s,'latin1') ->
 * bytes, builtins.set/frozenset -> set, builtins.bytes() -> empty bytes); everything else
 * stays opaque. All memory comes from one arena freed by mf_pickle_free.
 *
 * The result is a DAG, not a tree: memoized values (BINGET) are shared, so the same node can
 * be reached along several paths; walkers that visit every path must bound their work. It is
 * never cyclic, and nesting is at most limits->max_depth: a container that has been placed
 * inside another value is frozen, and later SETITEM(S)/APPEND(S)/ADDITEMS/BUILD on it are
 * ignored (this only affects self-referencing Python objects). */
#ifndef MCOREFS_PICKLE_H
#define MCOREFS_PICKLE_H

#include <stdint.h>
#include <stddef.h>

typedef enum {
    MF_PV_NONE, MF_PV_BOOL, MF_PV_INT, MF_PV_FLOAT, MF_PV_STR, MF_PV_BYTES,
    MF_PV_TUPLE, MF_PV_LIST, MF_PV_DICT, MF_PV_SET,
    MF_PV_GLOBAL,   /* a named callable/class: module + name, never resolved */
    MF_PV_OBJECT,   /* result of REDUCE/NEWOBJ[_EX]: callable + args (+ BUILD state) */
    MF_PV_PERSID,   /* BINPERSID: the persistent id value */
} mf_pv_kind;

typedef struct mf_pv mf_pv;
struct mf_pv {
    mf_pv_kind kind;
    uint32_t vm_meta_;  /* private to the VM: nesting depth and a "frozen" bit (32-byte values) */
    union {
        int64_t i;                                      /* BOOL (0/1), INT */
        double f;                                       /* FLOAT */
        struct { char *s; size_t len; } str;            /* STR (UTF-8, NUL-terminated), BYTES */
        struct { mf_pv **items; size_t n, cap; } seq;   /* TUPLE, LIST, SET */
        struct { mf_pv **keys, **vals; uint32_t n, cap; } dict; /* insertion order kept */
        struct { char *module, *name; } global;
        struct { mf_pv *callable; mf_pv *args; mf_pv *state; } obj; /* state: from BUILD or NULL */
        struct { mf_pv *pid; } persid;
    } u;
};

typedef struct {
    size_t max_bytes;  /* memory budget: value arena plus the VM's stack, marks and memo (default 1 GiB when 0) */
    size_t max_depth;  /* container nesting / stack depth limit (default 10000 when 0) */
    /* NULL-terminated dict keys whose values are read but never built (they load as None):
     * DCP's .metadata carries a copy of every save plan that nobody here needs, about half of
     * its bytes. Applies to str keys of dicts filled by SETITEM(S) at any depth; pairs that
     * follow a skipped pair in the same SETITEMS batch are dropped with it (Python pickles an
     * object's fields in definition order, so list keys that come last). */
    const char *const *skip_keys;
    /* 1: the caller hands over buf (writable memory from mf_big_alloc that it frees after the
     * load and never reads again): whole pages the VM has read past are returned to the OS as
     * it goes, so a big .metadata is not held twice, as bytes and as values. */
    int release_input;
    /* Non-NULL: buf[0, len) starts empty and is read on demand, front to back, a window ahead
     * of the VM (fill(fill_ctx, buf + off, off, n) fills n bytes at off; MF_OK, or an error code
     * with its message set, which the load then returns). With release_input, only that window
     * of a big .metadata is ever resident, not its unread tail. */
    int (*fill)(void *fill_ctx, uint8_t *dst, size_t off, size_t n);
    void *fill_ctx;
} mf_pickle_limits;

typedef struct mf_pickle mf_pickle;  /* owns the arena */

/* Run the VM over buf[0..len). On success *out is the unpickled root and *pk owns its memory.
 * `name` is used in error messages. Integers that do not fit int64 (LONG1/LONG4) become an inert
 * OBJECT with callable GLOBAL builtins.int and args = BYTES holding the raw little-endian
 * two's-complement encoding. Failures are one-line messages naming `name`, the opcode byte and
 * its offset. */
int mf_pickle_load(const uint8_t *buf, size_t len, const char *name,
                   const mf_pickle_limits *limits, mf_pickle **pk, mf_pv **out);
void mf_pickle_free(mf_pickle *pk);
/* Bytes the arena holds (what a loaded tree costs, for callers with a memory cap of their own). */
size_t mf_pickle_bytes(const mf_pickle *pk);

/* Helpers over the tree (all tolerate NULL). */
mf_pv *mf_pv_dict_get(const mf_pv *dict, const char *key);   /* dict with str keys */
/* For an object made by NEWOBJ+BUILD with a dict state (argparse.Namespace): that dict. */
mf_pv *mf_pv_obj_state(const mf_pv *obj);
int mf_pv_is_global(const mf_pv *v, const char *module, const char *name);
/* If v is an OBJECT whose callable is GLOBAL module.name, return 1. */
int mf_pv_is_call_of(const mf_pv *v, const char *module, const char *name);
/* The getters return 0 on success and a negative value when v is NULL or of another kind. */
/* The getters return MF_OK (0) and set *out, or MF_ERR_FORMAT (no message set) for another kind. */
int mf_pv_get_int(const mf_pv *v, int64_t *out);     /* INT or BOOL */
int mf_pv_get_float(const mf_pv *v, double *out);    /* FLOAT or INT */
const char *mf_pv_get_str(const mf_pv *v);           /* STR or NULL */

#endif
