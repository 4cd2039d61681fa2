/* libFuzzer harness: arbitrary bytes as the model description of a save without Megatron's args —
 * an HF config.json given with -o hf_config (core/hf_describe*.c) or a NeMo 2.0 context/model.yaml
 * (core/nemo_context.c, a small YAML reader). The first byte picks the parser and the stored
 * embedding's row count; the rest is the file. An accepted description is freed; nothing may
 * crash, hang or leak. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf_describe.h"
#include "mcorefs/error.h"
#include "mcorefs/model.h"
#include "mcorefs/pickle.h"
#include "nemo_context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/mcorefs-fuzz-describe-%d", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        abort();
    for (size_t off = 1; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    close(fd);
    int yaml = data[0] & 1;
    int64_t rows = (int64_t)(data[0] >> 1) * 64;   /* 0 (unknown) .. 8128 */
    mf_model m;
    mf_pickle *pk = NULL;
    const mf_pv *args = NULL;
    mf_error_clear();
    int rc = yaml ? mf_model_from_nemo_yaml(&m, &pk, &args, path, NULL, rows, "fuzz/weights/.metadata")
                  : mf_model_from_hf_config(&m, &pk, &args, path, NULL, rows, "fuzz/.metadata");
    if (rc == MF_OK)
        mf_model_free(&m);
    mf_pickle_free(pk);
    return 0;
}
