// SentenceKV: sentence-level semantic KV cache for llama.cpp (arXiv 2504.00970).
// Flat C API; every symbol is prefixed llama_skv_. See native/README.md.
#pragma once

#include "llama.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Version string of the SentenceKV native patch, e.g. "skv 0.1.0". Static storage; never NULL.
LLAMA_API const char * llama_skv_version(void);

#ifdef __cplusplus
}
#endif
