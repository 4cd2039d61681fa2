/* Unit tests for the Python-compatible JSON writer behind config.json and the index: every case
 * is compared byte for byte with what Python's json.dumps(json.loads(text), indent=2,
 * sort_keys=True) + "\n" writes (transformers' save_pretrained), and hf_config numbers keep
 * their JSON type (4.0 stays a float). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "json_python.h"
#include "mcorefs/error.h"
#include "unit_support.h"

static const char py_dump[] =
    "import json, sys\n"
    "d = json.loads(open(sys.argv[1], encoding='utf-8').read())\n"
    "open(sys.argv[2], 'w', encoding='ascii').write(json.dumps(d, indent=2, sort_keys=True) + '\\n')\n";

/* Our text for `json` (parsed by cJSON, numbers kept as written) against Python's. */
static void expect_as_python(const char *json)
{
    char in[4096], out[4096];
    snprintf(in, sizeof in, "%s", us_tmp("in.json"));
    snprintf(out, sizeof out, "%s", us_tmp("out.json"));
    assert_int_equal(us_write_file(in, json, strlen(json)), 0);
    const char *args[] = { in, out, NULL };
    if (us_run_python(py_dump, args) != 0)
        skip();
    size_t n = 0;
    char *want = (char *)us_read_file(out, &n);
    assert_non_null(want);
    cJSON *tree = cJSON_Parse(json);
    assert_non_null(tree);
    assert_int_equal(mf_json_keep_numbers(tree, json), MF_OK);
    char *got = mf_json_print_python(tree);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("for %s\nmcorefs wrote:\n%s\nPython writes:\n%s", json, got, want);
    free(got);
    free(want);
    cJSON_Delete(tree);
}

static void test_layout_and_key_order(void **state)
{
    (void)state;
    expect_as_python("{}");
    expect_as_python("{\"b\": 1, \"a\": {\"z\": [], \"y\": {}, \"x\": [[1], {\"q\": null}]}, \"c\": [true, false]}");
    expect_as_python("{\"\\u00e9\": 1, \"z\": 2, \"A\": 3, \"a b\": 4, \"a\": 5}");   /* code point order */
    expect_as_python("{\"k\": {\"dup\": 1, \"dup\": [2.5]}, \"dup\": 0, \"dup\": \"last\"}");   /* last one wins */
}

static void test_strings_as_ensure_ascii(void **state)
{
    (void)state;
    expect_as_python("{\"s\": \"caf\\u00e9 \\ud83d\\ude00 \\u0001\\u001f \\\"q\\\" / \\\\ \\u007f \\t\\n\\r\\b\\f\"}");
    expect_as_python("{\"\xe6\x97\xa5\xe6\x9c\xac\": \"\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xc3\xbf\"}");   /* raw UTF-8 */
}

static void test_numbers_keep_their_type(void **state)
{
    (void)state;
    expect_as_python("{\"f\": [4.0, 1E0, 0.1, -0.0, 1e-6, 1.0e-5, 5e-324, 1.5e300, 1e16, 1e15, 123.456, -1.0E-7, 2.5E+3]}");
    expect_as_python("{\"i\": [0, -0, 7, -12, 123456789012345678901234567890, 9007199254740993]}");
    expect_as_python("{\"inf\": 1e400}");
}

static void test_number_inside_string_not_taken(void **state)
{
    (void)state;
    /* digits inside keys and strings must not be mistaken for the next number */
    expect_as_python("{\"a1\": \"2.0 and 3\", \"b\\\"4\": 5.0, \"c\": [\"6\", 7.0e0]}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_key_order),
        cmocka_unit_test(test_strings_as_ensure_ascii),
        cmocka_unit_test(test_numbers_keep_their_type),
        cmocka_unit_test(test_number_inside_string_not_taken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
