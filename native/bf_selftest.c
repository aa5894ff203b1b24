/* Build-time check that the compiled CPU kernels run on this machine: a quantized 32-row
 * batch through every CPU buffer type (AMX tiles and repacked kernels included). A broken
 * build (e.g. GCC's dead-store elimination dropping AMX tile configs) fails here, at build
 * time, instead of on a user's first prompt. */
#include <stdio.h>

#include "bf_shim.h"

int main(void) {
    char report[4096];
    bf_log_set_level(4 /* GGML_LOG_LEVEL_ERROR */);
    int failures = bf_selftest_quantized(report, sizeof report);
    fputs(report, stdout);
    if (failures != 0) {
        fprintf(stderr,
                "botframework self-test: %d quantized kernel case(s) gave wrong results on this CPU.\n"
                "Rebuild without native CPU features, e.g. CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install .\n",
                failures);
        return 1;
    }
    printf("botframework self-test: quantized kernels OK\n");
    return 0;
}
