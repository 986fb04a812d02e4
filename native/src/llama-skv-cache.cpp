// SentenceKV cache: the one-shot request, the cache's state and parameters, attaching it to a KV cache, and
// following the KV cache's changes (clear, seq_rm, seq_add, state read).

#include "llama-skv-cache.h"

#include "llama-arch.h"
#include "llama-kv-cache.h"
#include "llama-model.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

//
// the one-shot request
//

static std::mutex        g_skv_mutex;
static bool              g_skv_pending  = false;
static llama_skv_params  g_skv_params   = {};
static int32_t           g_skv_sent_cap = 0;

llama_skv_params skv_default_params() {
    llama_skv_params p;
    p.policy           = LLAMA_SKV_POLICY_SENTENCE;
    p.budget           = 1024;
    p.sink             = 32;
    p.ring             = 64;
    p.min_query_tokens = 1;
    p.max_sentence_len = 128;
    p.remap_positions  = LLAMA_SKV_REMAP_AUTO;
    p.score_distance   = LLAMA_SKV_SCORE_AUTO;
    p.remap_layout     = LLAMA_SKV_LAYOUT_ORDER;
    p.query_mode       = LLAMA_SKV_QUERY_SENTENCE;
    p.gqa_agg          = LLAMA_SKV_GQA_SUM;
    p.dense_layers     = 0;
    p.edge             = LLAMA_SKV_EDGE_CUT;
    p.neighbours       = 0;
    p.oracle           = LLAMA_SKV_ORACLE_OFF;
    p.summary          = LLAMA_SKV_SUMMARY_MEAN;
    p.exclude_sink     = 0;
    p.select_at        = LLAMA_SKV_SELECT_LAG;
    return p;
}

bool skv_params_valid(const llama_skv_params & p) {
    if (p.policy < LLAMA_SKV_POLICY_FULL || p.policy > LLAMA_SKV_POLICY_SENTENCE) {
        return false;
    }
    if (p.budget < 0 || p.sink < 0 || p.ring < 1 || p.min_query_tokens < 1 || p.max_sentence_len < 1) {
        return false;
    }
    if (p.remap_positions < LLAMA_SKV_REMAP_OFF || p.remap_positions > LLAMA_SKV_REMAP_AUTO) {
        return false;
    }
    if (p.score_distance < LLAMA_SKV_SCORE_AUTO) {
        return false;
    }
    if (p.remap_layout < LLAMA_SKV_LAYOUT_ORDER || p.remap_layout > LLAMA_SKV_LAYOUT_STACK) {
        return false;
    }
    if (p.query_mode < LLAMA_SKV_QUERY_SENTENCE || p.query_mode > LLAMA_SKV_QUERY_LAST ||
        p.gqa_agg < LLAMA_SKV_GQA_SUM || p.gqa_agg > LLAMA_SKV_GQA_HEADS || p.dense_layers < 0 ||
        p.edge < LLAMA_SKV_EDGE_CUT || p.edge > LLAMA_SKV_EDGE_SKIP || p.neighbours < 0 || p.neighbours > 4 ||
        p.oracle < LLAMA_SKV_ORACLE_OFF || p.oracle > LLAMA_SKV_ORACLE_SENTENCES_LAG ||
        p.summary < LLAMA_SKV_SUMMARY_MEAN || p.summary > LLAMA_SKV_SUMMARY_GAUSS ||
        p.exclude_sink < 0 || p.exclude_sink > 1 ||
        p.select_at < LLAMA_SKV_SELECT_LAG || p.select_at > LLAMA_SKV_SELECT_STEP_SENTENCE) {
        return false;
    }
    // the budget counts sink + ring: it must leave room for at least one sentence token
    return (int64_t) p.budget > (int64_t) p.sink + p.ring;
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

//
// the cache
//

void llama_skv_cache::reset() {
    idx.clear();
    n_vec      = 0;
    vec_dirty  = false;
    n_cached   = 0;
    expect_after = false;
    pos2cell.clear();
    n_ident    = 0;
    reset_query();
    has_seed = false;
    forget_selection();
    forget_staging();
}

// the choice and the reported selection of every layer and head
void llama_skv_cache::forget_selection() {
    has_sel = false;
    for (auto & l : layers) {
        for (auto & s : l.sel) {
            s.clear();
        }
        for (auto & s : l.order) {
            s.clear();
        }
        for (auto & s : l.hint) {
            s.clear();
        }
        l.tail.clear();
        l.order_n  = 0;
        l.scored_n = 0;
        l.snap_from_acc = false;
    }
}

void llama_skv_cache::reset_query() {
    n_query = 0;
    for (auto & l : layers) {
        if (l.snap_from_acc) {
            // the choice reads acc: it keeps these scores as its snapshot (a kept choice orders from them)
            std::swap(l.acc, l.snap);
            l.snap_from_acc = false;
            l.snap_stride   = sent_cap;
            l.acc.assign((size_t) n_head_kv * sent_cap, 0.0f);
        } else {
            std::fill(l.acc.begin(), l.acc.end(), 0.0f);
        }
        std::fill(l.acc_q.begin(), l.acc_q.end(), 0.0f);
    }
}

// close the entries whose tokens are all in [0, n) and compute their vectors
// returns true if at least one entry of the active index was added
bool llama_skv_cache::close_ready(int32_t n) {
    const int32_t added = idx.close(n, params.max_sentence_len);
    if (idx.full && !warned_cap) {
        LLAMA_LOG_WARN("%s: SentenceKV table full (%d entries): merging further sentences into the last one\n",
                __func__, sent_cap);
        warned_cap = true;
    }
    if (idx.merged_active) {
        if (n_vec == (int32_t) idx.active().size()) {
            n_vec--; // the last entry grew: its vector is recomputed
        }
        idx.merged_active = false;
    }
    update_vectors();
    return added > 0;
}

void llama_skv_cache::set_chunk_mode(bool on) {
    if (!idx.set_chunk_mode(on, params.max_sentence_len)) {
        return;
    }
    n_vec = 0;
    reset_query();
    forget_selection();
    close_ready(n_cached);
}

void llama_skv_cache::rebuild_pos2cell() {
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

int32_t llama_skv_cache::cell_of(int32_t pos) {
    const auto & cells = kv.get_cells(0);
    if (pos < 0 || pos >= kv_size) {
        return -1;
    }
    if (pos < n_ident) {
        return pos;
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

// the identity prefix over the tokens appended since the last step (each cell checked once while it holds)
void llama_skv_cache::extend_ident() {
    const auto & cells = kv.get_cells(0);
    if (n_ident > 0 && (cells.seq_pos_min(0) != 0 || cells.seq_pos_max(0) < n_ident - 1)) {
        n_ident = 0; // sequence 0 lost its start or its end moved down without a hooked change (seq_keep, seq_div)
    }
    const int32_t n = std::min<int32_t>(n_cached, (int32_t) cells.size());
    while (n_ident < n && !cells.is_empty(n_ident) && cells.pos_get(n_ident) == n_ident && cells.seq_has(n_ident, 0)) {
        n_ident++;
    }
}

// cell_of, memoised for one staged step (positions do not move inside prepare; step_gen changes every step)
int32_t llama_skv_cache::cell_in_step(int32_t pos) {
    if (pos < 0 || pos >= kv_size) {
        return -1;
    }
    if (pos < n_ident) {
        return pos;
    }
    if ((int32_t) memo_gen.size() != kv_size) {
        memo_gen.assign(kv_size, 0);
        memo_cell.assign(kv_size, -1);
    }
    if (memo_gen[pos] != step_gen) {
        memo_gen[pos]  = step_gen;
        memo_cell[pos] = cell_of(pos);
    }
    return memo_cell[pos];
}

bool llama_skv_cache::set_params(const llama_skv_params & p) {
    if (!skv_params_valid(p)) {
        return false;
    }
    const bool ring_changed = p.sink != params.sink || p.ring != params.ring;
    const bool len_changed  = p.max_sentence_len != params.max_sentence_len;
    if (!layers.empty() && p.dense_layers >= (int32_t) layers.size()) {
        return false; // at least one layer must stay sparse
    }
    const bool scores_changed = p.gqa_agg != params.gqa_agg || p.query_mode != params.query_mode;
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
    if (scores_changed) {
        reset_query(); // the accumulated scores are of another form
    }
    if (p.summary != old.summary) {
        const int32_t d = p.summary == LLAMA_SKV_SUMMARY_MEAN ? head_dim : 2 * head_dim;
        if (d != vec_dim) {
            set_vec_dim(d);
        } else { // bound <-> gauss: the same width, other contents
            vec_dirty = true;
            reset_query();
            has_sel = false;
        }
    } else if (p.exclude_sink != old.exclude_sink || (p.exclude_sink && p.sink != old.sink)) {
        vec_dirty = true; // every vector again, with or without the sink's keys
        reset_query();
        has_sel = false;
    }
    GGML_UNUSED(ring_changed); // the staging rewrites from the first slot whose position changed
    GGML_UNUSED(len_changed);  // future pieces use the new length; closed pieces stay
    return true;
}

int64_t llama_skv_cache::host_kv_bytes() const {
    int64_t n = 0;
    for (const auto & l : layers) {
        n += ggml_nbytes(l.k) + ggml_nbytes(l.v);
    }
    return n;
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
        skv->k_row      = (size_t) skv->head_dim * ggml_type_size(tk);
        skv->v_row      = (size_t) skv->head_dim_v * ggml_type_size(tv);
        // the vector table starts at one pad and grows with the index (reserve_vec) up to sent_max entries
        skv->sent_max   = std::min<int32_t>(sent_cap > 0 ? sent_cap : (int32_t) kv_size, (int32_t) kv_size);
        skv->sent_cap   = std::min<int32_t>(SKV_PAD, skv->sent_max);
        skv->idx.cap    = skv->sent_cap;
        {
            llama_skv_cache * c = skv.get();
            // a full table grows between graphs; inside a step (prepare) it cannot: reserve_for_step made room
            skv->idx.room = [c](int32_t n) {
                if (c->in_prepare) {
                    return false;
                }
                c->reserve_vec(n);
                return true;
            };
        }
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

        skv->vec_dim = skv->params.summary == LLAMA_SKV_SUMMARY_MEAN ? skv->head_dim : 2 * skv->head_dim;
        const int32_t n_embd_k = skv->n_head_kv * skv->vec_dim;
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
            l.vec = skv->new_vec_table(skv->ctx_vec.get(), s.il, skv->sent_cap);
            l.vec_host.assign((size_t) skv->sent_cap * n_embd_k, 0.0f);
            l.acc.assign((size_t) skv->n_head_kv * skv->sent_cap, 0.0f);
            l.sel.resize(skv->n_head_kv);
            l.order.resize(skv->n_head_kv);
            l.hint.resize(skv->n_head_kv);
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
    // positions from p0 on may have left their cells or moved (everything, for a clear or a read)
    const bool from_p0 = kind == LLAMA_SKV_CHANGE_RM || kind == LLAMA_SKV_CHANGE_SHIFT;
    skv->n_ident = from_p0 ? std::min(skv->n_ident, std::max(p0, 0)) : 0;
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
            skv->idx.remove_from(p0);
            skv->n_vec = std::min<int32_t>(skv->n_vec, (int32_t) skv->idx.active().size());
            if (p1 < 0 || p1 >= skv->n_cached) {
                skv->n_cached = p0;
            }
            skv->reset_query();
            skv->has_seed = false;
            skv->has_sel  = false;
            break; // the staging was forgotten above
        }
        case LLAMA_SKV_CHANGE_SHIFT: {
            skv->idx.shift(p0, p1, delta);
            skv->n_cached  += delta;
            skv->vec_dirty  = true;
            skv->has_sel    = false;
            skv->reset_query();
            break; // the staging was forgotten above
        }
    }
}
