/* Unit tests for the safe pickle VM: each opcode group with hand-written bytes, hostile
 * inputs, and real pickles written by Python (protocols 2-5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mcorefs/error.h"
#include "mcorefs/pickle.h"
#include "bigmem.h"
#include "unit_support.h"

static mf_pickle *pks[64];
static int npk;

static int teardown(void **state)
{
    (void)state;
    while (npk)
        mf_pickle_free(pks[--npk]);
    return 0;
}

static mf_pv *load_lim(const void *s, size_t n, const mf_pickle_limits *lim)
{
    mf_pickle *pk;
    mf_pv *v = NULL;
    int rc = mf_pickle_load(s, n, "t.pkl", lim, &pk, &v);
    if (rc != MF_OK)
        fail_msg("load failed: %s", mf_error());
    assert_true(npk < 64);
    pks[npk++] = pk;
    return v;
}
#define LOAD(s) load_lim((s), sizeof(s) - 1, NULL)

/* Expect failure `code` and a message naming the input. */
static void load_err_lim(const void *s, size_t n, int code, const char *needle, const mf_pickle_limits *lim)
{
    mf_pickle *pk = (mf_pickle *)1;
    mf_pv *v = (mf_pv *)1;
    mf_error_clear();
    int rc = mf_pickle_load(s, n, "bad.pkl", lim, &pk, &v);
    if (rc != code)
        fail_msg("expected %d, got %d (%s)", code, rc, mf_error());
    assert_null(pk);
    assert_null(v);
    assert_non_null(strstr(mf_error(), "bad.pkl"));
    if (needle && !strstr(mf_error(), needle))
        fail_msg("message '%s' lacks '%s'", mf_error(), needle);
    assert_null(strchr(mf_error(), '\n'));
}
#define LOAD_ERR(s, code, needle) load_err_lim((s), sizeof(s) - 1, (code), (needle), NULL)

static int64_t ival(const mf_pv *v)
{
    int64_t x = -12345;
    assert_non_null(v);
    assert_int_equal(mf_pv_get_int(v, &x), MF_OK);
    return x;
}

static const char *sval(const mf_pv *v)
{
    assert_non_null(v);
    assert_int_equal(v->kind, MF_PV_STR);
    return v->u.str.s;
}

static void test_scalars(void **state)
{
    (void)state;
    assert_int_equal(LOAD("\x80\x02N.")->kind, MF_PV_NONE);
    mf_pv *t = LOAD("\x80\x02\x88."), *f = LOAD("\x80\x02\x89.");
    assert_int_equal(t->kind, MF_PV_BOOL);
    assert_int_equal(ival(t), 1);
    assert_int_equal(ival(f), 0);
    assert_int_equal(ival(LOAD("\x80\x02K\xff.")), 255);
    assert_int_equal(ival(LOAD("\x80\x02M\x34\x12.")), 0x1234);
    assert_int_equal(ival(LOAD("\x80\x02J\xfe\xff\xff\xff.")), -2);
    assert_int_equal(ival(LOAD("\x80\x02J\x00\x00\x00\x80.")), INT32_MIN);
    /* LONG1: little-endian two's complement */
    assert_int_equal(ival(LOAD("\x80\x02\x8a\x05\x00\x00\x00\x80\x00.")), 2147483648LL);
    assert_int_equal(ival(LOAD("\x80\x02\x8a\x00.")), 0);
    assert_int_equal(ival(LOAD("\x80\x02\x8a\x01\xff.")), -1);
    assert_int_equal(ival(LOAD("\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80.")), INT64_MIN);
    assert_int_equal(ival(LOAD("\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\x00.")), INT64_MAX);
    assert_int_equal(ival(LOAD("\x80\x02\x8b\x02\x00\x00\x00\x00\x01.")), 256);
    /* 2**64 does not fit: kept as inert builtins.int(<raw bytes>) */
    mf_pv *big = LOAD("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.");
    assert_true(mf_pv_is_call_of(big, "builtins", "int"));
    assert_int_equal(big->u.obj.args->kind, MF_PV_BYTES);
    assert_int_equal(big->u.obj.args->u.str.len, 9);
    int64_t dummy;
    assert_int_not_equal(mf_pv_get_int(big, &dummy), MF_OK);
    /* 2**63 (9 bytes, top byte 0) does not fit either */
    assert_true(mf_pv_is_call_of(LOAD("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00."), "builtins", "int"));
    /* BINFLOAT is big-endian: 1.5 = 3ff8000000000000 */
    mf_pv *fl = LOAD("\x80\x02G\x3f\xf8\x00\x00\x00\x00\x00\x00.");
    double d = 0;
    assert_int_equal(fl->kind, MF_PV_FLOAT);
    assert_int_equal(mf_pv_get_float(fl, &d), MF_OK);
    assert_true(d == 1.5);
    assert_int_equal(mf_pv_get_float(LOAD("\x80\x02K\x07."), &d), MF_OK);
    assert_true(d == 7.0);
    assert_int_not_equal(mf_pv_get_float(LOAD("\x80\x02N."), &d), MF_OK);
}

static void test_strings(void **state)
{
    (void)state;
    assert_string_equal(sval(LOAD("\x80\x02X\x03\x00\x00\x00" "abc.")), "abc");
    assert_string_equal(sval(LOAD("\x80\x04\x8c\x02" "hi.")), "hi");
    assert_string_equal(sval(LOAD("\x80\x04\x8d\x01\x00\x00\x00\x00\x00\x00\x00" "z.")), "z");
    assert_string_equal(sval(LOAD("\x80\x02U\x02" "py.")), "py");
    assert_string_equal(sval(LOAD("\x80\x02T\x01\x00\x00\x00" "q.")), "q");
    assert_string_equal(mf_pv_get_str(LOAD("\x80\x02X\x00\x00\x00\x00.")), "");
    const char *bops[] = {"\x80\x03" "C\x02\x00\xff.", "\x80\x03" "B\x02\x00\x00\x00\x00\xff.",
                          "\x80\x04\x8e\x02\x00\x00\x00\x00\x00\x00\x00\x00\xff.",
                          "\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00\x00\xff."};
    const size_t blen[] = {7, 10, 14, 14};
    for (int i = 0; i < 4; i++) {
        mf_pv *b = load_lim(bops[i], blen[i], NULL);
        assert_int_equal(b->kind, MF_PV_BYTES);
        assert_int_equal(b->u.str.len, 2);
        assert_memory_equal(b->u.str.s, "\x00\xff", 2);
        assert_null(mf_pv_get_str(b));
    }
}

static void test_tuples(void **state)
{
    (void)state;
    mf_pv *e = LOAD("\x80\x02).");
    assert_int_equal(e->kind, MF_PV_TUPLE);
    assert_int_equal(e->u.seq.n, 0);
    mf_pv *t = LOAD("\x80\x02(K\x01K\x02K\x03K\x04t.");
    assert_int_equal(t->u.seq.n, 4);
    assert_int_equal(ival(t->u.seq.items[3]), 4);
    for (int n = 1; n <= 3; n++) {
        char buf[16] = "\x80\x02K\x01K\x02K\x03";
        buf[8] = (char)(0x84 + n);
        buf[9] = '.';
        mf_pv *tn = load_lim(buf, 10, NULL);
        assert_int_equal(tn->kind, MF_PV_TUPLE);
        assert_int_equal(tn->u.seq.n, n);
        assert_int_equal(ival(tn->u.seq.items[n - 1]), 3);
    }
}

static void test_lists_dicts_sets(void **state)
{
    (void)state;
    mf_pv *l = LOAD("\x80\x02]K\x01" "a(K\x02K\x03" "e.");
    assert_int_equal(l->kind, MF_PV_LIST);
    assert_int_equal(l->u.seq.n, 3);
    assert_int_equal(ival(l->u.seq.items[2]), 3);
    mf_pv *l2 = LOAD("\x80\x02(K\x01K\x02l.");
    assert_int_equal(l2->kind, MF_PV_LIST);
    assert_int_equal(l2->u.seq.n, 2);

    mf_pv *d = LOAD("\x80\x02}X\x01\x00\x00\x00" "bK\x01s(X\x01\x00\x00\x00" "aK\x02X\x01\x00\x00\x00" "cK\x03u.");
    assert_int_equal(d->kind, MF_PV_DICT);
    assert_int_equal(d->u.dict.n, 3);
    assert_string_equal(sval(d->u.dict.keys[0]), "b"); /* insertion order kept */
    assert_string_equal(sval(d->u.dict.keys[1]), "a");
    assert_int_equal(ival(mf_pv_dict_get(d, "c")), 3);
    assert_null(mf_pv_dict_get(d, "zz"));
    assert_null(mf_pv_dict_get(NULL, "a"));
    mf_pv *d2 = LOAD("\x80\x02(K\x01K\x02" "d.");
    assert_int_equal(d2->kind, MF_PV_DICT);
    assert_int_equal(d2->u.dict.n, 1);

    mf_pv *s = LOAD("\x80\x04\x8f(K\x01K\x02\x90.");
    assert_int_equal(s->kind, MF_PV_SET);
    assert_int_equal(s->u.seq.n, 2);
    mf_pv *fs = LOAD("\x80\x04(K\x05\x91.");
    assert_int_equal(fs->kind, MF_PV_SET);
    assert_int_equal(fs->u.seq.n, 1);
}

static void test_stack_ops(void **state)
{
    (void)state;
    assert_int_equal(ival(LOAD("\x80\x02K\x01K\x02" "0.")), 1);                /* POP */
    assert_int_equal(ival(LOAD("\x80\x02K\x01(K\x02K\x03" "1.")), 1);          /* POP_MARK */
    assert_int_equal(ival(LOAD("\x80\x02K\x09(0.")), 9);                        /* POP of an empty mark */
    mf_pv *t = LOAD("\x80\x02K\x07" "2\x86.");                                    /* DUP */
    assert_int_equal(t->u.seq.n, 2);
    assert_ptr_equal(t->u.seq.items[0], t->u.seq.items[1]);
    /* FRAME is skipped */
    assert_int_equal(ival(LOAD("\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x2a.")), 42);
}

static void test_memo(void **state)
{
    (void)state;
    /* BINPUT/BINGET, LONG_BINPUT/LONG_BINGET, MEMOIZE share values (a DAG). */
    mf_pv *t = LOAD("\x80\x02]q\x05h\x05\x86.");
    assert_ptr_equal(t->u.seq.items[0], t->u.seq.items[1]);
    t = LOAD("\x80\x02]r\x00\x01\x00\x00j\x00\x01\x00\x00\x86.");
    assert_ptr_equal(t->u.seq.items[0], t->u.seq.items[1]);
    t = LOAD("\x80\x04K\x01\x94K\x02\x94h\x01h\x00\x87.");
    assert_int_equal(ival(t->u.seq.items[1]), 2);
    assert_int_equal(ival(t->u.seq.items[2]), 1);
}

static void test_globals_objects(void **state)
{
    (void)state;
    mf_pv *g = LOAD("\x80\x02" "cargparse\nNamespace\n.");
    assert_true(mf_pv_is_global(g, "argparse", "Namespace"));
    assert_false(mf_pv_is_global(g, "argparse", "Other"));
    assert_true(mf_pv_is_global(LOAD("\x80\x02" "c__builtin__\nset\n."), "builtins", "set"));
    assert_true(mf_pv_is_global(LOAD("\x80\x04\x8c\x04" "math\x8c\x03" "pow\x93."), "math", "pow"));

    /* argparse.Namespace: NEWOBJ + BUILD(dict) */
    mf_pv *ns = LOAD("\x80\x02" "cargparse\nNamespace\n)\x81}X\x01\x00\x00\x00" "hK\x40sb.");
    assert_int_equal(ns->kind, MF_PV_OBJECT);
    assert_true(mf_pv_is_call_of(ns, "argparse", "Namespace"));
    assert_int_equal(ival(mf_pv_dict_get(mf_pv_obj_state(ns), "h")), 64);
    assert_null(mf_pv_obj_state(LOAD("\x80\x02N.")));
    /* NEWOBJ_EX keeps cls and args */
    mf_pv *nx = LOAD("\x80\x04" "cm\nC\n)}\x92.");
    assert_true(mf_pv_is_call_of(nx, "m", "C"));
    /* opaque REDUCE remembers callable and args; enum via getattr stays opaque */
    mf_pv *r = LOAD("\x80\x02" "cpathlib\nPosixPath\nX\x01\x00\x00\x00/\x85R.");
    assert_true(mf_pv_is_call_of(r, "pathlib", "PosixPath"));
    assert_string_equal(sval(r->u.obj.args->u.seq.items[0]), "/");
    assert_true(mf_pv_is_call_of(LOAD("\x80\x02" "c__builtin__\ngetattr\ncm\nE\nX\x01\x00\x00\x00" "A\x86R."),
                                 "builtins", "getattr"));
    /* BUILD on a dict (OrderedDict _metadata) or a list is ignored */
    mf_pv *od = LOAD("\x80\x02" "ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00" "aK\x01u}X\x09\x00\x00\x00_metadata}sb.");
    assert_int_equal(od->kind, MF_PV_DICT);
    assert_int_equal(od->u.dict.n, 1);
    assert_int_equal(ival(mf_pv_dict_get(od, "a")), 1);
    assert_int_equal(LOAD("\x80\x02]N" "b.")->kind, MF_PV_LIST);
    /* SETITEMS / APPENDS on an object are ignored, never executed */
    mf_pv *o = LOAD("\x80\x02" "cm\nC\n)R(K\x01K\x02uK\x03" "a(K\x04" "e.");
    assert_true(mf_pv_is_call_of(o, "m", "C"));
}

static void test_folds(void **state)
{
    (void)state;
    /* OrderedDict([(k, v)]) */
    mf_pv *od = LOAD("\x80\x02" "ccollections\nOrderedDict\n]X\x01\x00\x00\x00kK\x05\x86" "a\x85R.");
    assert_int_equal(od->kind, MF_PV_DICT);
    assert_int_equal(ival(mf_pv_dict_get(od, "k")), 5);
    /* torch.Size((2, 3)) -> tuple */
    mf_pv *sz = LOAD("\x80\x02" "ctorch\nSize\nK\x02K\x03\x86\x85R.");
    assert_int_equal(sz->kind, MF_PV_TUPLE);
    assert_int_equal(sz->u.seq.n, 2);
    /* _codecs.encode('\x00\xff', 'latin1') -> b'\x00\xff' (the str is UTF-8 in the pickle) */
    mf_pv *b = LOAD("\x80\x02" "c_codecs\nencode\nX\x03\x00\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00latin1\x86R.");
    assert_int_equal(b->kind, MF_PV_BYTES);
    assert_int_equal(b->u.str.len, 2);
    assert_memory_equal(b->u.str.s, "\x00\xff", 2);
    LOAD_ERR("\x80\x02" "c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.", MF_ERR_FORMAT,
             "latin-1");
    mf_pv *eb = LOAD("\x80\x02" "c__builtin__\nbytes\n)R.");
    assert_int_equal(eb->kind, MF_PV_BYTES);
    assert_int_equal(eb->u.str.len, 0);
    mf_pv *st = LOAD("\x80\x02" "c__builtin__\nset\n]K\x01" "aK\x02" "a\x85R.");
    assert_int_equal(st->kind, MF_PV_SET);
    assert_int_equal(st->u.seq.n, 2);
    assert_int_equal(LOAD("\x80\x02" "cbuiltins\nfrozenset\n)R.")->kind, MF_PV_SET);
}

static void test_persid(void **state)
{
    (void)state;
    mf_pv *p = LOAD("\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ.");
    assert_int_equal(p->kind, MF_PV_PERSID);
    assert_int_equal(p->u.persid.pid->u.seq.n, 5);
    assert_true(mf_pv_is_global(p->u.persid.pid->u.seq.items[1], "torch", "FloatStorage"));
}

/* A REDUCE of os.system / builtins.eval must stay an inert object. */
static void test_no_execution(void **state)
{
    (void)state;
    const char *marker = us_tmp("pwned");
    remove(marker);
    char cmd[4200], pk[8400];
    snprintf(cmd, sizeof cmd, "touch %s", marker);
    size_t cl = strlen(cmd), n = 0;
    n += (size_t)snprintf(pk + n, sizeof pk - n, "\x80\x02" "cos\nsystem\nX");
    pk[n++] = (char)(cl & 0xff), pk[n++] = (char)(cl >> 8), pk[n++] = 0, pk[n++] = 0;
    memcpy(pk + n, cmd, cl), n += cl;
    memcpy(pk + n, "\x85R.", 3), n += 3;
    mf_pv *v = load_lim(pk, n, NULL);
    assert_true(mf_pv_is_call_of(v, "os", "system"));
    assert_false(us_file_exists(marker));
    mf_pv *e = LOAD("\x80\x02" "cbuiltins\neval\nX\x0c\x00\x00\x00" "__import__()\x85R.");
    assert_true(mf_pv_is_call_of(e, "builtins", "eval"));
    /* and via Python's own pickle.dumps of an os.system reducer */
    if (!us_have_torch())
        return;
    const char *out = us_tmp("evil.pkl");
    snprintf(cmd, sizeof cmd,
             "import os, pickle, sys\n"
             "class E:\n    def __reduce__(self): return (os.system, ('touch %s',))\n"
             "open(sys.argv[1], 'wb').write(pickle.dumps({'x': E()}, protocol=2))\n",
             marker);
    const char *args[] = {out, NULL};
    assert_int_equal(us_run_python(cmd, args), 0);
    size_t len;
    uint8_t *buf = us_read_file(out, &len);
    assert_non_null(buf);
    mf_pv *root = load_lim(buf, len, NULL);
    free(buf);
    assert_true(mf_pv_is_call_of(mf_pv_dict_get(root, "x"), "posix", "system"));
    assert_false(us_file_exists(marker));
}

static void test_errors(void **state)
{
    (void)state;
    LOAD_ERR("\x80\x02I1\n.", MF_ERR_UNSUPPORTED, "0x49 at offset 2");   /* protocol-0 INT */
    LOAD_ERR("\x80\x02\xff.", MF_ERR_UNSUPPORTED, "0xff at offset 2");
    LOAD_ERR("\x80\x06N.", MF_ERR_UNSUPPORTED, "protocol");
    LOAD_ERR("\x80\x02N", MF_ERR_FORMAT, "STOP");                          /* no STOP */
    LOAD_ERR("", MF_ERR_FORMAT, "STOP");
    LOAD_ERR("\x80\x02.", MF_ERR_FORMAT, "underflow");
    LOAD_ERR("\x80\x02K\x01(a.", MF_ERR_FORMAT, "underflow");              /* target below the mark */
    LOAD_ERR("\x80\x02K\x01" "a.", MF_ERR_FORMAT, "APPEND");                 /* APPEND on an int */
    LOAD_ERR("\x80\x02K\x01K\x02K\x03s.", MF_ERR_FORMAT, "SETITEM");
    LOAD_ERR("\x80\x02}(K\x01u.", MF_ERR_FORMAT, "odd");
    LOAD_ERR("\x80\x02t.", MF_ERR_FORMAT, "MARK");
    LOAD_ERR("\x80\x02h\x03.", MF_ERR_FORMAT, "memo id 3");
    LOAD_ERR("\x80\x02Nr\xff\xff\xff\x7f.", MF_ERR_LIMIT, "memo id");      /* huge memo id */
    LOAD_ERR("\x80\x02X\xff\xff\xff\xff" "abc.", MF_ERR_FORMAT, "truncated");
    LOAD_ERR("\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x80" "abc.", MF_ERR_FORMAT, "truncated"); /* 2^63 */
    LOAD_ERR("\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff" "abc.", MF_ERR_FORMAT, "truncated");
    LOAD_ERR("\x80\x02\x8b\xff\xff\xff\xff.", MF_ERR_FORMAT, "negative");
    LOAD_ERR("\x80\x02T\xff\xff\xff\xff.", MF_ERR_FORMAT, "negative");
    LOAD_ERR("\x80\x02" "cos\nsys", MF_ERR_FORMAT, "newline");
    LOAD_ERR("\x80\x04K\x01K\x02\x93.", MF_ERR_FORMAT, "STACK_GLOBAL");
    LOAD_ERR("\x80\x02G\x00\x00.", MF_ERR_FORMAT, "truncated");
}

/* 100k nested MARK + EMPTY_LIST hits the depth limit instead of exhausting memory. */
static void test_deep_nesting(void **state)
{
    (void)state;
    size_t n = 100000, len = 2 + 2 * n + 1;
    char *b = malloc(len);
    b[0] = (char)0x80, b[1] = 2;
    for (size_t i = 0; i < n; i++)
        b[2 + 2 * i] = '(', b[3 + 2 * i] = ']';
    b[len - 1] = '.';
    load_err_lim(b, len, MF_ERR_LIMIT, "MARK", NULL);
    /* Lists nested 100k deep with a bounded stack (memo trick): ] h q 0 per level. */
    size_t per = 7, l2 = 2 + 3 + n * per + 1;
    char *c = malloc(l2);
    size_t k = 0;
    c[k++] = (char)0x80, c[k++] = 2;
    c[k++] = ']', c[k++] = 'q', c[k++] = 0;
    for (size_t i = 0; i < n; i++) {
        c[k++] = '0';            /* drop the previous list from the stack */
        c[k++] = ']';            /* new list */
        c[k++] = 'h', c[k++] = (char)(i & 1); /* previous list */
        c[k++] = 'a';            /* new.append(previous) */
        c[k++] = 'q', c[k++] = (char)((i + 1) & 1);
    }
    c[k++] = '.';
    load_err_lim(c, k, MF_ERR_LIMIT, "nested", NULL);
    /* ... while a depth of 50 is fine and reported exactly */
    mf_pickle_limits lim = {.max_depth = 51};
    size_t k50 = 5 + 50 * per;
    c[k50] = '.';
    mf_pv *v = load_lim(c, k50 + 1, &lim);
    int depth = 0;
    while (v->kind == MF_PV_LIST && v->u.seq.n == 1)
        v = v->u.seq.items[0], depth++;
    assert_int_equal(depth, 50);
    free(b);
    free(c);
}

static void test_cycles_and_budget(void **state)
{
    (void)state;
    /* l.append(l) and d[k] = d are refused: the tree stays acyclic */
    mf_pv *l = LOAD("\x80\x02]q\x00h\x00" "a.");
    assert_int_equal(l->u.seq.n, 0);
    mf_pv *d = LOAD("\x80\x02}q\x00K\x01h\x00s.");
    assert_int_equal(d->u.dict.n, 0);
    /* a list filled after it was put inside another keeps its old contents */
    mf_pv *t = LOAD("\x80\x02]q\x00\x85h\x00K\x01" "a0.");
    assert_int_equal(t->kind, MF_PV_TUPLE);
    assert_int_equal(t->u.seq.items[0]->u.seq.n, 0);
    /* memory budget */
    mf_pickle_limits lim = {.max_bytes = 1 << 20};
    size_t n = 200000, len = 3 + n + 1;
    char *b = malloc(len);
    b[0] = (char)0x80, b[1] = 2, b[2] = '(';
    memset(b + 3, 'N', n); /* None is shared: this is the VM stack outgrowing the budget */
    b[len - 1] = 'l';
    load_err_lim(b, len, MF_ERR_LIMIT, "memory allowed", &lim);
    memset(b + 3, ']', n); /* 200k distinct lists: the value arena outgrowing it */
    load_err_lim(b, len, MF_ERR_LIMIT, "memory allowed", &lim);
    free(b);
}

/* PROTO 2, MARK, `deep` Nones, POP_MARK (the stack keeps its capacity), MARK, `lists` empty
 * lists, LIST, STOP. */
static char *stack_then_lists(size_t deep, size_t lists, size_t *len)
{
    char *b = malloc(8 + deep + lists), *p = b;
    *p++ = (char)0x80, *p++ = 2, *p++ = '(';
    memset(p, 'N', deep), p += deep;
    *p++ = '1', *p++ = '(';
    memset(p, ']', lists), p += lists;
    *p++ = 'l', *p++ = '.';
    *len = (size_t)(p - b);
    return b;
}

/* The VM's stack and the values share one budget: values that fit beside a short stack are
 * refused beside a 512 KiB one (each alone fits 768 KiB; together they would not). */
static void test_stack_and_values_share_budget(void **state)
{
    (void)state;
    mf_pickle_limits lim = {.max_bytes = 768 << 10};
    size_t len;
    char *b = stack_then_lists(100, 7000, &len);
    mf_pickle *pk;
    mf_pv *v;
    assert_int_equal(mf_pickle_load((const uint8_t *)b, len, "ok.pkl", &lim, &pk, &v), MF_OK);
    assert_int_equal(v->u.seq.n, 7000);
    mf_pickle_free(pk);
    free(b);
    b = stack_then_lists(40000, 7000, &len);
    load_err_lim(b, len, MF_ERR_LIMIT, "memory allowed", &lim);
    free(b);
}

/* ---- pickles written by Python ---- */

static const char *py_objs =
    "import pickle, sys\n"
    "obj = {'none': None, 't': True, 'f': False, 'i': -5, 'i2': 300, 'i4': -70000,\n"
    "       'big': 2**70, 'u32': 2**32 - 1, 'i64min': -2**63, 'i64max': 2**63 - 1,\n"
    "       'fl': -0.25, 's': 'h\\u00e9llo', 'b': b'\\x00\\xff', 'eb': b'', 'ba': bytearray(b'xy'),\n"
    "       'l': [1, [2, [3]]], 't0': (), 't3': (1, 2, 3), 't5': (1, 2, 3, 4, 5),\n"
    "       'set': {7}, 'fs': frozenset([8]), 'range': list(range(2500)),\n"
    "       'many': {str(i): i for i in range(1100)}}\n"
    "shared = [42]\n"
    "obj['sh1'] = shared; obj['sh2'] = shared\n"
    "open(sys.argv[1], 'wb').write(pickle.dumps(obj, protocol=int(sys.argv[2])))\n";

static void check_py_tree(const mf_pv *r, int proto)
{
    double d;
    assert_int_equal(r->kind, MF_PV_DICT);
    assert_string_equal(sval(r->u.dict.keys[0]), "none");
    assert_int_equal(mf_pv_dict_get(r, "none")->kind, MF_PV_NONE);
    assert_int_equal(mf_pv_dict_get(r, "t")->kind, MF_PV_BOOL);
    assert_int_equal(ival(mf_pv_dict_get(r, "t")), 1);
    assert_int_equal(ival(mf_pv_dict_get(r, "f")), 0);
    assert_int_equal(ival(mf_pv_dict_get(r, "i")), -5);
    assert_int_equal(ival(mf_pv_dict_get(r, "i2")), 300);
    assert_int_equal(ival(mf_pv_dict_get(r, "i4")), -70000);
    assert_true(mf_pv_is_call_of(mf_pv_dict_get(r, "big"), "builtins", "int"));
    assert_int_equal(ival(mf_pv_dict_get(r, "u32")), 4294967295LL);
    assert_int_equal(ival(mf_pv_dict_get(r, "i64min")), INT64_MIN);
    assert_int_equal(ival(mf_pv_dict_get(r, "i64max")), INT64_MAX);
    assert_int_equal(mf_pv_get_float(mf_pv_dict_get(r, "fl"), &d), MF_OK);
    assert_true(d == -0.25);
    assert_string_equal(sval(mf_pv_dict_get(r, "s")), "h\xc3\xa9llo");
    const mf_pv *b = mf_pv_dict_get(r, "b");
    assert_int_equal(b->kind, MF_PV_BYTES);
    assert_int_equal(b->u.str.len, 2);
    assert_memory_equal(b->u.str.s, "\x00\xff", 2);
    assert_int_equal(mf_pv_dict_get(r, "eb")->kind, MF_PV_BYTES);
    assert_int_equal(mf_pv_dict_get(r, "eb")->u.str.len, 0);
    if (proto == 5) { /* BYTEARRAY8 */
        assert_int_equal(mf_pv_dict_get(r, "ba")->kind, MF_PV_BYTES);
        assert_int_equal(mf_pv_dict_get(r, "ba")->u.str.len, 2);
    } else {
        assert_true(mf_pv_is_call_of(mf_pv_dict_get(r, "ba"), "builtins", "bytearray"));
    }
    const mf_pv *l = mf_pv_dict_get(r, "l");
    assert_int_equal(l->kind, MF_PV_LIST);
    assert_int_equal(ival(l->u.seq.items[1]->u.seq.items[1]->u.seq.items[0]), 3);
    assert_int_equal(mf_pv_dict_get(r, "t0")->u.seq.n, 0);
    assert_int_equal(mf_pv_dict_get(r, "t3")->u.seq.n, 3);
    assert_int_equal(ival(mf_pv_dict_get(r, "t5")->u.seq.items[4]), 5);
    assert_int_equal(mf_pv_dict_get(r, "set")->kind, MF_PV_SET);
    assert_int_equal(ival(mf_pv_dict_get(r, "set")->u.seq.items[0]), 7);
    assert_int_equal(mf_pv_dict_get(r, "fs")->kind, MF_PV_SET);
    assert_int_equal(ival(mf_pv_dict_get(r, "fs")->u.seq.items[0]), 8);
    const mf_pv *rg = mf_pv_dict_get(r, "range");
    assert_int_equal(rg->u.seq.n, 2500);
    assert_int_equal(ival(rg->u.seq.items[2499]), 2499);
    const mf_pv *many = mf_pv_dict_get(r, "many");
    assert_int_equal(many->u.dict.n, 1100);
    assert_int_equal(ival(mf_pv_dict_get(many, "1099")), 1099);
    assert_string_equal(sval(many->u.dict.keys[1000]), "1000");
    assert_ptr_equal(mf_pv_dict_get(r, "sh1"), mf_pv_dict_get(r, "sh2")); /* memo sharing */
}

static void test_python_pickles(void **state)
{
    (void)state;
    if (us_run_python("import pickle\n", NULL) != 0)
        skip();
    for (int p = 2; p <= 5; p++) {
        char ps[4];
        snprintf(ps, sizeof ps, "%d", p);
        const char *out = us_tmp("objs.pkl");
        const char *args[] = {out, ps, NULL};
        int rc = us_run_python(py_objs, args);
        if (rc != 0 && p == 5)
            continue; /* Python < 3.8 has no protocol 5 */
        assert_int_equal(rc, 0);
        size_t len;
        uint8_t *buf = us_read_file(out, &len);
        assert_non_null(buf);
        mf_pv *root = load_lim(buf, len, NULL);
        free(buf);
        check_py_tree(root, p);
    }
}

/* ---- limits.skip_keys ---- */

/* Python writes the same structure twice: with "skip" pairs in many positions (first and in
 * the middle of a SETITEMS batch, alone in a SETITEM, in an object's state, nested inside a
 * skipped value) and without them. Loaded with skip_keys = {"skip"}, the first must equal the
 * second. Y is first pickled inside a skipped value, so its later reference (refY) reads None. */
static const char *py_skip =
    "import pickle, sys\n"
    "class Meta:\n"
    "    pass\n"
    "X = [1, 2, 'x']\n"
    "Y = ['only-in-skip', 9]\n"
    "def build(w):\n"
    "    d = {}\n"
    "    if w: d['skip'] = {'nested': [Y, (1, 2)], 'deep': {'skip': 5}}\n"
    "    d['a'] = X\n"
    "    d['b'] = [X, 'str', 3.5]\n"
    "    d['refY'] = Y if w else None\n"
    "    inner = {'k': 1}\n"
    "    if w: inner['skip'] = [1, 2, 3]\n"
    "    inner['z'] = X\n"
    "    d['inner'] = inner\n"
    "    big = {}\n"
    "    for i in range(2500):\n"
    "        if i == 1500 and w: big['skip'] = list(range(50))\n"
    "        big[str(i)] = (i, str(i))\n"
    "    d['big'] = big\n"
    "    last = {str(i): i for i in range(1000)}\n"
    "    if w: last['skip'] = [X, 'tail']\n"
    "    d['last'] = last\n"
    "    m = Meta()\n"
    "    m.first = 1\n"
    "    if w: m.skip = [Meta(), X, {'skip': 1}]\n"
    "    m.after = ('after', X)\n"
    "    d['obj'] = m\n"
    "    d['end'] = 'end'\n"
    "    return d\n"
    "p = int(sys.argv[3])\n"
    "open(sys.argv[1], 'wb').write(pickle.dumps(build(True), protocol=p))\n"
    "open(sys.argv[2], 'wb').write(pickle.dumps(build(False), protocol=p))\n";

static int pv_equal(const mf_pv *a, const mf_pv *b)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case MF_PV_NONE: return 1;
    case MF_PV_BOOL:
    case MF_PV_INT: return a->u.i == b->u.i;
    case MF_PV_FLOAT: return a->u.f == b->u.f;
    case MF_PV_STR:
    case MF_PV_BYTES: return a->u.str.len == b->u.str.len && memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case MF_PV_TUPLE:
    case MF_PV_LIST:
    case MF_PV_SET:
        if (a->u.seq.n != b->u.seq.n)
            return 0;
        for (size_t i = 0; i < a->u.seq.n; i++)
            if (!pv_equal(a->u.seq.items[i], b->u.seq.items[i]))
                return 0;
        return 1;
    case MF_PV_DICT:
        if (a->u.dict.n != b->u.dict.n)
            return 0;
        for (size_t i = 0; i < a->u.dict.n; i++)
            if (!pv_equal(a->u.dict.keys[i], b->u.dict.keys[i]) || !pv_equal(a->u.dict.vals[i], b->u.dict.vals[i]))
                return 0;
        return 1;
    case MF_PV_GLOBAL:
        return strcmp(a->u.global.module, b->u.global.module) == 0 && strcmp(a->u.global.name, b->u.global.name) == 0;
    case MF_PV_OBJECT:
        return pv_equal(a->u.obj.callable, b->u.obj.callable) && pv_equal(a->u.obj.args, b->u.obj.args) &&
               pv_equal(a->u.obj.state, b->u.obj.state);
    case MF_PV_PERSID: return pv_equal(a->u.persid.pid, b->u.persid.pid);
    }
    return 0;
}

static void test_skip_keys(void **state)
{
    (void)state;
    if (us_run_python("import pickle\n", NULL) != 0)
        skip();
    static const char *const skip_list[] = {"skip", NULL};
    mf_pickle_limits lim = {.skip_keys = skip_list};
    for (int p = 2; p <= 4; p++) {
        char ps[4];
        snprintf(ps, sizeof ps, "%d", p);
        const char *with = us_tmp("skip_with.pkl"), *without = us_tmp("skip_without.pkl");
        const char *args[] = {with, without, ps, NULL};
        assert_int_equal(us_run_python(py_skip, args), 0);
        size_t la, lb;
        uint8_t *a = us_read_file(with, &la), *b = us_read_file(without, &lb);
        assert_non_null(a);
        assert_non_null(b);
        mf_pickle *pa, *pb, *pfull;
        mf_pv *ra, *rb, *rfull;
        assert_int_equal(mf_pickle_load(a, la, "with", &lim, &pa, &ra), MF_OK);
        assert_int_equal(mf_pickle_load(b, lb, "without", NULL, &pb, &rb), MF_OK);
        assert_int_equal(mf_pickle_load(a, la, "full", NULL, &pfull, &rfull), MF_OK);
        assert_true(pv_equal(ra, rb));
        assert_false(pv_equal(rfull, rb)); /* the pairs are really there without the option */
        assert_non_null(mf_pv_dict_get(rfull, "skip"));
        assert_null(mf_pv_dict_get(ra, "skip"));
        assert_int_equal(ival(mf_pv_dict_get(mf_pv_dict_get(ra, "big"), "2499")->u.seq.items[0]), 2499);
        mf_pickle_free(pa);
        mf_pickle_free(pb);
        mf_pickle_free(pfull);
        free(a);
        free(b);
    }
}

/* One SETITEMS batch of n pairs whose keys are all skipped: each pair makes the VM re-read the
 * rest of the batch, so the extra work is bounded (a crafted .metadata must not hang a mount). */
static void test_skip_keys_batch_bound(void **state)
{
    (void)state;
    static const char *const skip_list[] = {"skip", NULL};
    mf_pickle_limits lim = {.skip_keys = skip_list};
    for (int big = 0; big < 2; big++) {
        size_t n = big ? 40000 : 50, len = 0;
        uint8_t *b = malloc(8 + n * 9);
        b[len++] = 0x80, b[len++] = 4, b[len++] = '}', b[len++] = '(';
        for (size_t i = 0; i < n; i++) {
            b[len++] = 0x8c, b[len++] = 4;
            memcpy(b + len, "skip", 4), len += 4;
            b[len++] = 'K', b[len++] = (uint8_t)i;
        }
        b[len++] = 'u', b[len++] = '.';
        if (big) {
            load_err_lim(b, len, MF_ERR_LIMIT, "skipped dict entries", &lim);
        } else {
            mf_pv *d = load_lim(b, len, &lim);
            assert_int_equal(d->kind, MF_PV_DICT);
            assert_int_equal(d->u.dict.n, 0);
        }
        free(b);
    }
}

/* limits.release_input: pages read past go back to the OS during the load (a .metadata is not
 * held twice, as bytes and as values), but never past where a skipped dict entry rewinds to.
 * {"skip": None, "b": <10 MiB of 0xAB>, "c": 7} in one SETITEMS batch with "skip" skipped: the
 * VM skims b's bytes, then rewinds to "b" and builds it; b must come out whole, and the input
 * behind the end of b must read as released (zeros). */
static void test_release_input(void **state)
{
    (void)state;
    static const char *const skip_list[] = {"skip", NULL};
    const size_t nb = (size_t)10 << 20;
    for (int skipping = 0; skipping < 2; skipping++) {
        mf_pickle_limits lim = {.skip_keys = skipping ? skip_list : NULL, .release_input = 1};
        uint8_t *b = mf_big_alloc(nb + 64, NULL);
        size_t len = 0, b_at;
        assert_non_null(b);
        b[len++] = 0x80, b[len++] = 4, b[len++] = '}', b[len++] = '(';
        b[len++] = 0x8c, b[len++] = 4;
        memcpy(b + len, "skip", 4), len += 4;
        b[len++] = 'N';
        b[len++] = 0x8c, b[len++] = 1, b[len++] = 'b';
        b[len++] = 0x8e; /* BINBYTES8 */
        for (int i = 0; i < 8; i++)
            b[len++] = (uint8_t)((uint64_t)nb >> (8 * i));
        b_at = len;
        memset(b + len, 0xAB, nb), len += nb;
        b[len++] = 0x8c, b[len++] = 1, b[len++] = 'c';
        b[len++] = 'K', b[len++] = 7;
        b[len++] = 'u', b[len++] = '.';
        mf_pv *d = load_lim(b, len, &lim);
        assert_int_equal(d->kind, MF_PV_DICT);
        assert_int_equal(d->u.dict.n, skipping ? 2 : 3);
        const mf_pv *bv = mf_pv_dict_get(d, "b");
        assert_non_null(bv);
        assert_int_equal(bv->kind, MF_PV_BYTES);
        assert_int_equal(bv->u.str.len, nb);
        for (size_t i = 0; i < nb; i += 4096)
            if ((uint8_t)bv->u.str.s[i] != 0xAB)
                fail_msg("byte %zu of b is 0x%02x: read from released input", i, (uint8_t)bv->u.str.s[i]);
        assert_int_equal((uint8_t)bv->u.str.s[nb - 1], 0xAB);
        assert_int_equal(ival(mf_pv_dict_get(d, "c")), 7);
        /* the middle of b's bytes in the input were handed back: they read as zeros now */
        assert_int_equal(b[b_at + nb / 2], 0);
        assert_int_equal(b[b_at + nb / 2 + 8192], 0);
        free(b);
    }
}

/* limits.fill: the input is read on demand, a window at a time, front to back. A GLOBAL line
 * that straddles a window boundary and a 10 MiB operand load whole; a failing fill is the
 * load's error. */
typedef struct {
    const uint8_t *src;
    size_t first, largest, calls, fail_from;
    const uint8_t *buf;     /* probe: at the first fill at or past probe_after, */
    size_t probe, probe_after;
    int probe_zero;         /* was buf[probe] already handed back (0)? -1: not probed */
} fill_log;

static int fill_from(void *ctx, uint8_t *dst, size_t off, size_t n)
{
    fill_log *l = ctx;
    if (l->buf && l->probe_zero < 0 && off + n > l->probe_after)
        l->probe_zero = l->buf[l->probe] == 0;
    if (l->calls++ == 0)
        l->first = n;
    if (n > l->largest)
        l->largest = n;
    if (l->fail_from && off + n > l->fail_from)
        return mf_fail(MF_ERR_IO, "bad.pkl: read failed at %zu", off);
    memcpy(dst, l->src + off, n);
    return MF_OK;
}

static void test_fill_on_demand(void **state)
{
    (void)state;
    /* the GLOBAL name (3 MiB) is longer than a window, so its newline is looked for in 2 fills */
    const size_t pad = ((size_t)2 << 20) - 40, nn = (size_t)3 << 20, nb = (size_t)10 << 20;
    const size_t cap = pad + nn + nb + 256;
    uint8_t *src = malloc(cap), *dst = mf_big_alloc(cap, NULL);
    size_t len = 0;
    assert_non_null(src);
    assert_non_null(dst);
    src[len++] = 0x80, src[len++] = 2, src[len++] = '(';
    src[len++] = 'B'; /* BINBYTES: padding up to the end of the first window */
    for (int i = 0; i < 4; i++)
        src[len++] = (uint8_t)(pad >> (8 * i));
    memset(src + len, 0x11, pad), len += pad;
    memcpy(src + len, "ctorch\n", 7), len += 7;
    memset(src + len, 'x', nn), len += nn;
    src[len++] = '\n';
    src[len++] = 0x8e; /* BINBYTES8 */
    for (int i = 0; i < 8; i++)
        src[len++] = (uint8_t)((uint64_t)nb >> (8 * i));
    memset(src + len, 0x22, nb), len += nb;
    src[len++] = 't', src[len++] = '.';
    for (int failing = 0; failing < 2; failing++) {
        fill_log l = {.src = src, .fail_from = failing ? (size_t)9 << 20 : 0};
        mf_pickle_limits lim = {.fill = fill_from, .fill_ctx = &l, .release_input = 1};
        memset(dst, 0, len);
        if (failing) {
            load_err_lim(dst, len, MF_ERR_IO, "read failed", &lim);
            continue;
        }
        mf_pv *t = load_lim(dst, len, &lim);
        assert_int_equal(t->kind, MF_PV_TUPLE);
        assert_int_equal(t->u.seq.n, 3);
        assert_int_equal(t->u.seq.items[0]->u.str.len, pad);
        assert_int_equal(t->u.seq.items[1]->kind, MF_PV_GLOBAL);
        assert_int_equal(strlen(t->u.seq.items[1]->u.global.name), nn);
        const mf_pv *big = t->u.seq.items[2];
        assert_int_equal(big->u.str.len, nb);
        assert_int_equal((uint8_t)big->u.str.s[0], 0x22);
        assert_int_equal((uint8_t)big->u.str.s[nb - 1], 0x22);
        assert_true(l.first <= ((size_t)2 << 20));   /* read a window at a time, not whole */
        assert_true(l.calls >= 4);
    }
    free(src);
    free(dst);
}

/* Input read on demand is handed back while a skipped value is skimmed too, whatever the skim
 * may rewind to (it is read again then): {"skip": [3 x 4 MiB], "c": 7} (Megatron's
 * all_local_plans: a list of large plans) and {"skip": None, "b": <10 MiB>, "c": 7} (the VM skims
 * b, then rewinds and builds it). Probed at the fill past the skimmed bytes. */
static void test_release_while_skimming(void **state)
{
    (void)state;
    static const char *const skip_list[] = {"skip", NULL};
    const size_t nb = (size_t)4 << 20;
    for (int rewind = 0; rewind < 2; rewind++) {
        uint8_t *src = malloc(3 * (nb + 9) + 64), *buf = mf_big_alloc(3 * (nb + 9) + 64, NULL);
        memset(buf, 0, 3 * (nb + 9) + 64); /* what was read and released reads as 0 again */
        size_t len = 0, first_item;
        assert_non_null(src);
        assert_non_null(buf);
        src[len++] = 0x80, src[len++] = 4, src[len++] = '}', src[len++] = '(';
        src[len++] = 0x8c, src[len++] = 4;
        memcpy(src + len, "skip", 4), len += 4;
        if (rewind)
            src[len++] = 'N', src[len++] = 0x8c, src[len++] = 1, src[len++] = 'b';
        src[len++] = ']', src[len++] = '(';
        first_item = len;
        for (int k = 0; k < 3; k++) {
            src[len++] = 0x8e; /* BINBYTES8 */
            for (int i = 0; i < 8; i++)
                src[len++] = (uint8_t)((uint64_t)nb >> (8 * i));
            memset(src + len, 0xCD, nb), len += nb;
        }
        src[len++] = 'e';
        src[len++] = 0x8c, src[len++] = 1, src[len++] = 'c';
        src[len++] = 'K', src[len++] = 7;
        src[len++] = 'u', src[len++] = '.';
        fill_log l = {.src = src, .buf = buf, .probe = first_item + nb, .probe_after = first_item + 3 * nb,
                      .probe_zero = -1};
        mf_pickle_limits lim = {.skip_keys = skip_list, .release_input = 1, .fill = fill_from, .fill_ctx = &l};
        mf_pv *d = load_lim(buf, len, &lim);
        assert_int_equal(d->kind, MF_PV_DICT);
        assert_int_equal(d->u.dict.n, rewind ? 2 : 1);
        assert_int_equal(ival(mf_pv_dict_get(d, "c")), 7);
        if (rewind) {
            const mf_pv *b = mf_pv_dict_get(d, "b");
            assert_non_null(b);
            assert_int_equal(b->kind, MF_PV_LIST);
            assert_int_equal(b->u.seq.n, 3);
            for (int k = 0; k < 3; k++) {
                const mf_pv *item = b->u.seq.items[k];
                assert_int_equal(item->u.str.len, nb);
                for (size_t i = 0; i < nb; i += 4096)
                    if ((uint8_t)item->u.str.s[i] != 0xCD)
                        fail_msg("byte %zu of b[%d] is 0x%02x after the rewind", i, k, (uint8_t)item->u.str.s[i]);
            }
        }
        assert_int_equal(l.probe_zero, 1);
        free(src);
        free(buf);
    }
}

/* A dict key built under a MARK after a skipped pair ({"skip": None, ("a", "b"): 1} in one
 * SETITEMS batch): reading goes back to the key's MARK, not into the tuple. */
static void test_skip_keys_tuple_key(void **state)
{
    (void)state;
    static const char *const skip_list[] = {"skip", NULL};
    mf_pickle_limits lim = {.skip_keys = skip_list};
    static const char p[] = "\x80\x04}(\x8c\x04skipN(\x8c\x01" "a\x8c\x01" "btK\x01u.";
    mf_pv *d = load_lim(p, sizeof p - 1, &lim);
    assert_int_equal(d->kind, MF_PV_DICT);
    assert_int_equal(d->u.dict.n, 1);
    const mf_pv *k = d->u.dict.keys[0];
    assert_int_equal(k->kind, MF_PV_TUPLE);
    assert_int_equal(k->u.seq.n, 2);
    assert_string_equal(mf_pv_get_str(k->u.seq.items[0]), "a");
    assert_string_equal(mf_pv_get_str(k->u.seq.items[1]), "b");
    assert_int_equal(ival(d->u.dict.vals[0]), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scalars, teardown),
        cmocka_unit_test_teardown(test_strings, teardown),
        cmocka_unit_test_teardown(test_tuples, teardown),
        cmocka_unit_test_teardown(test_lists_dicts_sets, teardown),
        cmocka_unit_test_teardown(test_stack_ops, teardown),
        cmocka_unit_test_teardown(test_memo, teardown),
        cmocka_unit_test_teardown(test_globals_objects, teardown),
        cmocka_unit_test_teardown(test_folds, teardown),
        cmocka_unit_test_teardown(test_persid, teardown),
        cmocka_unit_test_teardown(test_no_execution, teardown),
        cmocka_unit_test_teardown(test_errors, teardown),
        cmocka_unit_test_teardown(test_deep_nesting, teardown),
        cmocka_unit_test_teardown(test_cycles_and_budget, teardown),
        cmocka_unit_test(test_stack_and_values_share_budget),
        cmocka_unit_test_teardown(test_python_pickles, teardown),
        cmocka_unit_test_teardown(test_skip_keys, teardown),
        cmocka_unit_test_teardown(test_skip_keys_batch_bound, teardown),
        cmocka_unit_test_teardown(test_release_input, teardown),
        cmocka_unit_test_teardown(test_fill_on_demand, teardown),
        cmocka_unit_test_teardown(test_release_while_skimming, teardown),
        cmocka_unit_test_teardown(test_skip_keys_tuple_key, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
