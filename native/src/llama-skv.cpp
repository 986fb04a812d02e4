// SentenceKV cache: sentence table, semantic vectors, selection and staging (see include/llama-skv.h).
//
// Timeline of one staged decode step at position p (one token):
//   set_input (before compute): close the sentences whose tokens are all cached, choose the selection from the
//     scores accumulated through step p-1 (one-step lag), copy the chosen rows from host K/V into the staging
//     tensors, and write the per-slot mask and the ring slot of the current token.
//   compute: the layer stores k/v of token p into the host cache (as upstream) and into its ring slot of the
//     staging tensors, attends the S_max staging rows under the mask, and scores q_p against every semantic vector
//     on the device.
//   after_compute: the scores are read back and accumulated for the current query sentence.

#include "llama-skv-impl.h"

#include "llama-impl.h"
#include "llama-arch.h"
#include "llama-graph.h"
#include "llama-kv-cache.h"
#include "llama-kv-cache-iswa.h"
#include "llama-model.h"
#include "llama-batch.h"

#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <stdexcept>

#define LLAMA_SKV_VERSION "0.2.0"

static constexpr int32_t SKV_PAD = 256;

static int32_t skv_pad(int32_t n) {
    return ((n + SKV_PAD - 1) / SKV_PAD) * SKV_PAD;
}

//
// the one-shot request
//

static std::mutex        g_skv_mutex;
static bool              g_skv_pending  = false;
static llama_skv_params  g_skv_params   = {};
static int32_t           g_skv_sent_cap = 0;

static llama_skv_params skv_default_params() {
    llama_skv_params p;
    p.policy           = LLAMA_SKV_POLICY_SENTENCE;
    p.budget           = 1024;
    p.sink             = 32;
    p.ring             = 64;
    p.min_query_tokens = 1;
    p.max_sentence_len = 128;
    return p;
}

static bool skv_params_valid(const llama_skv_params & p) {
    if (p.policy < LLAMA_SKV_POLICY_FULL || p.policy > LLAMA_SKV_POLICY_SENTENCE) {
        return false;
    }
    if (p.budget < 0 || p.sink < 0 || p.ring < 1 || p.min_query_tokens < 1 || p.max_sentence_len < 1) {
        return false;
    }
    // the budget counts sink + ring: it must leave room for at least one sentence token
    return (int64_t) p.budget > (int64_t) p.sink + p.ring;
}

//
// the graph input of one graph
//

struct llama_skv_cache;

class llm_graph_input_skv : public llm_graph_input_i {
public:
    explicit llm_graph_input_skv(llama_skv_cache * skv) : skv(skv) {}

    void set_input(const llama_ubatch * ubatch) override;
    bool can_reuse(const llm_graph_params & params) override;

    llama_skv_cache * skv;

    bool     staged   = false; // decode regime: attention over the staging rows
    int32_t  s_max    = 0;
    int32_t  n_att    = 0;     // staging rows the graph attends (padded to 256, <= s_max)
    int32_t  n_vec    = 0;     // semantic vectors scored in-graph (padded)
    uint64_t gen      = 0;     // staging buffer generation
    float    kq_scale = 1.0f;

    ggml_tensor * mask     = nullptr; // [n_att, 1] F16
    ggml_tensor * ring_idx = nullptr; // [1] I64

    std::vector<ggml_tensor *> scores; // per SKV layer: [n_vec, 1, n_head] F32 (staged regime)
    std::vector<ggml_tensor *> q_last; // per SKV layer: [head_dim, n_head] F32 (dense regime)
};

//
// the cache
//

struct skv_span {
    int32_t p0;
    int32_t p1;
};

struct skv_pick {
    int32_t id;
    float   score;
    int32_t n_tok;
};

struct skv_layer {
    int32_t il;

    ggml_tensor * k; // host cache
    ggml_tensor * v;

    ggml_tensor * vec     = nullptr; // [n_embd_k_gqa, sent_cap] on the device
    ggml_tensor * stage_k = nullptr; // [n_embd_k_gqa, s_max]
    ggml_tensor * stage_v = nullptr; // [n_embd_v_gqa, s_max]

    std::vector<float> vec_host; // mirror of vec (same rounding), [sent_cap][n_embd_k_gqa]
    std::vector<float> acc;      // [n_head_kv][sent_cap] scores of the current query sentence
    std::vector<float> seed_q;   // [n_head][head_dim] queries of the last prefilled token (scaled)

    std::vector<std::vector<skv_pick>> order;     // [n_head_kv] every entry in selection order (the choice)
    int32_t                            order_n = 0; // entries [0, order_n) are in order
    std::vector<std::vector<skv_pick>> sel;       // [n_head_kv] entries attended in the last staged step
    std::vector<std::vector<int32_t>>  slot_pos;  // [n_head_kv][s_max] position held by each slot, -1 empty

    // device staging only: host copy of the staging rows and the slot range written since the last upload
    std::vector<char> shadow_k;
    std::vector<char> shadow_v;
    int32_t dirty0 = std::numeric_limits<int32_t>::max();
    int32_t dirty1 = 0;
};

struct llama_skv_cache {
    const llama_model    & model;
    const llama_hparams  & hparams;
    const llama_kv_cache & kv;

    llama_skv_params params;

    int32_t kv_size   = 0;
    int32_t sent_cap  = 0; // rows of the vector table now (grows with the index, see reserve_vec)
    int32_t sent_max  = 0; // the most entries an index may hold (requested cap, else kv_size)
    bool    in_prepare = false; // inside set_input: the graph that reads the vector table is built
    int32_t n_head    = 0;
    int32_t n_head_kv = 0;
    int32_t head_dim  = 0;
    int32_t head_dim_v = 0;
    int32_t s_max     = 0;
    uint64_t gen      = 0;
    bool    on_device = false;

    ggml_type type_k = GGML_TYPE_F16;
    ggml_type type_v = GGML_TYPE_F16;
    ggml_type type_vec = GGML_TYPE_F16;

    ggml_backend_buffer_type_t buft = nullptr;

    ggml_context_ptr        ctx_vec;
    ggml_backend_buffer_ptr buf_vec;
    ggml_context_ptr        ctx_stage;
    ggml_backend_buffer_ptr buf_stage;

    std::vector<skv_layer> layers;

    // sentence table
    std::vector<int32_t>  ends;       // declared ends, increasing
    size_t                i_end = 0;  // first declared end not yet consumed
    std::vector<skv_span> sents;      // closed sentences (pieces of at most max_sentence_len)
    int32_t               open_start = 0;

    // chunk table (policy chunk)
    int32_t               chunk_len = 0;
    std::vector<skv_span> chunks;

    // the index whose vectors are on the device
    int32_t n_vec      = 0;     // vectors computed for the active index
    bool    vec_chunks = false; // the active index is the chunk table
    bool    vec_dirty  = false; // every vector must be recomputed (positions moved)

    // query state
    int32_t n_query   = 0;     // queries accumulated for the current query sentence
    bool    has_seed  = false; // seed scores pending for the next step
    bool    has_sel   = false;

    int32_t n_cached  = 0;     // positions [0, n_cached) are in the cache
    bool    expect_after = false; // a staged step was prepared and has not finished yet
    int32_t cur_slot     = -1;    // slot the last staged step wrote in-graph

    std::vector<int32_t> mark;       // scratch [kv_size]: positions wanted by the current head
    int32_t              mark_gen = 0;
    std::vector<int32_t> free_slots; // scratch

    std::vector<int32_t> pos2cell;
    std::vector<ggml_fp16_t> mask_host;

    llama_skv_stats stats = {};

    bool warned_cap = false;
    int  debug      = 0; // env LLAMA_SKV_DEBUG

    llama_skv_cache(const llama_model & model, const llama_hparams & hparams, const llama_kv_cache & kv)
        : model(model), hparams(hparams), kv(kv) {}

    //
    // index
    //

    const std::vector<skv_span> & active() const { return vec_chunks ? chunks : sents; }

    // first position of the open (not yet closed) entry of the active index
    int32_t open_start_active() const {
        if (!vec_chunks) {
            return open_start;
        }
        return chunks.empty() ? 0 : chunks.back().p1;
    }

    bool staged_regime(uint32_t n_tokens) const {
        return n_tokens == 1 && params.policy != LLAMA_SKV_POLICY_FULL;
    }

    int32_t budget_eff() const {
        return std::min(params.budget, kv_size);
    }

    // staging rows a decode step at position p attends, padded like upstream n_kv (so that a budget covering the
    // context reduces exactly like dense attention, chunk for chunk)
    int32_t n_att_for(int32_t p) const {
        const int32_t cap = params.policy == LLAMA_SKV_POLICY_WINDOW ? params.sink + params.ring : budget_eff();
        return std::min(s_max, skv_pad(std::min(p + 1, cap)));
    }

    void reset() {
        ends.clear();
        i_end = 0;
        sents.clear();
        chunks.clear();
        open_start = 0;
        n_vec      = 0;
        vec_dirty  = false;
        n_cached   = 0;
        expect_after = false;
        pos2cell.clear();
        reset_query();
        has_seed = false;
        forget_selection();
        forget_staging();
    }

    // the choice and the reported selection of every layer and head
    void forget_selection() {
        has_sel = false;
        for (auto & l : layers) {
            for (auto & s : l.sel) {
                s.clear();
            }
            for (auto & s : l.order) {
                s.clear();
            }
            l.order_n = 0;
        }
    }

    void reset_query() {
        n_query = 0;
        for (auto & l : layers) {
            std::fill(l.acc.begin(), l.acc.end(), 0.0f);
        }
    }

    // close the sentences whose tokens are all in [0, n)
    // returns true if at least one entry of the active index was added
    bool close_ready(int32_t n) {
        const size_t n_before = active().size();
        const int32_t max_len = params.max_sentence_len;
        while (true) {
            while (i_end < ends.size() && ends[i_end] <= open_start) {
                i_end++;
            }
            const int32_t end   = i_end < ends.size() ? ends[i_end] : std::numeric_limits<int32_t>::max();
            const int32_t piece = (int32_t) std::min<int64_t>(end, (int64_t) open_start + max_len);
            if (piece > n) {
                break;
            }
            add_sentence({open_start, piece});
            open_start = piece;
        }
        if (chunk_len > 0) {
            while (true) {
                const int32_t c0 = chunks.empty() ? 0 : chunks.back().p1;
                if (c0 + chunk_len > n) {
                    break;
                }
                add_entry(chunks, {c0, c0 + chunk_len});
            }
        }
        update_vectors();
        return active().size() > n_before;
    }

    void add_sentence(skv_span s) {
        add_entry(sents, s);
    }

    void add_entry(std::vector<skv_span> & tab, skv_span s) {
        if ((int32_t) tab.size() >= sent_cap && !in_prepare) {
            reserve_vec((int32_t) tab.size() + 1); // between graphs: the table may move
        }
        if ((int32_t) tab.size() < sent_cap) {
            tab.push_back(s);
            return;
        }
        // inside a step the table cannot grow (reserve_for_step made room before the graph was built), so this
        // is only reached at sent_max
        // table full: the last entry grows (its vector is recomputed)
        if (!warned_cap) {
            LLAMA_LOG_WARN("%s: SentenceKV table full (%d entries): merging further sentences into the last one\n",
                    __func__, sent_cap);
            warned_cap = true;
        }
        tab.back().p1 = s.p1;
        if (&tab == &active() && n_vec == (int32_t) tab.size()) {
            n_vec--;
        }
    }

    int32_t chunk_len_for_sents() const {
        int64_t tot = 0;
        for (const auto & s : sents) {
            tot += s.p1 - s.p0;
        }
        return sents.empty() ? std::max(1, params.max_sentence_len / 8)
                             : std::max<int32_t>(1, (int32_t) std::lround((double) tot / sents.size()));
    }

    // an upper bound on the entries of either index after the prepare() of a decode step at position p: what
    // closes there (declared ends up to p, pieces of max_sentence_len, chunks of a policy switched to chunk)
    int32_t entries_bound(int32_t p) const {
        // the pieces close_ready(p) would add: each declared end up to p in pieces of max_sentence_len, then the
        // text after the last one (O(pending ends): many only right after a restore or a debug fill)
        const int32_t max_len = std::max(1, params.max_sentence_len);
        int64_t bound = (int64_t) sents.size();
        int32_t start = open_start;
        for (size_t i = i_end; i < ends.size() && ends[i] <= p; ++i) {
            if (ends[i] > start) {
                bound += (ends[i] - start + max_len - 1) / max_len;
                start = ends[i];
            }
        }
        bound += std::max(0, p - start) / max_len;
        if (params.policy == LLAMA_SKV_POLICY_CHUNK) {
            const int32_t cl = vec_chunks && chunk_len > 0 ? chunk_len : chunk_len_for_sents();
            bound = std::max<int64_t>(bound, (int64_t) p / cl + 1);
        }
        return (int32_t) std::min<int64_t>(bound, sent_max);
    }

    // the vector table must hold what the step at p may close before its graph is built (its graph reads it)
    bool vec_fits_step(int32_t p) const {
        return entries_bound(p) <= sent_cap;
    }

    void reserve_for_step(int32_t p) {
        if (!vec_fits_step(p)) {
            reserve_vec(entries_bound(p));
        }
    }

    // grow the vector table to hold n entries (padded; by at least an eighth, so growth is amortised): new device
    // tensors, the vectors uploaded again from the host mirror, the scores re-laid out. Only between graphs: a
    // built graph keeps the old tensors (gen changes, so it is not reused).
    void reserve_vec(int32_t n) {
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
        gen++;
    }

    void set_chunk_mode(bool on) {
        if (on == vec_chunks) {
            return;
        }
        if (on) {
            chunk_len = chunk_len_for_sents();
            chunks.clear();
        } else {
            chunk_len = 0;
            chunks.clear();
        }
        vec_chunks = on;
        n_vec      = 0;
        reset_query();
        forget_selection();
        close_ready(n_cached);
    }

    //
    // cells
    //

    void rebuild_pos2cell() {
        const auto & cells = kv.get_cells(0);
        pos2cell.assign(kv_size, -1);
        for (uint32_t i = 0; i < cells.size(); ++i) {
            if (cells.is_empty(i) || !cells.seq_has(i, 0)) {
                continue;
            }
            const llama_pos p = cells.pos_get(i);
            if (p >= 0 && p < kv_size) {
                pos2cell[p] = (int32_t) i;
            }
        }
    }

    int32_t cell_of(int32_t pos) {
        const auto & cells = kv.get_cells(0);
        if (pos < 0 || pos >= kv_size) {
            return -1;
        }
        if ((int32_t) pos2cell.size() == kv_size) {
            const int32_t c = pos2cell[pos];
            if (c >= 0 && !cells.is_empty(c) && cells.pos_get(c) == pos && cells.seq_has(c, 0)) {
                return c;
            }
        }
        // fast path: one append-only sequence keeps cell == pos
        if ((uint32_t) pos < cells.size() && !cells.is_empty(pos) && cells.pos_get(pos) == pos && cells.seq_has(pos, 0)) {
            if ((int32_t) pos2cell.size() == kv_size) {
                pos2cell[pos] = pos;
            }
            return pos;
        }
        rebuild_pos2cell();
        return pos2cell[pos];
    }

    //
    // semantic vectors
    //

    void compute_vector(skv_layer & l, int32_t idx, skv_span s) {
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

    void update_vectors() {
        const auto & tab = active();
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

    //
    // selection
    //

    void score_host(const skv_layer & l, const float * q, float scale, std::vector<float> & out) const {
        const int32_t n_embd = n_head_kv * head_dim;
        const int32_t n_gqa  = n_head / n_head_kv;
        out.assign((size_t) n_head_kv * sent_cap, 0.0f);
        for (int32_t j = 0; j < n_head; ++j) {
            const int32_t h = j / n_gqa;
            const float * qj = q + (size_t) j * head_dim;
            for (int32_t i = 0; i < n_vec; ++i) {
                const float * vi = l.vec_host.data() + (size_t) i * n_embd + (size_t) h * head_dim;
                float d = 0.0f;
                for (int32_t t = 0; t < head_dim; ++t) {
                    d += qj[t] * vi[t];
                }
                out[(size_t) h * sent_cap + i] += d * scale;
            }
        }
    }

    void select_from(skv_layer & l, const std::vector<float> & sc) {
        const int32_t n = n_vec;
        std::vector<int32_t> order(n);
        for (int32_t h = 0; h < n_head_kv; ++h) {
            const float * s = sc.data() + (size_t) h * sent_cap;
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [s](int32_t a, int32_t b) { return s[a] > s[b]; });
            auto & ord = l.order[h];
            ord.clear();
            for (int32_t id : order) {
                ord.push_back({id, s[id], 0});
            }
        }
        l.order_n = n;
    }

    // entries closed after the selection was made join its end, most recent first, the same for every head
    void extend_order(skv_layer & l) {
        for (int32_t id = n_vec - 1; id >= l.order_n; --id) {
            for (auto & ord : l.order) {
                ord.push_back({id, 0.0f, 0});
            }
        }
        l.order_n = std::max(l.order_n, n_vec);
    }

    //
    // staging
    //

    void write_row(skv_layer & l, int32_t h, int32_t slot, int32_t pos, int64_t & n_rows) {
        const int32_t c = cell_of(pos);
        const size_t  k_row = (size_t) head_dim * ggml_type_size(type_k);
        const size_t  v_row = (size_t) head_dim_v * ggml_type_size(type_v);
        if (c < 0) {
            LLAMA_LOG_ERROR("%s: position %d is not in the cache\n", __func__, pos);
            return;
        }
        const char * ks = (const char *) l.k->data + (size_t) c * l.k->nb[1] + (size_t) h * k_row;
        const char * vs = (const char *) l.v->data + (size_t) c * l.v->nb[1] + (size_t) h * v_row;
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

    void flush_staging() {
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

    void forget_staging() {
        for (auto & l : layers) {
            for (auto & sp : l.slot_pos) {
                std::fill(sp.begin(), sp.end(), -1);
            }
        }
    }

    // Prepare the staging for a decode step of the token at position p.
    // Layout, per layer and KV head: the attended tokens in ascending position order (sink, selected sentence
    // tokens, ring), then the current token (written in-graph) in the next slot. Position order makes the staged
    // attention reduce in the same order as dense attention, so budget >= context reproduces it; only the slots
    // from the first one that changed are rewritten.
    void prepare(int32_t p, llm_graph_input_skv * inp) {
        in_prepare = true;
        struct unflag { bool & b; ~unflag() { b = false; } } unflag_{in_prepare};
        const int32_t sink = params.sink;
        const int32_t ring = params.ring;
        const int32_t tau  = budget_eff();

        if (expect_after) {
            forget_staging(); // the last staged step did not finish: its in-graph row may be missing
        }

        n_cached = std::max(n_cached, p);
        set_chunk_mode(params.policy == LLAMA_SKV_POLICY_CHUNK);

        if (close_ready(p)) {
            // a query sentence closed: its accumulated scores no longer describe the current sentence
            reset_query();
        }

        const bool use_sel = params.policy == LLAMA_SKV_POLICY_SENTENCE || params.policy == LLAMA_SKV_POLICY_CHUNK;

        if (use_sel) {
            if (n_query >= params.min_query_tokens) {
                for (auto & l : layers) {
                    select_from(l, l.acc);
                }
                has_sel  = true;
                has_seed = false;
            } else if (has_seed) {
                // first step after a prefill: seeded from the last prefilled token's queries
                std::vector<float> sc;
                for (auto & l : layers) {
                    score_host(l, l.seed_q.data(), 1.0f, sc);
                    select_from(l, sc);
                }
                has_sel  = true;
                has_seed = false;
            } else if (!has_sel) {
                // no query seen and no seed (after a seq_rm, or a restore without prefill): most recent first,
                // so a budget that covers the context still selects every token
                for (auto & l : layers) {
                    for (auto & ord : l.order) {
                        ord.clear();
                    }
                    l.order_n = 0;
                }
                has_sel = true;
            }
        }

        const int32_t ring_start = std::max(sink, p - ring + 1); // the ring is [ring_start, p]
        const int32_t n_slot     = std::max(0, tau - sink - ring);

        int64_t n_rows = 0;
        int32_t n_list = -1;

        std::vector<int32_t> want;
        std::vector<int32_t> list;
        for (auto & l : layers) {
            for (int32_t h = 0; h < n_head_kv; ++h) {
                // sentence tokens: the open sentence outside the ring first (it is the current context), then the
                // selected entries in descending score, whole, the last one cut (earliest tokens kept)
                want.clear();
                auto take = [&](int32_t a, int32_t b) -> int32_t {
                    a = std::max(a, sink);
                    b = std::min(b, ring_start);
                    int32_t got = 0;
                    for (int32_t q = a; q < b && (int32_t) want.size() < n_slot; ++q) {
                        if (cell_of(q) < 0) {
                            continue; // removed from the cache (seq_rm in the middle)
                        }
                        want.push_back(q);
                        got++;
                    }
                    return got;
                };
                if (params.policy != LLAMA_SKV_POLICY_WINDOW) {
                    take(open_start_active(), p);
                }
                // the full order is kept (a kept selection must give every head the same candidates); the
                // reported selection lists the entries that got tokens
                auto & sel = l.sel[h];
                sel.clear();
                if (use_sel && has_sel) {
                    if (h == 0) {
                        extend_order(l);
                    }
                    const auto & tab = active();
                    for (const auto & pk : l.order[h]) {
                        if ((int32_t) want.size() >= n_slot) {
                            break;
                        }
                        if (pk.id >= (int32_t) tab.size()) {
                            continue;
                        }
                        const skv_span sp = tab[pk.id];
                        const int32_t got = take(sp.p0, sp.p1);
                        if (got > 0) {
                            sel.push_back({pk.id, pk.score, got});
                        }
                    }
                }
                std::sort(want.begin(), want.end());
                GGML_ASSERT(std::adjacent_find(want.begin(), want.end()) == want.end()); // no token staged twice

                list.clear();
                for (int32_t q = 0; q < std::min(sink, p); ++q) {
                    list.push_back(q);
                }
                list.insert(list.end(), want.begin(), want.end());
                for (int32_t q = ring_start; q < p; ++q) {
                    list.push_back(q);
                }
                GGML_ASSERT(n_list < 0 || n_list == (int32_t) list.size());
                GGML_ASSERT((int32_t) list.size() < s_max);
                n_list = (int32_t) list.size();

                auto & sp = l.slot_pos[h];
                if (n_list == p) {
                    // every earlier token is attended (budget covers the context): position order, so the
                    // staged attention reduces exactly like dense attention; steady state only appends
                    int32_t f = 0;
                    while (f < n_list && sp[f] == list[f]) {
                        f++;
                    }
                    for (int32_t s = f; s < n_list; ++s) {
                        write_row(l, h, s, list[s], n_rows);
                        sp[s] = list[s];
                    }
                } else {
                    // sparse: attention does not depend on slot order, so rows that stay selected keep their slot
                    // and only new positions are copied
                    if ((int32_t) mark.size() != kv_size) {
                        mark.assign(kv_size, 0);
                    }
                    mark_gen += 2;
                    for (int32_t q : list) {
                        mark[q] = mark_gen;
                    }
                    free_slots.clear();
                    for (int32_t s = 0; s < n_list; ++s) {
                        const int32_t q = sp[s];
                        if (q >= 0 && q < kv_size && mark[q] == mark_gen) {
                            mark[q] = mark_gen + 1; // kept in place
                        } else {
                            free_slots.push_back(s);
                        }
                    }
                    size_t fi = 0;
                    for (int32_t q : list) {
                        if (mark[q] == mark_gen) {
                            GGML_ASSERT(fi < free_slots.size());
                            const int32_t s = free_slots[fi++];
                            write_row(l, h, s, q, n_rows);
                            sp[s] = q;
                        }
                    }
                }
                sp[n_list] = p; // written in-graph by this step
                for (int32_t s = n_list + 1; s < (int32_t) sp.size() && sp[s] >= 0; ++s) {
                    sp[s] = -1;
                }
            }
        }
        GGML_ASSERT(n_list >= 0);

        // the mask: identical for every head (one plane)
        const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f);
        const ggml_fp16_t ninf = ggml_fp32_to_fp16(-INFINITY);
        GGML_ASSERT(n_list < inp->n_att);
        mask_host.assign(inp->n_att, ninf);
        for (int32_t s = 0; s <= n_list; ++s) {
            mask_host[s] = zero;
        }
        if (debug == 2) {
            verify(p, n_list);
        }

        flush_staging();
        ggml_backend_tensor_set(inp->mask, mask_host.data(), 0, inp->n_att * sizeof(ggml_fp16_t));
        const int64_t slot = n_list;
        ggml_backend_tensor_set(inp->ring_idx, &slot, 0, sizeof(slot));

        expect_after = true;
        cur_slot     = n_list;

        stats.rows_uploaded_last   = n_rows;
        stats.rows_uploaded_total += n_rows;
        stats.attended_last        = n_list + 1;
    }

    // env LLAMA_SKV_DEBUG=2: check every live staged row against the host cache and the order of positions
    void verify(int32_t p, int32_t n_list) {
        const size_t k_row = (size_t) head_dim * ggml_type_size(type_k);
        const size_t v_row = (size_t) head_dim_v * ggml_type_size(type_v);
        std::vector<char> kb(k_row), vb(v_row);
        int32_t n_bad = 0;
        for (auto & l : layers) {
            for (int32_t h = 0; h < n_head_kv; ++h) {
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

    //
    // after compute
    //

    void after(llm_graph_input_skv * inp, const llama_ubatch & ubatch) {
        expect_after = false;
        if (debug == 2 && inp->staged) {
            const int32_t p = ubatch.pos[0];
            int32_t n = 0;
            while (n < (int32_t) layers[0].slot_pos[0].size() && layers[0].slot_pos[0][n] >= 0) n++;
            verify(p + 1, n - 1);
        }
        if (ubatch.n_tokens == 0) {
            return;
        }
        const int32_t p_last = ubatch.pos[ubatch.n_tokens - 1];
        n_cached = std::max(n_cached, p_last + 1);

        const bool closed = close_ready(n_cached);

        std::vector<float> buf;
        if (inp->staged) {
            stats.n_skv_steps++;
            if (on_device && cur_slot >= 0) {
                // the current token's row went to the device in-graph: mirror it so a later upload keeps it
                const int32_t c = cell_of(p_last);
                const size_t k_row = (size_t) head_dim * ggml_type_size(type_k);
                const size_t v_row = (size_t) head_dim_v * ggml_type_size(type_v);
                for (auto & l : layers) {
                    for (int32_t h = 0; c >= 0 && h < n_head_kv; ++h) {
                        memcpy(l.shadow_k.data() + (size_t) cur_slot * l.stage_k->nb[1] + h * k_row,
                               (const char *) l.k->data + (size_t) c * l.k->nb[1] + h * k_row, k_row);
                        memcpy(l.shadow_v.data() + (size_t) cur_slot * l.stage_v->nb[1] + h * v_row,
                               (const char *) l.v->data + (size_t) c * l.v->nb[1] + h * v_row, v_row);
                    }
                }
            }
            if (closed) {
                reset_query();
            }
            const int32_t n_gqa = n_head / n_head_kv;
            for (size_t li = 0; li < layers.size(); ++li) {
                ggml_tensor * t = inp->scores.size() > li ? inp->scores[li] : nullptr;
                if (!t || inp->n_vec == 0) {
                    continue;
                }
                buf.resize(ggml_nelements(t));
                ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
                auto & l = layers[li];
                const int32_t nv = std::min(inp->n_vec, n_vec);
                for (int32_t j = 0; j < n_head; ++j) {
                    const int32_t h = j / n_gqa;
                    const float * s = buf.data() + (size_t) j * inp->n_vec;
                    for (int32_t i = 0; i < nv; ++i) {
                        l.acc[(size_t) h * sent_cap + i] += s[i] * inp->kq_scale;
                    }
                }
            }
            n_query++;
        } else {
            stats.n_dense_steps++;
            const bool prefill = ubatch.n_tokens > 1;
            if (closed || prefill) {
                reset_query();
            }
            std::vector<float> sc;
            for (size_t li = 0; li < layers.size(); ++li) {
                ggml_tensor * t = inp->q_last.size() > li ? inp->q_last[li] : nullptr;
                if (!t) {
                    continue;
                }
                buf.resize(ggml_nelements(t));
                ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
                auto & l = layers[li];
                if (prefill) {
                    l.seed_q.resize(buf.size());
                    for (size_t i = 0; i < buf.size(); ++i) {
                        l.seed_q[i] = buf[i] * inp->kq_scale;
                    }
                } else {
                    score_host(l, buf.data(), inp->kq_scale, sc);
                    for (size_t i = 0; i < sc.size(); ++i) {
                        l.acc[i] += sc[i];
                    }
                }
            }
            if (prefill) {
                has_seed = true;
            } else {
                n_query++;
            }
        }
    }

    //
    // memory
    //

    bool alloc_stage() {
        const int32_t tau = budget_eff();
        const int32_t s_new = std::min(skv_pad(tau), skv_pad(kv_size));
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

    bool set_params(const llama_skv_params & p) {
        if (!skv_params_valid(p)) {
            return false;
        }
        const bool ring_changed = p.sink != params.sink || p.ring != params.ring;
        const bool len_changed  = p.max_sentence_len != params.max_sentence_len;
        const llama_skv_params old = params;
        params = p;
        if (budget_eff() <= p.sink + p.ring) {
            // clamped budget leaves no room (context smaller than sink + ring)
            params = old;
            return false;
        }
        if (!alloc_stage()) {
            params = old;
            return false;
        }
        GGML_UNUSED(ring_changed); // the staging rewrites from the first slot whose position changed
        GGML_UNUSED(len_changed);  // future pieces use the new length; closed pieces stay
        return true;
    }

    int64_t host_kv_bytes() const {
        int64_t n = 0;
        for (const auto & l : layers) {
            n += ggml_nbytes(l.k) + ggml_nbytes(l.v);
        }
        return n;
    }
};

//
// graph input
//

void llm_graph_input_skv::set_input(const llama_ubatch * ubatch) {
    if (!staged) {
        return;
    }
    GGML_ASSERT(ubatch->n_tokens == 1);
    skv->prepare(ubatch->pos[0], this);
}

bool llm_graph_input_skv::can_reuse(const llm_graph_params & params) {
    bool res = true;
    res &= skv->staged_regime(params.ubatch.n_tokens) == staged;
    if (staged) {
        res &= s_max == skv->s_max;
        res &= n_att == skv->n_att_for(params.ubatch.pos[0]);
        res &= gen == skv->gen;
        res &= n_vec == std::min(skv_pad(std::max(skv->n_vec, 1)), skv->sent_cap);
        res &= skv->vec_fits_step(params.ubatch.pos[0]); // else the build grows the table first
    }
    return res;
}

//
// hooks
//

bool llama_skv_claim(llama_swa_type swa_type) {
    if (swa_type != LLAMA_SWA_TYPE_NONE) {
        return false;
    }
    std::lock_guard<std::mutex> lock(g_skv_mutex);
    if (g_skv_pending) {
        return true;
    }
    const char * env = getenv("LLAMA_SKV");
    if (env && atoi(env) != 0) {
        g_skv_params   = skv_default_params();
        g_skv_sent_cap = 0;
        g_skv_pending  = true;
        return true;
    }
    return false;
}

std::shared_ptr<llama_skv_cache> llama_skv_attach(
        const llama_model & model,
      const llama_hparams & hparams,
     const llama_kv_cache & kv,
        const std::vector<llama_skv_layer_src> & srcs,
                 uint32_t   kv_size,
                 uint32_t   n_stream,
                     bool   offload,
                     bool   v_trans) {
    llama_skv_params params;
    int32_t sent_cap;
    {
        std::lock_guard<std::mutex> lock(g_skv_mutex);
        params         = g_skv_params;
        sent_cap       = g_skv_sent_cap;
        g_skv_pending  = false;
    }

    try {
        if (srcs.empty()) {
            LLAMA_LOG_ERROR("%s: SentenceKV: the cache has no layers\n", __func__);
            return nullptr;
        }
        if (v_trans) {
            LLAMA_LOG_ERROR("%s: SentenceKV needs flash attention (untransposed V); it stays off\n", __func__);
            return nullptr;
        }
        if (n_stream != 1) {
            LLAMA_LOG_ERROR("%s: SentenceKV supports one stream; it stays off\n", __func__);
            return nullptr;
        }
        const ggml_type tk = srcs[0].k->type;
        const ggml_type tv = srcs[0].v->type;
        if ((tk != GGML_TYPE_F16 && tk != GGML_TYPE_F32) || tk != tv) {
            LLAMA_LOG_ERROR("%s: SentenceKV needs an F16 or F32 K/V cache; it stays off\n", __func__);
            return nullptr;
        }

        auto skv = std::make_shared<llama_skv_cache>(model, hparams, kv);
        const int32_t il0 = srcs[0].il;
        skv->kv_size    = (int32_t) kv_size;
        skv->n_head     = (int32_t) hparams.n_head(il0);
        skv->n_head_kv  = (int32_t) hparams.n_head_kv(il0);
        skv->head_dim   = (int32_t) hparams.n_embd_head_k(il0);
        skv->head_dim_v = (int32_t) hparams.n_embd_head_v(il0);
        skv->type_k     = tk;
        skv->type_v     = tv;
        // the vector table starts at one pad and grows with the index (reserve_vec) up to sent_max entries
        skv->sent_max   = std::min<int32_t>(sent_cap > 0 ? sent_cap : (int32_t) kv_size, (int32_t) kv_size);
        skv->sent_cap   = std::min<int32_t>(SKV_PAD, skv->sent_max);
        skv->params     = params;
        skv->debug      = getenv("LLAMA_SKV_DEBUG") ? atoi(getenv("LLAMA_SKV_DEBUG")) : 0;

        for (const auto & s : srcs) {
            if ((int32_t) hparams.n_head_kv(s.il) != skv->n_head_kv || (int32_t) hparams.n_embd_head_k(s.il) != skv->head_dim ||
                (int32_t) hparams.n_head(s.il) != skv->n_head) {
                LLAMA_LOG_ERROR("%s: SentenceKV needs the same head shape in every layer; it stays off\n", __func__);
                return nullptr;
            }
            if (!ggml_backend_buffer_is_host(s.k->buffer) || !ggml_backend_buffer_is_host(s.v->buffer)) {
                LLAMA_LOG_ERROR("%s: SentenceKV needs the K/V in host memory; it stays off\n", __func__);
                return nullptr;
            }
        }

        skv->buft = ggml_backend_cpu_buffer_type();
        if (offload) {
            ggml_backend_dev_t dev = model.dev_layer(il0);
            if (dev) {
                skv->buft = ggml_backend_dev_buffer_type(dev);
            }
        }
        skv->on_device = !ggml_backend_buft_is_host(skv->buft);
        // env LLAMA_SKV_SHADOW=1: take the device upload path (host shadow + one copy per step) on a CPU build too,
        // so the tests exercise the code a GPU runs
        if (getenv("LLAMA_SKV_SHADOW") && atoi(getenv("LLAMA_SKV_SHADOW")) != 0) {
            skv->on_device = true;
        }

        const int32_t n_embd_k = skv->n_head_kv * skv->head_dim;
        ggml_init_params ip = {
            /*.mem_size   =*/ size_t(srcs.size() + 1)*ggml_tensor_overhead(),
            /*.mem_buffer =*/ NULL,
            /*.no_alloc   =*/ true,
        };
        skv->ctx_vec.reset(ggml_init(ip));
        for (const auto & s : srcs) {
            skv_layer l;
            l.il = s.il;
            l.k  = s.k;
            l.v  = s.v;
            l.vec = ggml_new_tensor_2d(skv->ctx_vec.get(), skv->type_vec, n_embd_k, skv->sent_cap);
            ggml_format_name(l.vec, "skv_vec_l%d", s.il);
            l.vec_host.assign((size_t) skv->sent_cap * n_embd_k, 0.0f);
            l.acc.assign((size_t) skv->n_head_kv * skv->sent_cap, 0.0f);
            l.sel.resize(skv->n_head_kv);
            l.order.resize(skv->n_head_kv);
            l.slot_pos.resize(skv->n_head_kv);
            skv->layers.push_back(std::move(l));
        }
        skv->buf_vec.reset(ggml_backend_alloc_ctx_tensors_from_buft(skv->ctx_vec.get(), skv->buft));
        if (!skv->buf_vec) {
            LLAMA_LOG_ERROR("%s: failed to allocate the SentenceKV vector buffer; it stays off\n", __func__);
            return nullptr;
        }
        ggml_backend_buffer_clear(skv->buf_vec.get(), 0);

        if ((int64_t) std::min<int64_t>(params.budget, kv_size) <= (int64_t) params.sink + params.ring) {
            // a context smaller than sink + ring: shrink sink and ring so the clamped budget works
            skv->params.sink = std::min<int32_t>(params.sink, (int32_t) kv_size / 4);
            skv->params.ring = std::max<int32_t>(1, std::min<int32_t>(params.ring, (int32_t) kv_size / 4));
        }
        if (!skv->alloc_stage()) {
            return nullptr;
        }

        LLAMA_LOG_INFO("%s: SentenceKV on %zu layers: sentence cap %d, budget %d (S_max %d), sink %d, ring %d, %s\n",
                __func__, skv->layers.size(), skv->sent_cap, skv->params.budget, skv->s_max, skv->params.sink,
                skv->params.ring, ggml_backend_buft_name(skv->buft));
        return skv;
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: SentenceKV failed: %s\n", __func__, e.what());
        return nullptr;
    }
}

void llama_skv_on_change(llama_skv_cache * skv, llama_skv_change kind, int32_t p0, int32_t p1, int32_t delta) {
    if (!skv) {
        return;
    }
    if (kind == LLAMA_SKV_CHANGE_RM && (p0 < 0 ? 0 : p0) >= skv->n_cached) {
        return; // nothing cached was removed (llama-cpp-python trims the tail before every eval)
    }
    skv->forget_staging();
    skv->pos2cell.clear();
    switch (kind) {
        case LLAMA_SKV_CHANGE_CLEAR:
        case LLAMA_SKV_CHANGE_READ:
            skv->reset();
            break;
        case LLAMA_SKV_CHANGE_RM: {
            if (p0 < 0) {
                p0 = 0;
            }
            if (p0 >= skv->n_cached) {
                break; // nothing cached was removed
            }
            // every entry reaching into the removed range or past it is dropped; later tokens re-close
            auto cut = [p0](std::vector<skv_span> & tab) {
                while (!tab.empty() && tab.back().p1 > p0) {
                    tab.pop_back();
                }
            };
            cut(skv->sents);
            cut(skv->chunks);
            skv->open_start = skv->sents.empty() ? 0 : skv->sents.back().p1;
            while (!skv->ends.empty() && skv->ends.back() > p0) {
                skv->ends.pop_back();
            }
            skv->i_end = 0; // ends at or before the new open sentence's start are skipped again
            skv->n_vec = std::min<int32_t>(skv->n_vec, (int32_t) skv->active().size());
            if (p1 < 0 || p1 >= skv->n_cached) {
                skv->n_cached = p0;
            }
            skv->reset_query();
            skv->has_seed = false;
            skv->has_sel  = false;
            break; // the staging was forgotten above
        }
        case LLAMA_SKV_CHANGE_SHIFT: {
            auto shift = [p0, p1, delta](std::vector<skv_span> & tab) {
                for (auto & s : tab) {
                    if (s.p0 >= p0 && (p1 < 0 || s.p0 < p1)) {
                        s.p0 += delta;
                        s.p1 += delta;
                    }
                }
                tab.erase(std::remove_if(tab.begin(), tab.end(), [](const skv_span & s) { return s.p0 < 0; }), tab.end());
            };
            shift(skv->sents);
            shift(skv->chunks);
            for (auto & e : skv->ends) {
                if (e > p0 && (p1 < 0 || e <= p1)) {
                    e += delta;
                }
            }
            skv->open_start = skv->sents.empty() ? 0 : skv->sents.back().p1;
            skv->i_end      = 0;
            skv->n_cached  += delta;
            skv->vec_dirty  = true;
            skv->has_sel    = false;
            skv->reset_query();
            break; // the staging was forgotten above
        }
    }
}

static llama_skv_cache * skv_of(const llama_kv_cache_context * mctx) {
    if (!mctx) {
        return nullptr;
    }
    const llama_kv_cache * kv = mctx->get_kv();
    return kv ? kv->skv.get() : nullptr;
}

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
                  ggml_tensor ** kq_mask) {
    llama_skv_cache * skv = skv_of(mctx);
    if (!skv || g.cparams.training || !k_cur || !v_cur) {
        return false;
    }

    int32_t li = -1;
    for (size_t i = 0; i < skv->layers.size(); ++i) {
        if (skv->layers[i].il == il) {
            li = (int32_t) i;
        }
    }
    if (li < 0) {
        return false;
    }

    ggml_context * ctx0 = g.ctx0;
    const uint32_t n_tokens = g.ubatch.n_tokens;

    // one input object per graph, created by the first SKV layer
    llm_graph_input_skv * inp = nullptr;
    if (li == 0) {
        if (skv->staged_regime(n_tokens)) {
            try {
                skv->reserve_for_step(g.ubatch.pos[0]); // before the graph takes the vector tensors
            } catch (const std::exception & e) {
                LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what()); // the step then merges into the last entry
            }
        }
        auto p = std::make_unique<llm_graph_input_skv>(skv);
        p->staged   = skv->staged_regime(n_tokens);
        p->s_max    = skv->s_max;
        p->n_att    = p->staged ? skv->n_att_for(g.ubatch.pos[0]) : 0;
        p->gen      = skv->gen;
        p->kq_scale = kq_scale;
        p->n_vec    = std::min(skv_pad(std::max(skv->n_vec, 1)), skv->sent_cap);
        p->scores.assign(skv->layers.size(), nullptr);
        p->q_last.assign(skv->layers.size(), nullptr);
        if (p->staged) {
            p->mask = ggml_new_tensor_4d(ctx0, GGML_TYPE_F16, p->n_att, 1, 1, 1);
            ggml_set_input(p->mask);
            ggml_set_name(p->mask, "skv_mask");
            p->ring_idx = ggml_new_tensor_1d(ctx0, GGML_TYPE_I64, 1);
            ggml_set_input(p->ring_idx);
            ggml_set_name(p->ring_idx, "skv_ring_idx");
        }
        inp = (llm_graph_input_skv *) g.res->add_input(std::move(p));
    } else {
        for (auto & ip : g.res->inputs) {
            if (auto * s = dynamic_cast<llm_graph_input_skv *>(ip.get())) {
                inp = s;
            }
        }
    }
    if (!inp) {
        return false;
    }

    auto & l = skv->layers[li];
    const int64_t hd  = skv->head_dim;
    const int64_t hdv = skv->head_dim_v;
    const int64_t nkv = skv->n_head_kv;

    // q as the model scores it: [head_dim, n_head, n_tokens]
    if (!inp->staged) {
        // dense regime: hand the last token's queries to the host (seed for the first decode step)
        ggml_tensor * ql = ggml_view_2d(ctx0, q_cur, q_cur->ne[0], q_cur->ne[1], q_cur->nb[1], (n_tokens - 1)*q_cur->nb[2]);
        ql = ggml_cont(ctx0, ql);
        if (ql->type != GGML_TYPE_F32) {
            ql = ggml_cast(ctx0, ql, GGML_TYPE_F32);
        }
        ggml_set_name(ql, "skv_q_last");
        ggml_set_output(ql);
        ggml_build_forward_expand(g.gf, ql);
        inp->q_last[li] = ql;
        return false;
    }

    GGML_ASSERT(n_tokens == 1);

    // the current token goes into its ring slot of the staging rows
    {
        GGML_ASSERT(ggml_row_size(k_cur->type, k_cur->ne[0]) == k_cur->nb[1]);
        GGML_ASSERT(ggml_row_size(v_cur->type, v_cur->ne[0]) == v_cur->nb[1]);
        ggml_tensor * kc = ggml_view_2d(ctx0, k_cur, k_cur->ne[0]*k_cur->ne[1], 1, k_cur->nb[2], 0);
        ggml_tensor * vc = ggml_view_2d(ctx0, v_cur, v_cur->ne[0]*v_cur->ne[1], 1, v_cur->nb[2], 0);
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx0, l.stage_k, kc, inp->ring_idx));
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx0, l.stage_v, vc, inp->ring_idx));
    }

    // score q against every semantic vector on the device: [n_vec, 1, n_head]
    {
        ggml_tensor * vec = ggml_view_3d(ctx0, l.vec, hd, nkv, inp->n_vec,
                ggml_row_size(l.vec->type, hd), l.vec->nb[1], 0);
        vec = ggml_permute(ctx0, vec, 0, 2, 1, 3);                 // [hd, n_vec, nkv]
        ggml_tensor * q = ggml_permute(ctx0, q_cur, 0, 2, 1, 3);   // [hd, 1, n_head]
        ggml_tensor * sc = ggml_mul_mat(ctx0, vec, q);              // [n_vec, 1, n_head]
        ggml_set_name(sc, "skv_scores");
        ggml_set_output(sc);
        ggml_build_forward_expand(g.gf, sc);
        inp->scores[li] = sc;
    }

    *k = ggml_view_3d(ctx0, l.stage_k, hd, nkv, inp->n_att,
            ggml_row_size(l.stage_k->type, hd), l.stage_k->nb[1], 0);
    *v = ggml_view_3d(ctx0, l.stage_v, hdv, nkv, inp->n_att,
            ggml_row_size(l.stage_v->type, hdv), l.stage_v->nb[1], 0);
    ggml_set_name(*k, "skv_k_staged");
    ggml_set_name(*v, "skv_v_staged");
    *kq_mask = inp->mask;
    return true;
}

void llama_skv_after_compute(llama_memory_i * mem, llm_graph_result * res, const llama_ubatch & ubatch) {
    if (!mem || !res) {
        return;
    }
    llm_graph_input_skv * inp = nullptr;
    for (auto & ip : res->inputs) {
        if (auto * s = dynamic_cast<llm_graph_input_skv *>(ip.get())) {
            inp = s;
        }
    }
    if (!inp) {
        return;
    }
    try {
        inp->skv->after(inp, ubatch);
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what());
    }
}

//
// public API
//

static llama_skv_cache * skv_of_ctx(llama_context * ctx) {
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

int32_t llama_skv_request(const llama_skv_params * params, int32_t sent_cap) {
    const llama_skv_params p = params ? *params : skv_default_params();
    if (!skv_params_valid(p) || sent_cap < 0) {
        return LLAMA_SKV_ERR_INVALID;
    }
    std::lock_guard<std::mutex> lock(g_skv_mutex);
    g_skv_params   = p;
    g_skv_sent_cap = sent_cap;
    g_skv_pending  = true;
    return 0;
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
    int32_t last = skv->ends.empty() ? 0 : skv->ends.back();
    for (int32_t i = 0; i < n; ++i) {
        if (ends[i] <= last || ends[i] > skv->kv_size) {
            return LLAMA_SKV_ERR_INVALID;
        }
        last = ends[i];
    }
    try {
        skv->ends.insert(skv->ends.end(), ends, ends + n);
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
    const auto & tab = skv->sents;
    if (spans) {
        for (int32_t i = 0; i < std::min<int32_t>(n_max, (int32_t) tab.size()); ++i) {
            spans[2*i + 0] = tab[i].p0;
            spans[2*i + 1] = tab[i].p1;
        }
    }
    return (int32_t) tab.size();
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

int32_t llama_skv_close_cached(llama_context * ctx) {
    llama_skv_cache * skv = skv_of_ctx(ctx);
    if (!skv) {
        return LLAMA_SKV_ERR_NOT_ENABLED;
    }
    const int32_t n = (int32_t) llama_memory_seq_pos_max(llama_get_memory(ctx), 0) + 1;
    skv->n_cached = std::max(skv->n_cached, n);
    try {
        if (skv->close_ready(skv->n_cached)) {
            skv->reset_query();
        }
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what());
        return LLAMA_SKV_ERR_INTERNAL;
    }
    return (int32_t) skv->active().size();
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
    s.n_sentences = (int32_t) skv->active().size();
    s.n_layers    = (int32_t) skv->layers.size();
    s.n_head_kv   = skv->n_head_kv;
    s.head_dim    = skv->head_dim;
    s.sent_cap    = skv->sent_cap;
    s.on_device   = skv->on_device ? 1 : 0;
    *out = s;
    return 0;
}
