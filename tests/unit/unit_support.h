/* Small helpers shared by the cmocka unit tests. */
#ifndef MCOREFS_UNIT_SUPPORT_H
#define MCOREFS_UNIT_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* MCOREFS_TEST_DATA "/" rel (e.g. "torch/torch2x_sample.pt"; tests/data in the repo); valid until 8 more calls. */
const char *us_data(const char *rel);
/* MCOREFS_TEST_TMP/<test program>_<name> (dir created on demand); same lifetime rule. */
const char *us_tmp(const char *name);
/* Whole file into a malloc'ed buffer (NUL-terminated beyond *len); NULL on error. */
uint8_t *us_read_file(const char *path, size_t *len);
/* Create/replace path with data; 0 on success. */
int us_write_file(const char *path, const void *data, size_t len);
int us_file_exists(const char *path);
/* The Python to use: $MCOREFS_PYTHON or /usr/bin/python3. */
const char *us_python(void);
/* Run `script` with us_python(); argv[1..] = args (NULL-terminated). Returns the exit status (or -1). */
int us_run_python(const char *script, const char *const *args);
/* 1 if us_python() can import torch (cached). */
int us_have_torch(void);


/* config.json (parsed) of a model description as the view writes it, without any overlay;
 * fails the test when it cannot be built. Free with cJSON_Delete. */
struct cJSON;
struct mf_model_s;
struct cJSON *us_config_of(const struct mf_model_s *m);

/* A minimal STORED-style zip writer for hand-made archives (CRCs are left 0).
 * method is written as given (use 8 to fake a compressed entry). zip64_extra puts sizes and
 * the local offset into a central-directory ZIP64 extra field; zip64_eocd adds the ZIP64
 * end record + locator (as torch.save always does). */
typedef struct {
    const char *name;
    const void *data;
    size_t len;
    uint16_t method;
    int zip64_extra;
} us_zip_item;
int us_write_zip(const char *path, const us_zip_item *items, size_t n, int zip64_eocd);

/* An independent reference reader: the elements of a strided tensor view, one pread each,
 * in row-major order, into a malloc'ed buffer. NULL if an element lies outside the storage
 * record or a read fails. */
#include "mcorefs/torchfile.h"
uint8_t *us_gather_strided(int fd, const mf_tensor *t, size_t *len);

/* A pickle written by hand, opcode by opcode (grows as needed; free(p.b) when done). */
typedef struct {
    uint8_t *b;
    size_t n, cap;
} us_pickle;
void us_pk_raw(us_pickle *p, const void *d, size_t n);
void us_pk_ops(us_pickle *p, const char *s);   /* opcodes and their text arguments, as given */
void us_pk_str(us_pickle *p, const char *s);   /* BINUNICODE */
void us_pk_long(us_pickle *p, int64_t v);      /* LONG1 with 8 bytes */

#endif
