// SentenceKV debugging and benchmarks: the staged-row check (LLAMA_SKV_DEBUG=2) and llama_skv_debug_fill.

#include "llama-skv-cache.h"

#include "llama-kv-cache.h"
#include "llama-batch.h"

#include <cstring>

// env LLAMA_SKV_DEBUG=2: check every live staged row against the host cache and the order of positions
void llama_skv_cache::verify(int32_t p, int32_t n_list) {
    std::vector<char> kb(k_row), vb(v_row);
    int32_t n_bad = 0;
    for (size_t li = 0; li < layers.size(); ++li) {
        const auto & l = layers[li];
        for (int32_t h = 0; h < n_head_kv && !dense_layer(li); ++h) {
            const auto & sp = l.slot_pos[h];
            for (int32_t s = 0; s < n_list; ++s) {
                const int32_t q = sp[s];
                const int32_t c = cell_of(q);
                bool ok = c >= 0 && (n_list != p || s == 0 || sp[s - 1] < q) && q < p;
                if (ok) {
                    ggml_backend_tensor_get(l.stage_k, kb.data(), (size_t) s * l.stage_k->nb[1] + h * k_row, k_row);
                    ggml_backend_tensor_get(l.stage_v, vb.data(), (size_t) s * l.stage_v->nb[1] + h * v_row, v_row);
                    ok = memcmp(kb.data(), (const char *) l.k->data + (size_t) c * l.k->nb[1] + h * k_row, k_row) == 0 &&
                         memcmp(vb.data(), (const char *) l.v->data + (size_t) c * l.v->nb[1] + h * v_row, v_row) == 0;
                }
                if (!ok && n_bad++ < 8) {
                    LLAMA_LOG_WARN("skv verify: layer %d head %d slot %d pos %d cell %d wrong\n", l.il, h, s, q, c);
                }
            }
        }
    }
    LLAMA_LOG_WARN("skv verify: step %d: %d rows attended, %d wrong\n", p, n_list + 1, n_bad);
}

// fill rows [cells] of a F16/F32 cache tensor (one stream) with uniform values in [-1, 1)
static void skv_debug_fill_rows(ggml_tensor * t, const std::vector<uint32_t> & cells, uint64_t & state) {
    GGML_ASSERT(t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_F32);
    const int64_t n_per_row = t->ne[0];
    const size_t  row_bytes = t->nb[1];
    GGML_ASSERT(row_bytes == ggml_row_size(t->type, n_per_row));
    const size_t chunk = 256; // rows per upload
    std::vector<float>   f(n_per_row * chunk);
    std::vector<uint8_t> buf(row_bytes * chunk);
    for (size_t i = 0; i < cells.size(); ) {
        // a run of consecutive cells goes in one call
        size_t n = 1;
        while (i + n < cells.size() && n < chunk && cells[i + n] == cells[i] + n) {
            n++;
        }
        for (size_t j = 0; j < n * (size_t) n_per_row; ++j) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17; // xorshift64
            f[j] = (float) ((state >> 40) & 0xFFFFFF) / (float) (1 << 23) - 1.0f;
        }
        if (t->type == GGML_TYPE_F16) {
            ggml_fp32_to_fp16_row(f.data(), (ggml_fp16_t *) buf.data(), (int64_t) n * n_per_row);
        } else {
            memcpy(buf.data(), f.data(), n * row_bytes);
        }
        ggml_backend_tensor_set(t, buf.data(), (size_t) cells[i] * row_bytes, n * row_bytes);
        i += n;
    }
}

int32_t llama_skv_debug_fill(llama_context * ctx, int32_t n_tokens, uint32_t seed) {
    if (!ctx || n_tokens <= 0) {
        return LLAMA_SKV_ERR_INVALID;
    }
    llama_memory_t mem = llama_get_memory(ctx);
    auto * kv = dynamic_cast<llama_kv_cache *>(mem);
    if (!kv) {
        LLAMA_LOG_ERROR("%s: the debug fill needs a plain KV cache (this model's memory is another kind)\n", __func__);
        return LLAMA_SKV_ERR_INVALID;
    }
    if (llama_memory_seq_pos_max(mem, 0) >= 0 || kv->get_n_stream() != 1 || (uint32_t) n_tokens > kv->get_size()) {
        LLAMA_LOG_ERROR("%s: needs an empty single-stream cache of at least %d cells\n", __func__, n_tokens);
        return LLAMA_SKV_ERR_INVALID;
    }

    // the cells, as a prefill of positions [0, n_tokens) in sequence 0 would leave them
    llama_batch_allocr balloc(1);
    llama_ubatch ub = balloc.ubatch_reserve(n_tokens, 1);
    llama_seq_id seq0 = 0;
    for (int32_t i = 0; i < n_tokens; ++i) {
        ub.token[i]    = 0;
        ub.pos[i]      = i;
        ub.n_seq_id[i] = 1;
        ub.seq_id[i]   = &seq0;
        ub.output[i]   = 0;
    }
    const auto sinfo = kv->find_slot(ub, true);
    if (sinfo.empty()) {
        return LLAMA_SKV_ERR_INVALID;
    }
    kv->apply_ubatch(sinfo, ub);

    // random K/V rows (the V storage is reached through a view: there is no accessor for it)
    const std::vector<uint32_t> layer_ids = kv->get_layer_ids();
    ggml_init_params ip = { ggml_tensor_overhead() * (layer_ids.size() + 1), nullptr, true }; // one view per layer
    ggml_context * c0 = ggml_init(ip);
    uint64_t state = 0x9E3779B97F4A7C15ull ^ ((uint64_t) seed << 1) ^ 1;
    for (uint32_t il : layer_ids) {
        ggml_tensor * k = kv->get_k_storage((int32_t) il);
        ggml_tensor * v = kv->get_v(c0, (int32_t) il, kv->get_n_kv(sinfo), sinfo);
        v = v->view_src ? v->view_src : v;
        if (v->nb[1] != ggml_row_size(v->type, v->ne[0])) {
            ggml_free(c0);
            LLAMA_LOG_ERROR("%s: transposed V (flash attention off) is not supported\n", __func__);
            return LLAMA_SKV_ERR_INVALID;
        }
        skv_debug_fill_rows(k, sinfo.idxs[0], state);
        skv_debug_fill_rows(v, sinfo.idxs[0], state);
    }
    ggml_free(c0);
    return n_tokens;
}
