/* JSON text exactly as Python's json module writes it for transformers' save_pretrained:
 * json.dumps(d, indent=2, sort_keys=True) + "\n". */
#ifndef MCOREFS_JSON_PYTHON_H
#define MCOREFS_JSON_PYTHON_H

#include <cjson/cJSON.h>

/* 2-space indentation, object keys sorted (code point order, recursively; of duplicate keys the
 * last one is kept, as json.loads does), ", " / ": " separators, non-ASCII characters escaped
 * (ensure_ascii), a final newline. Raw items are written as they are (numbers already in Python's
 * spelling). NULL when out of memory. */
char *mf_json_print_python(const cJSON *root);

/* Give every number of a tree parsed from `text` the spelling Python would write for the value
 * the user wrote: integers keep their digits (any size), floats stay floats (4.0 stays 4.0, not
 * 4) in Python's repr. The numbers become Raw items. MF_OK or MF_ERR_FORMAT. */
int mf_json_keep_numbers(cJSON *tree, const char *text);

#endif
