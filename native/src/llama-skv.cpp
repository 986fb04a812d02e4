#include "llama-skv.h"

#define LLAMA_SKV_VERSION "0.1.0"

const char * llama_skv_version(void) {
    return "skv " LLAMA_SKV_VERSION;
}
