// SentenceKV semantic vectors: one per entry of the active index, per SKV layer and KV head (the mean of the
// entry's post-RoPE keys), in a device table sized by the index; host scoring for dense steps and seeds.

#include "llama-skv-cache.h"

#include "llama-model.h"

#include <algorithm>
#include <cmath>
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

// a layer's vector table, head-major: [head_dim, cap, n_head_kv], so that a KV head's vectors are contiguous and
// the scoring pass reads each head's rows in one sequential sweep
ggml_tensor * llama_skv_cache::new_vec_table(ggml_context * ctx, int32_t il, int32_t cap) const {
    ggml_tensor * t = ggml_new_tensor_3d(ctx, type_vec, vec_dim, cap, n_head_kv);
    ggml_format_name(t, "skv_vec_l%d", il);
    return t;
}

// entries [i0, i1) of the host mirror (F16 values held as F32: the conversion is exact) into the device table, one
// copy per KV head
void llama_skv_cache::upload_vectors(skv_layer & l, int32_t i0, int32_t i1) {
    if (i1 <= i0) {
        return;
    }
    const int32_t n_embd = n_head_kv * vec_dim;
    vec_scratch.resize((size_t) (i1 - i0) * vec_dim);
    for (int32_t h = 0; h < n_head_kv; ++h) {
        for (int32_t i = i0; i < i1; ++i) {
            ggml_fp32_to_fp16_row(l.vec_host.data() + (size_t) i * n_embd + (size_t) h * vec_dim,
                                  vec_scratch.data() + (size_t) (i - i0) * vec_dim, vec_dim);
        }
        ggml_backend_tensor_set(l.vec, vec_scratch.data(), (size_t) h * l.vec->nb[2] + (size_t) i0 * l.vec->nb[1],
                                vec_scratch.size() * sizeof(ggml_fp16_t));
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
    realloc_vec(std::min(sent_max, skv_pad(std::max(n, sent_cap + sent_cap / 8))));
}

void llama_skv_cache::realloc_vec(int32_t cap) {
    GGML_ASSERT(!in_prepare && cap >= sent_cap);
    const int32_t n_embd = n_head_kv * vec_dim;
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
        ts.push_back(new_vec_table(ctx.get(), l.il, cap));
    }
    ggml_backend_buffer_ptr buf(ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), buft));
    if (!buf) {
        throw std::runtime_error("SentenceKV: cannot grow the vector table (out of device memory)");
    }
    ggml_backend_buffer_clear(buf.get(), 0);
    for (size_t li = 0; li < layers.size(); ++li) {
        auto & l = layers[li];
        l.vec_host.resize((size_t) cap * n_embd, 0.0f);
        l.vec = ts[li];
        upload_vectors(l, 0, n_vec);
        if (cap == sent_cap) {
            continue;
        }
        std::vector<float> acc((size_t) n_head_kv * cap, 0.0f);
        for (int32_t hh = 0; hh < n_head_kv; ++hh) {
            std::copy_n(l.acc.data() + (size_t) hh * sent_cap, sent_cap, acc.data() + (size_t) hh * cap);
        }
        l.acc = std::move(acc);
        if (!l.acc_q.empty()) {
            std::vector<float> aq((size_t) n_head * cap, 0.0f);
            for (int32_t j = 0; j < n_head; ++j) {
                std::copy_n(l.acc_q.data() + (size_t) j * sent_cap, sent_cap, aq.data() + (size_t) j * cap);
            }
            l.acc_q = std::move(aq);
        }
    }
    ctx_vec  = std::move(ctx);
    buf_vec  = std::move(buf);
    sent_cap = cap;
    idx.cap  = cap;
    gen++;
}

void llama_skv_cache::set_vec_dim(int32_t d) {
    if (d == vec_dim) {
        return;
    }
    vec_dim = d;
    for (auto & l : layers) {
        l.vec_host.assign((size_t) sent_cap * n_head_kv * vec_dim, 0.0f);
    }
    n_vec = 0; // realloc_vec uploads nothing; update_vectors recomputes every entry in the new form
    if (!layers.empty()) {
        realloc_vec(sent_cap);
    }
    vec_dirty = true;
    reset_query(); // scores of the other form; the seed (queries) stays valid
    has_sel = false;
}

void llama_skv_cache::set_rope(const llama_cparams & cp) {
    bool plain = cp.yarn_ext_factor == 0.0f;
    for (auto & l : layers) {
        l.rope = hparams.has_rope(l.il) && hparams.rope_type != LLAMA_ROPE_TYPE_NONE;
        // MROPE turns the whole vector in NEOX order for one position, as K-shift does (skv_rotate_staged)
        l.rope_neox = hparams.rope_type != LLAMA_ROPE_TYPE_NORM;
        l.n_rot     = l.rope ? std::min<int32_t>((int32_t) hparams.n_rot(l.il), head_dim) : 0;
        plain = plain && model.get_rope_factors(cp, l.il) == nullptr;
        const double base  = model.get_rope_freq_base(cp, l.il);
        const double scale = model.get_rope_freq_scale(cp, l.il);
        l.rope_freq.resize(l.n_rot / 2);
        for (int32_t i = 0; i < l.n_rot / 2; ++i) {
            l.rope_freq[i] = scale * std::pow(base, -2.0 * i / l.n_rot);
        }
    }
    rope_known = true;
    rope_plain = plain;
}

void llama_skv_cache::unrope_row(const skv_layer & l, float * row, int32_t pos) const {
    const int32_t half = l.n_rot / 2;
    for (int32_t i = 0; i < half; ++i) {
        const double th = (double) pos * l.rope_freq[i]; // double: pos * freq reaches 10^5 radians
        const float  c  = (float) std::cos(th);
        const float  s  = (float) std::sin(th);
        for (int32_t h = 0; h < n_head_kv; ++h) {
            float * x = row + (size_t) h * head_dim;
            float & a = l.rope_neox ? x[i] : x[2*i];
            float & b = l.rope_neox ? x[i + half] : x[2*i + 1];
            const float a1 = a, b1 = b; // (a1, b1) = R(pos) (a, b): undo it
            a =  a1 * c + b1 * s;
            b = -a1 * s + b1 * c;
        }
    }
}

// an entry's vector into the host mirror: the mean of its tokens' keys as cached (post-RoPE), or, for content vectors
// (score_dist() > 0), of the keys turned back to position 0 (upload_vectors takes it to the device). With the bound
// summary, per KV head the centre (max + min) / 2 and half range (max - min) / 2 of each dimension over the keys.
void llama_skv_cache::compute_vector(skv_layer & l, int32_t idx, skv_span s) {
    const int32_t n_embd = n_head_kv * head_dim;
    const bool bound = bound_summary();
    const bool gauss = gauss_summary();
    std::vector<float> sum(n_embd, 0.0f);
    std::vector<float> sq(gauss ? n_embd : 0, 0.0f);
    std::vector<float> lo(bound ? n_embd : 0, INFINITY);
    std::vector<float> hi(bound ? n_embd : 0, -INFINITY);
    std::vector<float> row(n_embd);
    const bool unrope = vec_content && l.rope;
    // exclude_sink: the keys of an entry's tokens inside the sink are left out (unless it has no other)
    const int32_t p_first = params.exclude_sink && s.p1 > params.sink ? std::max(s.p0, params.sink) : s.p0;
    int32_t n = 0;
    for (int32_t p = p_first; p < s.p1; ++p) {
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
        if (unrope) {
            unrope_row(l, row.data(), p);
        }
        if (bound) {
            for (int32_t i = 0; i < n_embd; ++i) {
                lo[i] = std::min(lo[i], row[i]);
                hi[i] = std::max(hi[i], row[i]);
            }
        } else {
            for (int32_t i = 0; i < n_embd; ++i) {
                sum[i] += row[i];
            }
            for (int32_t i = 0; gauss && i < n_embd; ++i) {
                sq[i] += row[i] * row[i];
            }
        }
        n++;
    }
    // rounded to F16 as the device table holds it (upload_vectors)
    auto f16 = [](float x) { return ggml_fp16_to_fp32(ggml_fp32_to_fp16(x)); };
    float * out = l.vec_host.data() + (size_t) idx * n_head_kv * vec_dim;
    if (gauss) {
        if ((int32_t) ent_logn.size() <= idx) {
            ent_logn.resize((size_t) idx + 256, 0.0f);
        }
        ent_logn[idx] = std::log((float) std::max(n, 1));
        const float inv = n > 0 ? 1.0f / n : 0.0f;
        for (int32_t h = 0; h < n_head_kv; ++h) {
            for (int32_t t = 0; t < head_dim; ++t) {
                const size_t i = (size_t) h * head_dim + t;
                const float m = sum[i] * inv;
                out[(size_t) h * vec_dim + t]            = f16(m);
                out[(size_t) h * vec_dim + head_dim + t] = f16(std::max(0.0f, sq[i] * inv - m * m));
            }
        }
        return;
    }
    if (!bound) {
        const float inv = n > 0 ? 1.0f / n : 0.0f;
        for (int32_t i = 0; i < n_embd; ++i) {
            out[i] = f16(sum[i] * inv);
        }
        return;
    }
    for (int32_t h = 0; h < n_head_kv; ++h) {
        for (int32_t t = 0; t < head_dim; ++t) {
            const size_t i = (size_t) h * head_dim + t;
            const float c = n > 0 ? 0.5f * (hi[i] + lo[i]) : 0.0f;
            const float r = n > 0 ? 0.5f * (hi[i] - lo[i]) : 0.0f;
            out[(size_t) h * vec_dim + t]            = f16(c);
            out[(size_t) h * vec_dim + head_dim + t] = f16(r);
        }
    }
}

void llama_skv_cache::update_vectors() {
    const auto & tab = idx.active();
    const bool content = score_dist() > 0;
    if (content != vec_content) {
        // the scoring changed between real and fixed distances: every vector in the other form, fresh scores
        vec_content = content;
        vec_dirty   = true;
        reset_query();
        has_sel     = false;
        has_seed    = false;
    }
    if (vec_dirty) {
        n_vec     = 0;
        vec_dirty = false;
    }
    const int32_t n_new = (int32_t) tab.size();
    for (auto & l : layers) {
        for (int32_t i = n_vec; i < n_new; ++i) {
            compute_vector(l, i, tab[i]);
        }
        upload_vectors(l, n_vec, n_new);
    }
    n_vec = n_new;
}

// out[i] = scale * (q . vector i of KV head h) for every entry i < n_vec (bound: q . c_i + qa . r_i)
void llama_skv_cache::score_vectors(const skv_layer & l, int32_t h, const float * q, const float * qa, float scale,
                                    float * out, int32_t n_q) const {
    const int32_t n_embd = n_head_kv * vec_dim;
    const bool bound = bound_summary();
    const bool gauss = gauss_summary();
    for (int32_t i = 0; i < n_vec; ++i) {
        const float * vi = l.vec_host.data() + (size_t) i * n_embd + (size_t) h * vec_dim;
        float d = 0.0f;
        for (int32_t t = 0; t < head_dim; ++t) {
            d += q[t] * vi[t];
        }
        if (bound) {
            for (int32_t t = 0; t < head_dim; ++t) {
                d += qa[t] * vi[head_dim + t];
            }
        }
        if (gauss) {
            float v = 0.0f;
            for (int32_t t = 0; t < head_dim; ++t) {
                v += qa[t] * vi[head_dim + t];
            }
            out[i] = d * scale + 0.5f * scale * scale * v + len_term(i, n_q);
            continue;
        }
        out[i] = d * scale;
    }
}

void llama_skv_cache::score_host(const skv_layer & l, const float * q, float scale, std::vector<float> & out) const {
    // a KV head's score sums its query group's: sum_j (q_j . v) = (sum_j q_j) . v (as the graph scores); the
    // bound's half-range term sums the group's |q_j|
    const int32_t n_gqa  = n_head / n_head_kv;
    out.assign((size_t) n_head_kv * sent_cap, 0.0f);
    std::vector<float> qs(head_dim);
    std::vector<float> qa(head_dim);
    for (int32_t h = 0; h < n_head_kv; ++h) {
        std::fill(qs.begin(), qs.end(), 0.0f);
        std::fill(qa.begin(), qa.end(), 0.0f);
        for (int32_t g = 0; g < n_gqa; ++g) {
            const float * qj = q + (size_t) (h * n_gqa + g) * head_dim;
            for (int32_t t = 0; t < head_dim; ++t) {
                qs[t] += qj[t];
                qa[t] += gauss_summary() ? qj[t] * qj[t] : std::fabs(qj[t]);
            }
        }
        score_vectors(l, h, qs.data(), qa.data(), scale, out.data() + (size_t) h * sent_cap, n_gqa);
    }
}
