/* libFuzzer harness: a rank file's bytes through checkpoint open, mapping and reads. */
#include "fuzz_checkpoint_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fz_checkpoint(data, size);
    return 0;
}
