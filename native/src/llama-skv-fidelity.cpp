// SentenceKV fidelity levers (native/README.md, "Fidelity levers"): scores kept per query head and turned into one
// score per KV head (max, or each query head's order merged rank by rank), and the oracle selection (benchmarks
// only) from the true attention of the step.

#include "llama-skv-cache.h"

#include <algorithm>
#include <cmath>
#include <numeric>

void llama_skv_cache::add_head_scores(skv_layer & l, const float * s, size_t stride, int32_t nv, float scale) {
    const size_t cap = (size_t) sent_cap;
    if (l.acc_q.size() != (size_t) n_head * cap) {
        l.acc_q.assign((size_t) n_head * cap, 0.0f);
    }
    for (int32_t j = 0; j < n_head; ++j) {
        const float * sj = s + (size_t) j * stride;
        float * a = l.acc_q.data() + (size_t) j * cap;
        for (int32_t i = 0; i < nv; ++i) {
            a[i] += sj[i] * scale + len_term(i, 1);
        }
    }
    derive_scores(l.acc_q.data(), derive_scratch);
    set_scores(l, derive_scratch);
}

// heads: [n_head][sent_cap]; out: [n_head_kv][sent_cap]. MAX: the group's largest score. HEADS: the entries in the
// order a round over the group's query heads takes them (each head's best, then each head's second, ...), as a
// descending score: -(rank * n_gqa + head) of the entry's earliest turn
void llama_skv_cache::derive_scores(const float * heads, std::vector<float> & out) {
    const size_t cap = (size_t) sent_cap;
    const int32_t n_gqa = n_head / n_head_kv;
    const int32_t n = n_vec;
    out.assign((size_t) n_head_kv * cap, 0.0f);
    std::vector<int32_t> ids;
    for (int32_t h = 0; h < n_head_kv; ++h) {
        float * o = out.data() + (size_t) h * cap;
        if (params.gqa_agg == LLAMA_SKV_GQA_MAX) {
            for (int32_t i = 0; i < n; ++i) {
                float m = -INFINITY;
                for (int32_t g = 0; g < n_gqa; ++g) {
                    m = std::max(m, heads[(size_t) (h * n_gqa + g) * cap + i]);
                }
                o[i] = m;
            }
            continue;
        }
        std::fill(o, o + n, -INFINITY);
        for (int32_t g = 0; g < n_gqa; ++g) {
            const float * s = heads + (size_t) (h * n_gqa + g) * cap;
            ids.resize(n);
            std::iota(ids.begin(), ids.end(), 0);
            std::sort(ids.begin(), ids.end(), [s](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
            for (int32_t r = 0; r < n; ++r) {
                const float key = -(float) ((int64_t) r * n_gqa + g); // exact below 2^24
                o[ids[r]] = std::max(o[ids[r]], key);
            }
        }
    }
}

void llama_skv_cache::set_scores(skv_layer & l, const std::vector<float> & src) {
    const size_t n = (size_t) n_head_kv * sent_cap;
    if (l.snap_from_acc) {
        // the choice reads acc: it keeps these scores as its snapshot
        std::swap(l.acc, l.snap);
        l.snap_from_acc = false;
        l.snap_stride   = sent_cap;
        l.acc.resize(n);
    }
    std::copy_n(src.begin(), n, l.acc.begin());
}

void llama_skv_cache::score_host_heads(const skv_layer & l, const float * q, float scale, std::vector<float> & out) const {
    const int32_t n_gqa = n_head / n_head_kv;
    out.assign((size_t) n_head * sent_cap, 0.0f);
    std::vector<float> qa(head_dim);
    for (int32_t j = 0; j < n_head; ++j) {
        const float * qj = q + (size_t) j * head_dim;
        for (int32_t t = 0; t < head_dim; ++t) {
            qa[t] = gauss_summary() ? qj[t] * qj[t] : std::fabs(qj[t]);
        }
        score_vectors(l, j / n_gqa, qj, qa.data(), scale, out.data() + (size_t) j * sent_cap);
    }
}

bool llama_skv_cache::oracle_ready(int32_t p) const {
    return params.oracle != LLAMA_SKV_ORACLE_OFF && oracle_pos == p && !layers.empty() &&
           layers.back().oracle_q.size() == (size_t) n_head * head_dim;
}

void llama_skv_cache::oracle_weights(const skv_layer & l, int32_t h, int32_t p, std::vector<float> & w) {
    const int32_t n_gqa = n_head / n_head_kv;
    const int32_t hd    = head_dim;
    w.assign(p, 0.0f);
    oracle_k.resize((size_t) p * hd);
    std::vector<int32_t> valid;
    valid.reserve(p);
    for (int32_t t = 0; t < p; ++t) {
        const int32_t c = cell_in_step(t);
        if (c < 0) {
            continue;
        }
        const char * src = (const char *) l.k->data + (size_t) c * l.k->nb[1] + (size_t) h * k_row;
        float * dst = oracle_k.data() + (size_t) t * hd;
        if (type_k == GGML_TYPE_F16) {
            ggml_fp16_to_fp32_row((const ggml_fp16_t *) src, dst, hd);
        } else {
            std::copy_n((const float *) src, hd, dst);
        }
        valid.push_back(t);
    }
    std::vector<float> z(valid.size());
    for (int32_t g = 0; g < n_gqa; ++g) {
        const float * q = l.oracle_q.data() + (size_t) (h * n_gqa + g) * hd;
        float m = -INFINITY;
        for (size_t i = 0; i < valid.size(); ++i) {
            const float * k = oracle_k.data() + (size_t) valid[i] * hd;
            float d = 0.0f;
            for (int32_t e = 0; e < hd; ++e) {
                d += q[e] * k[e];
            }
            z[i] = d;
            m = std::max(m, d);
        }
        double sum = 0.0;
        for (size_t i = 0; i < valid.size(); ++i) {
            z[i] = std::exp(z[i] - m);
            sum += z[i];
        }
        const float inv = sum > 0.0 ? (float) (1.0 / sum) : 0.0f;
        for (size_t i = 0; i < valid.size(); ++i) {
            w[valid[i]] += z[i] * inv;
        }
    }
}

void llama_skv_cache::oracle_select(int32_t p) {
    const auto & tab = idx.active();
    for (size_t li = 0; li < layers.size(); ++li) {
        auto & l = layers[li];
        if (dense_layer(li)) {
            continue;
        }
        derive_scratch.assign((size_t) n_head_kv * sent_cap, 0.0f);
        for (int32_t h = 0; h < n_head_kv; ++h) {
            oracle_weights(l, h, p, oracle_w);
            float * o = derive_scratch.data() + (size_t) h * sent_cap;
            for (int32_t i = 0; i < n_vec && i < (int32_t) tab.size(); ++i) {
                float m = 0.0f;
                for (int32_t t = tab[i].p0; t < std::min(tab[i].p1, p); ++t) {
                    m += oracle_w[t];
                }
                o[i] = m;
            }
        }
        select_from(l, derive_scratch);
    }
}

int32_t llama_skv_cache::oracle_tokens(skv_layer & l, int32_t h, int32_t p, int32_t lo, int32_t hi, int32_t room) {
    auto & want = want_scratch;
    auto & runs = run_scratch;
    oracle_weights(l, h, p, oracle_w);
    std::vector<int32_t> cand;
    for (int32_t t = lo; t < hi; ++t) {
        if (cell_in_step(t) >= 0) {
            cand.push_back(t);
        }
    }
    const auto & w = oracle_w;
    auto better = [&w](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
    if ((int32_t) cand.size() > room) {
        std::nth_element(cand.begin(), cand.begin() + room, cand.end(), better);
        cand.resize(room);
    }
    std::sort(cand.begin(), cand.end());
    // ascending runs of consecutive positions
    for (size_t i = 0; i < cand.size(); ++i) {
        if (i == 0 || cand[i] != cand[i - 1] + 1) {
            runs.push_back({(int32_t) want.size(), 0});
        }
        want.push_back(cand[i]);
        runs.back().n++;
    }
    // the reported selection: the entries the tokens belong to, by the attention mass taken from each
    const auto & tab = idx.active();
    auto & sel = l.sel[h];
    for (int32_t t : cand) {
        const auto it = std::upper_bound(tab.begin(), tab.end(), t, [](int32_t x, const skv_span & s) { return x < s.p1; });
        if (it == tab.end() || it->p0 > t) {
            continue; // the open entry
        }
        const int32_t id = (int32_t) (it - tab.begin());
        if (sel.empty() || sel.back().id != id) {
            sel.push_back({id, 0.0f, 0});
        }
        sel.back().score += w[t];
        sel.back().n_tok++;
    }
    std::stable_sort(sel.begin(), sel.end(), [](const skv_pick & a, const skv_pick & b) { return a.score > b.score; });
    return (int32_t) cand.size();
}

//
// the same-step selection (select_at STEP, STEP_SENTENCE)
//
// The lagged choice (prepare, before the graph) can only use the queries of the steps before; a copy out of prose
// needs the source's next tokens at the step that copies them (docs/BENCHMARKS.md: an exact choice from the step
// before keeps 57 % of the dense answers, from the step itself 76 %). Here each layer's choice is made inside the
// graph: an op after the layer's scores (q_p against every semantic vector) orders the entries by them and
// re-places the staging rows before the layer's attention reads them. The count of attended tokens is the one
// prepare() found (the budget is filled the same way from any order), so the mask stays. An op of the CPU backend:
// a build whose staging lives on another device keeps the lagged choice.

bool llama_skv_cache::select_now_for(int32_t p, int32_t m) const {
    if (params.select_at == LLAMA_SKV_SELECT_LAG || m != 1 || on_device || remap_for(p)) {
        return false;
    }
    if (params.oracle != LLAMA_SKV_ORACLE_OFF) {
        return false; // the oracle chooses
    }
    return params.policy == LLAMA_SKV_POLICY_SENTENCE || params.policy == LLAMA_SKV_POLICY_CHUNK;
}

void llama_skv_cache::select_now(int32_t li, const ggml_tensor * scores) {
    GGML_ASSERT(li >= 0 && li < (int32_t) layers.size() && now_p >= 0);
    auto & l = layers[li];
    const int32_t p  = now_p;
    const int32_t nv = std::min(now_scored, n_vec);
    const size_t cap = (size_t) sent_cap;
    const float * s  = (const float *) scores->data;
    const bool with_sentence = params.select_at == LLAMA_SKV_SELECT_STEP_SENTENCE;
    now_scores.assign((size_t) n_head_kv * cap, 0.0f);
    if (per_head_scores()) {
        now_heads.assign((size_t) n_head * cap, 0.0f);
        const bool acc_q_ok = with_sentence && l.acc_q.size() == (size_t) n_head * cap;
        for (int32_t j = 0; j < n_head; ++j) {
            const float * sj = s + (size_t) j * now_scored;
            float * o = now_heads.data() + (size_t) j * cap;
            for (int32_t i = 0; i < nv; ++i) {
                o[i] = (acc_q_ok ? l.acc_q[(size_t) j * cap + i] : 0.0f) + sj[i] * now_scale + len_term(i, 1);
            }
        }
        derive_scores(now_heads.data(), now_scores);
    } else {
        for (int32_t h = 0; h < n_head_kv; ++h) {
            const float * sh = s + (size_t) h * now_scored;
            const float * a  = l.acc.data() + (size_t) h * cap;
            float * o = now_scores.data() + (size_t) h * cap;
            const int32_t n_q = n_head / n_head_kv;
            for (int32_t i = 0; i < nv; ++i) {
                o[i] = (with_sentence ? a[i] : 0.0f) + sh[i] * now_scale + len_term(i, n_q);
            }
        }
    }
    select_from(l, now_scores);
    int64_t n_rows = 0;
    for (int32_t h = 0; h < n_head_kv; ++h) {
        attended_positions(l, h, p, true, now_list);
        if ((int32_t) now_list.size() != now_n_list) {
            // the mask prepare() wrote opens now_n_list slots: this head keeps the rows prepare() placed
            LLAMA_LOG_WARN("%s: layer %d head %d: %d tokens chosen, %d staged; kept the lagged rows\n", __func__,
                    l.il, h, (int32_t) now_list.size(), now_n_list);
            continue;
        }
        place_rows(l, h, p, 1, now_list, n_rows);
    }
    stats.rows_uploaded_last  += n_rows;
    stats.rows_uploaded_total += n_rows;
}
