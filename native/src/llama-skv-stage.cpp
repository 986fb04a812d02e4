// SentenceKV staging: the fixed-size K/V rows a staged step attends (host memcpy, or a host shadow uploaded in
// one copy per step on a device), and their allocation (budget padded to 256).

#include "llama-skv-cache.h"

#include <algorithm>
#include <cstring>
#include <limits>

static inline void skv_prefetch(const void * p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p);
#else
    (void) p;
#endif
}

// head h's K/V row of cell c in the host cache
static const char * skv_row(const ggml_tensor * t, int32_t c, int32_t h, size_t row) {
    return (const char *) t->data + (size_t) c * t->nb[1] + (size_t) h * row;
}

// the K and V rows of head h of cell c into staging slot `slot` (host staging, or the host shadow of device staging)
void llama_skv_cache::copy_row(skv_layer & l, int32_t h, int32_t slot, int32_t c, int64_t & n_rows) {
    const char * ks = skv_row(l.k, c, h, k_row);
    const char * vs = skv_row(l.v, c, h, v_row);
    const size_t ko = (size_t) slot * l.stage_k->nb[1] + (size_t) h * k_row;
    const size_t vo = (size_t) slot * l.stage_v->nb[1] + (size_t) h * v_row;
    if (!on_device) {
        memcpy((char *) l.stage_k->data + ko, ks, k_row);
        memcpy((char *) l.stage_v->data + vo, vs, v_row);
    } else {
        // device staging: rows gather in a host shadow; the dirty slot range goes up in one copy (flush)
        memcpy(l.shadow_k.data() + ko, ks, k_row);
        memcpy(l.shadow_v.data() + vo, vs, v_row);
        l.dirty0 = std::min(l.dirty0, slot);
        l.dirty1 = std::max(l.dirty1, slot + 1);
    }
    n_rows++;
}

void llama_skv_cache::write_row(skv_layer & l, int32_t h, int32_t slot, int32_t pos, int64_t & n_rows) {
    const int32_t c = cell_in_step(pos);
    if (c < 0) {
        LLAMA_LOG_ERROR("%s: position %d is not in the cache\n", __func__, pos);
        return;
    }
    copy_row(l, h, slot, c, n_rows);
}

// the rows of scattered positions: their sources are prefetched a few rows ahead (the host cache is far larger
// than the CPU caches, and one row of one head is two cache lines); each position's cell is looked up once, when it
// is prefetched
void llama_skv_cache::write_rows(skv_layer & l, int32_t h, const std::vector<skv_copy> & copies, int64_t & n_rows) {
    constexpr size_t ahead = 16; // a power of two: the ring of looked-up cells
    int32_t cells_ahead[ahead];
    auto look = [&](size_t j) {
        const int32_t c = cell_in_step(copies[j].pos);
        cells_ahead[j % ahead] = c;
        if (c >= 0) {
            const char * ks = skv_row(l.k, c, h, k_row);
            const char * vs = skv_row(l.v, c, h, v_row);
            for (size_t o = 0; o < k_row; o += 64) {
                skv_prefetch(ks + o);
            }
            for (size_t o = 0; o < v_row; o += 64) {
                skv_prefetch(vs + o);
            }
        }
    };
    for (size_t j = 0; j < std::min(ahead, copies.size()); ++j) {
        look(j);
    }
    for (size_t i = 0; i < copies.size(); ++i) {
        const int32_t c = cells_ahead[i % ahead];
        if (i + ahead < copies.size()) {
            look(i + ahead); // after reading slot i % ahead: the ring reuses it
        }
        if (c < 0) {
            LLAMA_LOG_ERROR("%s: position %d is not in the cache\n", __func__, copies[i].pos);
            continue;
        }
        copy_row(l, h, copies[i].slot, c, n_rows);
    }
}

void llama_skv_cache::flush_staging() {
    if (!on_device) {
        return;
    }
    for (auto & l : layers) {
        if (l.dirty1 > l.dirty0) {
            const size_t k0 = (size_t) l.dirty0 * l.stage_k->nb[1];
            const size_t v0 = (size_t) l.dirty0 * l.stage_v->nb[1];
            ggml_backend_tensor_set(l.stage_k, l.shadow_k.data() + k0, k0, (size_t) (l.dirty1 - l.dirty0) * l.stage_k->nb[1]);
            ggml_backend_tensor_set(l.stage_v, l.shadow_v.data() + v0, v0, (size_t) (l.dirty1 - l.dirty0) * l.stage_v->nb[1]);
        }
        l.dirty0 = std::numeric_limits<int32_t>::max();
        l.dirty1 = 0;
    }
}

void llama_skv_cache::forget_staging() {
    for (auto & l : layers) {
        for (auto & sp : l.slot_pos) {
            std::fill(sp.begin(), sp.end(), -1);
        }
    }
}

bool llama_skv_cache::alloc_stage() {
    const int32_t tau = budget_eff();
    // room for a sparse prefill chunk's own tokens when one can happen (a context past the trained length)
    const bool chunks = params.remap_positions != LLAMA_SKV_REMAP_OFF && kv_size > (int32_t) hparams.n_ctx_train;
    const int32_t s_new = std::min(skv_pad(tau + (chunks ? SKV_CHUNK_MAX : 0)), skv_pad(kv_size));
    if (s_new == s_max && buf_stage) {
        return true;
    }
    ggml_init_params ip = {
        /*.mem_size   =*/ size_t(2*layers.size() + 1)*ggml_tensor_overhead(),
        /*.mem_buffer =*/ NULL,
        /*.no_alloc   =*/ true,
    };
    ggml_context_ptr ctx(ggml_init(ip));
    if (!ctx) {
        return false;
    }
    std::vector<std::pair<ggml_tensor *, ggml_tensor *>> ts;
    for (auto & l : layers) {
        ggml_tensor * sk = ggml_new_tensor_2d(ctx.get(), type_k, (int64_t) n_head_kv*head_dim,   s_new);
        ggml_tensor * sv = ggml_new_tensor_2d(ctx.get(), type_v, (int64_t) n_head_kv*head_dim_v, s_new);
        ggml_format_name(sk, "skv_stage_k_l%d", l.il);
        ggml_format_name(sv, "skv_stage_v_l%d", l.il);
        ts.push_back({sk, sv});
    }
    ggml_backend_buffer_ptr buf(ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), buft));
    if (!buf) {
        LLAMA_LOG_ERROR("%s: failed to allocate the SentenceKV staging buffer\n", __func__);
        return false;
    }
    ggml_backend_buffer_clear(buf.get(), 0);
    for (size_t i = 0; i < layers.size(); ++i) {
        layers[i].stage_k = ts[i].first;
        layers[i].stage_v = ts[i].second;
        for (auto & sp : layers[i].slot_pos) {
            sp.assign(s_new, -1);
        }
        if (on_device) {
            layers[i].shadow_k.assign(ggml_nbytes(ts[i].first), 0);
            layers[i].shadow_v.assign(ggml_nbytes(ts[i].second), 0);
        }
    }
    ctx_stage = std::move(ctx);
    buf_stage = std::move(buf);
    s_max     = s_new;
    gen++;
    return true;
}
