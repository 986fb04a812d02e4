// The flat C API of include/llama-skv.h: thin wrappers that find a context's cache and check arguments.

#include "llama-skv-cache.h"

#include "llama-context.h"
#include "llama-kv-cache.h"
#include "llama-kv-cache-iswa.h"
#include "llama-model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unistd.h>

//
// public API
//

llama_skv_cache * skv_of_ctx(llama_context * ctx) {
    if (!ctx) {
        return nullptr;
    }
    llama_memory_i * mem = llama_get_memory(ctx);
    if (!mem) {
        return nullptr;
    }
    if (auto * iswa = dynamic_cast<llama_kv_cache_iswa *>(mem)) {
        return iswa->get_base()->skv.get();
    }
    if (auto * kv = dynamic_cast<llama_kv_cache *>(mem)) {
        return kv->skv.get();
    }
    return nullptr;
}

const char * llama_skv_version(void) {
    return "skv " LLAMA_SKV_VERSION;
}

llama_skv_params llama_skv_default_params(void) {
    return skv_default_params();
}

int32_t llama_skv_enabled(llama_context * ctx) {
    return skv_of_ctx(ctx) ? 1 : 0;
}

int32_t llama_skv_set_params(llama_context * ctx, const llama_skv_params * params) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    if (!params) {
        return LLAMA_SKV_ERR_INVALID;
    }
    try {
        skv->set_rope(ctx->get_cparams());
        return skv->set_params(*params) ? 0 : LLAMA_SKV_ERR_INVALID;
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what());
        return LLAMA_SKV_ERR_INTERNAL;
    }
}

int32_t llama_skv_get_params(llama_context * ctx, llama_skv_params * out) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    if (!out) {
        return LLAMA_SKV_ERR_INVALID;
    }
    *out = skv->params;
    return 0;
}

int32_t llama_skv_add_sentence_boundaries(llama_context * ctx, const int32_t * ends, int32_t n) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    if (n < 0 || (n > 0 && !ends)) {
        return LLAMA_SKV_ERR_INVALID;
    }
    int32_t last = skv->idx.ends.empty() ? 0 : skv->idx.ends.back();
    for (int32_t i = 0; i < n; ++i) {
        if (ends[i] <= last || ends[i] > skv->kv_size) {
            return LLAMA_SKV_ERR_INVALID;
        }
        last = ends[i];
    }
    try {
        skv->idx.ends.insert(skv->idx.ends.end(), ends, ends + n);
        skv->set_rope(ctx->get_cparams());
        if (skv->close_ready(skv->n_cached)) {
            // the query sentence closed: the next one accumulates from zero
            skv->reset_query();
        }
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what());
        return LLAMA_SKV_ERR_INTERNAL;
    }
    return n;
}

int32_t llama_skv_get_sentences(llama_context * ctx, int32_t * spans, int32_t n_max) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    const auto & tab = skv->idx.sents;
    if (spans) {
        for (int32_t i = 0; i < std::min<int32_t>(n_max, (int32_t) tab.size()); ++i) {
            spans[2*i + 0] = tab[i].p0;
            spans[2*i + 1] = tab[i].p1;
        }
    }
    return (int32_t) tab.size();
}

int32_t llama_skv_close_cached(llama_context * ctx) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    const int32_t n = (int32_t) llama_memory_seq_pos_max(llama_get_memory(ctx), 0) + 1;
    skv->n_cached = std::max(skv->n_cached, n);
    try {
        skv->set_rope(ctx->get_cparams());
        if (skv->close_ready(skv->n_cached)) {
            skv->reset_query();
        }
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what());
        return LLAMA_SKV_ERR_INTERNAL;
    }
    return (int32_t) skv->idx.active().size();
}

int32_t llama_skv_get_seed(llama_context * ctx, float * out, int32_t n_max) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    if (!skv->has_seed) {
        return 0;
    }
    int32_t n = 0;
    for (const auto & l : skv->layers) {
        for (float v : l.seed_q) {
            if (out && n < n_max) {
                out[n] = v;
            }
            n++;
        }
    }
    return n;
}

int32_t llama_skv_set_seed(llama_context * ctx, const float * q, int32_t n) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    const int64_t per_layer = (int64_t) skv->n_head * skv->head_dim;
    if (!q || n != per_layer * (int64_t) skv->layers.size()) {
        return LLAMA_SKV_ERR_INVALID;
    }
    for (size_t li = 0; li < skv->layers.size(); ++li) {
        auto & l = skv->layers[li];
        l.seed_q.assign(q + li * per_layer, q + (li + 1) * per_layer);
    }
    skv->reset_query(); // as after a prefill: the next step selects from the seed
    skv->has_seed = true;
    return 0;
}

int32_t llama_skv_arch_supported(const char * name) {
    if (!name) {
        return 0;
    }
    return llm_arch_from_string(name) != LLM_ARCH_UNKNOWN ? 1 : 0;
}

int32_t llama_skv_get_layers(llama_context * ctx, int32_t * ids, int32_t n_max) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    for (int32_t i = 0; ids && i < std::min<int32_t>(n_max, (int32_t) skv->layers.size()); ++i) {
        ids[i] = skv->layers[i].il;
    }
    return (int32_t) skv->layers.size();
}

int32_t llama_skv_get_selection(llama_context * ctx, int32_t skv_il, int32_t head,
                                int32_t * ids, float * scores, int32_t * n_tokens, int32_t n_max) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    if (skv_il < 0 || skv_il >= (int32_t) skv->layers.size() || head < 0 || head >= skv->n_head_kv || n_max < 0) {
        return LLAMA_SKV_ERR_INVALID;
    }
    const auto & sel = skv->layers[skv_il].sel[head];
    for (int32_t i = 0; i < std::min<int32_t>(n_max, (int32_t) sel.size()); ++i) {
        if (ids)      { ids[i]      = sel[i].id;    }
        if (scores)   { scores[i]   = sel[i].score; }
        if (n_tokens) { n_tokens[i] = sel[i].n_tok; }
    }
    return (int32_t) sel.size();
}

int32_t llama_skv_get_selections(llama_context * ctx, int32_t * ids, int32_t n_max, int32_t * offsets,
                                 int32_t n_offsets) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    const int32_t n_sel = (int32_t) skv->layers.size() * skv->n_head_kv;
    if (n_max < 0 || (offsets && n_offsets < n_sel + 1)) {
        return LLAMA_SKV_ERR_INVALID;
    }
    int32_t n = 0;
    int32_t k = 0; // l * n_head_kv + h
    for (const auto & l : skv->layers) {
        for (int32_t h = 0; h < skv->n_head_kv; ++h, ++k) {
            if (offsets) {
                offsets[k] = n;
            }
            for (const auto & pk : l.sel[h]) {
                if (ids && n < n_max) {
                    ids[n] = pk.id;
                }
                n++;
            }
        }
    }
    if (offsets) {
        offsets[n_sel] = n;
    }
    return n;
}

int32_t llama_skv_get_stats(llama_context * ctx, llama_skv_stats * out) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    if (!out) {
        return LLAMA_SKV_ERR_INVALID;
    }
    llama_skv_stats s = skv->stats;
    s.host_kv_bytes      = skv->host_kv_bytes();
    s.device_vec_bytes   = skv->buf_vec   ? (int64_t) ggml_backend_buffer_get_size(skv->buf_vec.get())   : 0;
    s.device_stage_bytes = skv->buf_stage ? (int64_t) ggml_backend_buffer_get_size(skv->buf_stage.get()) : 0;
    int64_t full = 0;
    for (const auto & [buft, n] : llama_get_memory(ctx)->memory_breakdown()) {
        GGML_UNUSED(buft);
        full += (int64_t) n;
    }
    s.full_kv_bytes = full;
    s.s_max       = skv->s_max;
    s.n_sentences = (int32_t) skv->idx.active().size();
    s.n_layers    = (int32_t) skv->layers.size();
    s.n_head_kv   = skv->n_head_kv;
    s.head_dim    = skv->head_dim;
    s.sent_cap    = skv->sent_cap;
    s.on_device   = skv->on_device ? 1 : 0;
    s.score_distance = skv->score_dist();
    *out = s;
    return 0;
}

//
// fatal errors: one sentence and an exit code instead of abort()
//

static std::string skv_abort_before;
static std::string skv_abort_after;
static int32_t     skv_abort_code = 1;

static void skv_abort_exit(const char * message) {
    std::string m = message ? message : "";
    const size_t nl = m.find('\n');
    if (nl != std::string::npos) {
        m.resize(nl);
    }
    fprintf(stderr, "%s%s%s\n", skv_abort_before.c_str(), m.c_str(), skv_abort_after.c_str());
    fflush(stderr);
    _exit(skv_abort_code);
}

void llama_skv_exit_on_abort(const char * before, const char * after, int32_t code) {
    skv_abort_before = before ? before : "";
    skv_abort_after  = after ? after : "";
    skv_abort_code   = code;
    ggml_set_abort_callback(skv_abort_exit);
}
