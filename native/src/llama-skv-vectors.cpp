// SentenceKV semantic vectors: one per entry of the active index, per SKV layer and KV head (the mean of the
// entry's post-RoPE keys), in a device table sized by the index; host scoring for dense steps and seeds.

#include "llama-skv-cache.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

// an upper bound on the entries of either index after the prepare() of a decode step at position p
int32_t llama_skv_cache::entries_bound(int32_t p) const {
    return std::min(idx.entries_bound(p, params.max_sentence_len, params.policy == LLAMA_SKV_POLICY_CHUNK), sent_max);
}

// the vector table must hold what the step at p may close before its graph is built (its graph reads it)
bool llama_skv_cache::vec_fits_step(int32_t p) const {
    return entries_bound(p) <= sent_cap;
}

void llama_skv_cache::reserve_for_step(int32_t p) {
    if (!vec_fits_step(p)) {
        reserve_vec(entries_bound(p));
    }
}

// grow the vector table to hold n entries (padded; by at least an eighth, so growth is amortised): new device
// tensors, the vectors uploaded again from the host mirror, the scores re-laid out. Only between graphs: a
// built graph keeps the old tensors (gen changes, so it is not reused).
void llama_skv_cache::reserve_vec(int32_t n) {
    n = std::min(n, sent_max);
    if (n <= sent_cap) {
        return;
    }
    GGML_ASSERT(!in_prepare && "the SentenceKV vector table cannot grow inside a step");
    const int32_t cap = std::min(sent_max, skv_pad(std::max(n, sent_cap + sent_cap / 8)));
    const int32_t n_embd = n_head_kv * head_dim;
    ggml_init_params ip = {
        /*.mem_size   =*/ size_t(layers.size() + 1)*ggml_tensor_overhead(),
        /*.mem_buffer =*/ NULL,
        /*.no_alloc   =*/ true,
    };
    ggml_context_ptr ctx(ggml_init(ip));
    if (!ctx) {
        throw std::runtime_error("SentenceKV: cannot grow the vector table (no context)");
    }
    std::vector<ggml_tensor *> ts;
    for (auto & l : layers) {
        ggml_tensor * t = ggml_new_tensor_2d(ctx.get(), type_vec, n_embd, cap);
        ggml_format_name(t, "skv_vec_l%d", l.il);
        ts.push_back(t);
    }
    ggml_backend_buffer_ptr buf(ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), buft));
    if (!buf) {
        throw std::runtime_error("SentenceKV: cannot grow the vector table (out of device memory)");
    }
    ggml_backend_buffer_clear(buf.get(), 0);
    std::vector<ggml_fp16_t> h;
    for (size_t li = 0; li < layers.size(); ++li) {
        auto & l = layers[li];
        l.vec_host.resize((size_t) cap * n_embd, 0.0f);
        if (n_vec > 0) {
            h.resize((size_t) n_vec * n_embd);
            ggml_fp32_to_fp16_row(l.vec_host.data(), h.data(), (int64_t) n_vec * n_embd); // exact: F16 values
            ggml_backend_tensor_set(ts[li], h.data(), 0, h.size() * sizeof(ggml_fp16_t));
        }
        std::vector<float> acc((size_t) n_head_kv * cap, 0.0f);
        for (int32_t hh = 0; hh < n_head_kv; ++hh) {
            std::copy_n(l.acc.data() + (size_t) hh * sent_cap, sent_cap, acc.data() + (size_t) hh * cap);
        }
        l.acc = std::move(acc);
        l.vec = ts[li];
    }
    ctx_vec  = std::move(ctx);
    buf_vec  = std::move(buf);
    sent_cap = cap;
    idx.cap  = cap;
    gen++;
}

void llama_skv_cache::compute_vector(skv_layer & l, int32_t idx, skv_span s) {
    const int32_t n_embd = n_head_kv * head_dim;
    std::vector<float> sum(n_embd, 0.0f);
    std::vector<float> row(n_embd);
    int32_t n = 0;
    for (int32_t p = s.p0; p < s.p1; ++p) {
        const int32_t c = cell_of(p);
        if (c < 0) {
            continue;
        }
        const char * src = (const char *) l.k->data + (size_t) c * l.k->nb[1];
        if (type_k == GGML_TYPE_F16) {
            ggml_fp16_to_fp32_row((const ggml_fp16_t *) src, row.data(), n_embd);
        } else {
            memcpy(row.data(), src, n_embd * sizeof(float));
        }
        for (int32_t i = 0; i < n_embd; ++i) {
            sum[i] += row[i];
        }
        n++;
    }
    const float inv = n > 0 ? 1.0f / n : 0.0f;
    std::vector<ggml_fp16_t> h(n_embd);
    for (int32_t i = 0; i < n_embd; ++i) {
        h[i] = ggml_fp32_to_fp16(sum[i] * inv);
        l.vec_host[(size_t) idx * n_embd + i] = ggml_fp16_to_fp32(h[i]);
    }
    ggml_backend_tensor_set(l.vec, h.data(), (size_t) idx * l.vec->nb[1], n_embd * sizeof(ggml_fp16_t));
}

void llama_skv_cache::update_vectors() {
    const auto & tab = idx.active();
    if (vec_dirty) {
        n_vec     = 0;
        vec_dirty = false;
    }
    for (int32_t i = n_vec; i < (int32_t) tab.size(); ++i) {
        for (auto & l : layers) {
            compute_vector(l, i, tab[i]);
        }
    }
    n_vec = (int32_t) tab.size();
}

void llama_skv_cache::score_host(const skv_layer & l, const float * q, float scale, std::vector<float> & out) const {
    // a KV head's score sums its query group's: sum_j (q_j . v) = (sum_j q_j) . v (as the graph scores)
    const int32_t n_embd = n_head_kv * head_dim;
    const int32_t n_gqa  = n_head / n_head_kv;
    out.assign((size_t) n_head_kv * sent_cap, 0.0f);
    std::vector<float> qs(head_dim);
    for (int32_t h = 0; h < n_head_kv; ++h) {
        std::fill(qs.begin(), qs.end(), 0.0f);
        for (int32_t g = 0; g < n_gqa; ++g) {
            const float * qj = q + (size_t) (h * n_gqa + g) * head_dim;
            for (int32_t t = 0; t < head_dim; ++t) {
                qs[t] += qj[t];
            }
        }
        for (int32_t i = 0; i < n_vec; ++i) {
            const float * vi = l.vec_host.data() + (size_t) i * n_embd + (size_t) h * head_dim;
            float d = 0.0f;
            for (int32_t t = 0; t < head_dim; ++t) {
                d += qs[t] * vi[t];
            }
            out[(size_t) h * sent_cap + i] = d * scale;
        }
    }
}
