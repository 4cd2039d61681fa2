/* Unit tests of core's one hash table (core/hash_slots.c): sizes, insert and find, keys that
 * all collide (probing wraps around the end), a missing key ends on an empty slot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hash_slots.h"

typedef struct {
    char names[100][16];
    uint64_t hashes[100];
    const char *want;
} table;

static int same_name(const void *ctx, size_t i)
{
    const table *t = ctx;
    return strcmp(t->names[i], t->want) == 0;
}

static void test_sizes(void **state)
{
    (void)state;
    size_t n;
    uint32_t *s = mf_slots_new(0, &n);
    assert_non_null(s);
    assert_int_equal(n, 16);
    free(s);
    s = mf_slots_new(100, &n);
    assert_non_null(s);
    assert_int_equal(n, 256);   /* a power of two >= 2n + 2 */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(s[i], 0);
    free(s);
    assert_null(mf_slots_new(SIZE_MAX / 2, &n));
}

/* Insert 100 names under hash fn(i), then find each and miss one. */
static void check(uint64_t (*fn)(size_t))
{
    table t;
    size_t n;
    uint32_t *slots = mf_slots_new(100, &n);
    assert_non_null(slots);
    for (size_t i = 0; i < 100; i++) {
        snprintf(t.names[i], sizeof t.names[i], "name%zu", i);
        t.hashes[i] = fn(i);
        size_t s = mf_slots_find(slots, n, t.hashes[i], NULL, NULL);
        assert_int_equal(mf_slots_entry(slots, s), -1);
        slots[s] = (uint32_t)(i + 1);
    }
    for (size_t i = 0; i < 100; i++) {
        t.want = t.names[i];
        assert_int_equal(mf_slots_entry(slots, mf_slots_find(slots, n, t.hashes[i], same_name, &t)), (int64_t)i);
    }
    t.want = "absent";
    assert_int_equal(mf_slots_entry(slots, mf_slots_find(slots, n, fn(7), same_name, &t)), -1);
    free(slots);
}

static uint64_t spread(size_t i) { return i * 0x9e3779b97f4a7c15ULL; }
static uint64_t collide_at_end(size_t i) { (void)i; return 255; }   /* the last slot of 256: wraps */

static void test_find(void **state)
{
    (void)state;
    check(spread);
    check(collide_at_end);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_find),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
