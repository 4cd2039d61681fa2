/* libFuzzer harness: arbitrary bytes through the torchfile reader (see fuzz_targets.h). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fz_torchfile(data, size);
    return 0;
}
