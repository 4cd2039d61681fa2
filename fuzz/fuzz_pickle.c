/* libFuzzer harness: arbitrary bytes through the pickle reader (see fuzz_targets.h). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fz_pickle(data, size);
    return 0;
}
