#pragma once

// Internal hooks of the SentenceKV cache (see include/llama-skv.h for the public C API).
// Upstream files call only the functions declared here; the logic lives in the llama-skv-*.cpp files.

#include "llama-skv.h"

#include "llama.h"
#include "llama-hparams.h"

#include <memory>
#include <vector>

struct ggml_tensor;
struct llama_ubatch;
struct llama_model;
struct llm_graph_context;
class  llm_graph_result;
class  llama_kv_cache;
class  llama_kv_cache_context;
class  llama_memory_i;

struct llama_skv_cache;

struct llama_skv_layer_src {
    int32_t       il; // model layer id
    ggml_tensor * k;  // host K storage [n_embd_k_gqa, kv_size]
    ggml_tensor * v;  // host V storage [n_embd_v_gqa, kv_size] (not transposed)
};

// Called by the llama_kv_cache constructor before it places its tensors. True if this cache takes the pending
// SentenceKV request (or LLAMA_SKV=1): only a cache without SWA does. The request is consumed.
bool llama_skv_claim(llama_swa_type swa_type);

// Called at the end of the llama_kv_cache constructor of a cache that claimed the request. offload: whether the
// cache would have been on the layers' devices (the vectors and staging go there). Returns nullptr (logged) if the
// cache cannot host SentenceKV (transposed V, quantized K/V, several streams).
std::shared_ptr<llama_skv_cache> llama_skv_attach(
        const llama_model & model,
      const llama_hparams & hparams,
     const llama_kv_cache & kv,
        const std::vector<llama_skv_layer_src> & layers,
                 uint32_t   kv_size,
                 uint32_t   n_stream,
                     bool   offload,
                     bool   v_trans);

enum llama_skv_change {
    LLAMA_SKV_CHANGE_CLEAR = 0, // every cell emptied
    LLAMA_SKV_CHANGE_RM    = 1, // positions [p0, p1) removed
    LLAMA_SKV_CHANGE_SHIFT = 2, // positions [p0, p1) moved by delta (K re-roped by the next update)
    LLAMA_SKV_CHANGE_READ  = 3, // state restored from a blob
};

void llama_skv_on_change(llama_skv_cache * skv, llama_skv_change kind, int32_t p0, int32_t p1, int32_t delta);

// Graph hook, called by build_attn for a layer of a cache with SentenceKV after K/V were stored. In the staged
// decode regime it replaces *k, *v and *kq_mask by the staging views and the staging mask; otherwise it only adds
// the outputs the selection needs. Returns true if it replaced them.
bool llama_skv_build_attn(
        const llm_graph_context & g,
   const llama_kv_cache_context * mctx,
                   ggml_tensor * q_cur,
                   ggml_tensor * k_cur,
                   ggml_tensor * v_cur,
                         float   kq_scale,
                           int   il,
                  ggml_tensor ** k,
                  ggml_tensor ** v,
                  ggml_tensor ** kq_mask);

// Called by llama_context after a ubatch graph was computed successfully.
void llama_skv_after_compute(llama_memory_i * mem, llm_graph_result * res, const llama_ubatch & ubatch);
