// SentenceKV in the graph: the graph input (set_input runs the staged step's prepare), the attention hook that
// swaps in the staging views and adds the scores, and after compute (scores read back and accumulated).

#include "llama-skv-cache.h"

#include "llama-kv-cache.h"
#include "llama-batch.h"
#include "llama-model.h"

#include <algorithm>
#include <cstring>

//
// graph input
//

void llm_graph_input_skv::set_input(const llama_ubatch * ubatch) {
    if (q_shift) {
        // each scored query turned from its own position to score_d (the last one's alone in the dense regime)
        const int32_t n = (int32_t) ggml_nelements(q_shift);
        std::vector<int32_t> d(n);
        for (int32_t j = 0; j < n; ++j) {
            d[j] = score_d - (int32_t) ubatch->pos[ubatch->n_tokens - n + j];
        }
        ggml_backend_tensor_set(q_shift, d.data(), 0, d.size() * sizeof(int32_t));
    }
    if (!staged) {
        return;
    }
    GGML_ASSERT((int32_t) ubatch->n_tokens == n_tok);
    for (uint32_t j = 1; j < ubatch->n_tokens; ++j) {
        GGML_ASSERT(ubatch->pos[j] == ubatch->pos[0] + (llama_pos) j); // one sequence, in order
    }
    skv->prepare(ubatch->pos[0], n_tok, this);
}

bool llm_graph_input_skv::can_reuse(const llm_graph_params & params) {
    bool res = true;
    const int32_t m  = (int32_t) params.ubatch.n_tokens;
    const int32_t p0 = m > 0 ? params.ubatch.pos[0] : 0;
    res &= skv->staged_regime(m, p0) == staged;
    res &= score_d == skv->score_dist();
    res &= per_head == skv->per_head_scores();
    res &= gauss == skv->gauss_summary();
    res &= q_out == skv->oracle_lag();
    res &= dense_l == skv->params.dense_layers;
    res &= now == (skv->staged_regime(m, p0) && skv->select_now_for(p0, m));
    if (staged) {
        res &= n_tok == m;
        res &= s_max == skv->s_max;
        res &= n_att == skv->n_att_for(p0, m);
        res &= remap == skv->remap_for(p0 + m - 1);
        res &= gen == skv->gen;
        res &= n_scored == std::min(skv_pad(std::max(skv->n_vec, 1)), skv->sent_cap);
        res &= skv->vec_fits_step(params.ubatch.pos[0]); // else the build grows the table first
    }
    return res;
}

static llama_skv_cache * skv_of(const llama_kv_cache_context * mctx) {
    if (!mctx) {
        return nullptr;
    }
    const llama_kv_cache * kv = mctx->get_kv();
    return kv ? kv->skv.get() : nullptr;
}

// the staged K of one layer turned to its virtual positions: each (slot, head) row by its own RoPE delta, the
// rotation llama.cpp's K-shift applies to cached keys (llama-kv-cache.cpp build_rope_shift), into a new tensor (the
// staging rows keep their stored rotation: later steps keep rows in place and give them other deltas)
static ggml_tensor * skv_rotate_staged(const llm_graph_context & g, const llama_skv_cache & skv, const skv_layer & l,
                                       int il, llm_graph_input_skv * inp, int32_t li) {
    ggml_context * ctx0 = g.ctx0;
    const auto & hp = skv.hparams;
    const int64_t hd     = skv.head_dim;
    const int64_t n_rows = (int64_t) skv.n_head_kv * inp->n_att;

    ggml_tensor * shift = ggml_new_tensor_1d(ctx0, GGML_TYPE_I32, n_rows);
    ggml_set_input(shift);
    ggml_format_name(shift, "skv_k_shift-%d", il);
    inp->k_shift[li] = shift;

    // one row per (slot, head): [hd, 1, n_head_kv * n_att], row index h + n_head_kv * slot (the staging layout)
    const size_t row = ggml_row_size(l.stage_k->type, hd);
    ggml_tensor * rows = ggml_view_3d(ctx0, l.stage_k, hd, 1, n_rows, row, row, 0);
    const int rope_type = hp.rope_type == LLAMA_ROPE_TYPE_MROPE || hp.rope_type == LLAMA_ROPE_TYPE_IMROPE
        ? LLAMA_ROPE_TYPE_NEOX // as build_rope_shift: the whole vector, in NEOX order
        : hp.rope_type;
    const auto & cp = g.cparams;
    ggml_tensor * rot = ggml_rope_ext(ctx0, rows, shift, skv.model.get_rope_factors(cp, il), hp.n_rot(il), rope_type,
            cp.n_ctx_orig_yarn, skv.model.get_rope_freq_base(cp, il), skv.model.get_rope_freq_scale(cp, il),
            cp.yarn_ext_factor, cp.yarn_attn_factor, cp.yarn_beta_fast, cp.yarn_beta_slow);
    ggml_format_name(rot, "skv_k_rot-%d", il);
    return ggml_reshape_3d(ctx0, rot, hd, skv.n_head_kv, inp->n_att);
}

// queries [hd, n_head, n] (contiguous, F32) turned from their positions to the scoring distance (score_dist): the
// same rotation, so that a content vector (keys at position 0) is scored as if it sat score_d positions before
static ggml_tensor * skv_rope_query(const llm_graph_context & g, const llama_skv_cache & skv, int il,
                                    ggml_tensor * q, ggml_tensor * shift) {
    const auto & hp = skv.hparams;
    if (!hp.has_rope(il)) {
        return q;
    }
    const int rope_type = hp.rope_type == LLAMA_ROPE_TYPE_MROPE || hp.rope_type == LLAMA_ROPE_TYPE_IMROPE
        ? LLAMA_ROPE_TYPE_NEOX
        : hp.rope_type;
    const auto & cp = g.cparams;
    return ggml_rope_ext(g.ctx0, q, shift, nullptr, hp.n_rot(il), rope_type, cp.n_ctx_orig_yarn,
            skv.model.get_rope_freq_base(cp, il), skv.model.get_rope_freq_scale(cp, il),
            0.0f, 1.0f, cp.yarn_beta_fast, cp.yarn_beta_slow);
}

// the in-graph op of the same-step selection (one task): layer li's choice from its scores (b), the staging rows
// re-placed; a (the K view) is the op's in-place output. Nothing may throw through the graph
static void skv_select_now_op(ggml_tensor * dst, const ggml_tensor * a, const ggml_tensor * b, int ith, int nth,
                              void * userdata) {
    GGML_UNUSED(dst);
    GGML_UNUSED(a);
    GGML_UNUSED(nth);
    if (ith != 0) {
        return;
    }
    const auto * arg = (const skv_now_arg *) userdata;
    try {
        arg->skv->select_now(arg->li, b);
    } catch (const std::exception & e) {
        LLAMA_LOG_ERROR("%s: %s (the layer keeps the lagged choice)\n", __func__, e.what());
    }
}

// orders V's read after K's op (the rows of both are placed there)
static void skv_after_now_op(ggml_tensor * dst, const ggml_tensor * a, const ggml_tensor * b, int ith, int nth,
                             void * userdata) {
    GGML_UNUSED(dst);
    GGML_UNUSED(a);
    GGML_UNUSED(b);
    GGML_UNUSED(ith);
    GGML_UNUSED(nth);
    GGML_UNUSED(userdata);
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
        skv->set_rope(g.cparams);
        const int32_t p0 = g.ubatch.pos[0];
        const bool staged = skv->staged_regime(n_tokens, p0);
        if (staged) {
            try {
                skv->reserve_for_step(g.ubatch.pos[0]); // before the graph takes the vector tensors
            } catch (const std::exception & e) {
                LLAMA_LOG_ERROR("%s: %s\n", __func__, e.what()); // the step then merges into the last entry
            }
        }
        auto p = std::make_unique<llm_graph_input_skv>(skv);
        p->staged   = staged;
        p->n_tok    = (int32_t) n_tokens;
        p->s_max    = skv->s_max;
        p->n_att    = staged ? skv->n_att_for(p0, (int32_t) n_tokens) : 0;
        p->remap    = staged && skv->remap_for(p0 + (int32_t) n_tokens - 1);
        p->score_d  = skv->score_dist();
        p->per_head = skv->per_head_scores();
        p->q_out    = skv->oracle_lag();
        p->dense_l  = skv->params.dense_layers;
        p->now      = staged && skv->select_now_for(p0, (int32_t) n_tokens);
        p->gauss    = skv->gauss_summary();
        if (skv->now_args.size() != skv->layers.size()) {
            skv->now_args.resize(skv->layers.size());
            for (size_t i = 0; i < skv->layers.size(); ++i) {
                skv->now_args[i] = {skv, (int32_t) i};
            }
        }
        if (p->score_d > 0) {
            p->q_shift = ggml_new_tensor_1d(ctx0, GGML_TYPE_I32, staged ? n_tokens : 1);
            ggml_set_input(p->q_shift);
            ggml_set_name(p->q_shift, "skv_q_shift");
        }
        p->gen      = skv->gen;
        p->kq_scale = kq_scale;
        p->n_scored = std::min(skv_pad(std::max(skv->n_vec, 1)), skv->sent_cap);
        p->scores.assign(skv->layers.size(), nullptr);
        p->q_last.assign(skv->layers.size(), nullptr);
        p->k_shift.assign(skv->layers.size(), nullptr);
        if (p->staged) {
            p->mask = ggml_new_tensor_4d(ctx0, GGML_TYPE_F16, p->n_att, n_tokens, 1, 1);
            ggml_set_input(p->mask);
            ggml_set_name(p->mask, "skv_mask");
            p->ring_idx = ggml_new_tensor_1d(ctx0, GGML_TYPE_I64, n_tokens);
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
    if (inp->staged && skv->dense_layer(li)) {
        return false; // a dense layer (params.dense_layers): upstream's attention over every cached token
    }

    auto & l = skv->layers[li];
    const int64_t hd  = skv->head_dim;
    const int64_t hdv = skv->head_dim_v;
    const int64_t nkv = skv->n_head_kv;

    // q as the model scores it: [head_dim, n_head, n_tokens]
    if (inp->staged && inp->q_out && n_tokens == 1) {
        // the oracle with lag: this step's queries, read back for the next step's selection
        ggml_tensor * ql = ggml_cont(ctx0, ggml_view_2d(ctx0, q_cur, q_cur->ne[0], q_cur->ne[1], q_cur->nb[1], 0));
        if (ql->type != GGML_TYPE_F32) {
            ql = ggml_cast(ctx0, ql, GGML_TYPE_F32);
        }
        ggml_format_name(ql, "skv_q_step-%d", il);
        ggml_set_output(ql);
        ggml_build_forward_expand(g.gf, ql);
        inp->q_last[li] = ql;
    }
    if (!inp->staged) {
        // dense regime: hand the last token's queries to the host (seed for the first decode step)
        ggml_tensor * ql = ggml_view_2d(ctx0, q_cur, q_cur->ne[0], q_cur->ne[1], q_cur->nb[1], (n_tokens - 1)*q_cur->nb[2]);
        ql = ggml_cont(ctx0, ql);
        if (ql->type != GGML_TYPE_F32) {
            ql = ggml_cast(ctx0, ql, GGML_TYPE_F32);
        }
        if (inp->q_shift) {
            ql = ggml_reshape_3d(ctx0, ql, q_cur->ne[0], q_cur->ne[1], 1);
            ql = ggml_reshape_2d(ctx0, skv_rope_query(g, *skv, il, ql, inp->q_shift), q_cur->ne[0], q_cur->ne[1]);
        }
        ggml_format_name(ql, "skv_q_last-%d", il);
        ggml_set_output(ql);
        ggml_build_forward_expand(g.gf, ql);
        inp->q_last[li] = ql;
        return false;
    }

    GGML_ASSERT((int32_t) n_tokens == inp->n_tok);

    // the ubatch's own tokens (the current token; a chunk's tokens) go into their slots of the staging rows
    {
        GGML_ASSERT(ggml_row_size(k_cur->type, k_cur->ne[0]) == k_cur->nb[1]);
        GGML_ASSERT(ggml_row_size(v_cur->type, v_cur->ne[0]) == v_cur->nb[1]);
        ggml_tensor * kc = ggml_view_2d(ctx0, k_cur, k_cur->ne[0]*k_cur->ne[1], n_tokens, k_cur->nb[2], 0);
        ggml_tensor * vc = ggml_view_2d(ctx0, v_cur, v_cur->ne[0]*v_cur->ne[1], n_tokens, v_cur->nb[2], 0);
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx0, l.stage_k, kc, inp->ring_idx));
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx0, l.stage_v, vc, inp->ring_idx));
    }

    // score the query against every semantic vector on the device: [n_scored, 1, nkv]. A KV head's score is the
    // sum over its query group, and sum_j (q_j . v) = (sum_j q_j) . v, so the group's queries are summed first
    // (one dot product per KV head instead of one per query head)
    {
        const int64_t vd = l.vec->ne[0]; // hd, or 2 hd for the bound summary (c, r)
        ggml_tensor * vec = ggml_view_3d(ctx0, l.vec, vd, inp->n_scored, nkv,
                l.vec->nb[1], l.vec->nb[2], 0);                     // [vd, n_scored, nkv]
        const int64_t n_gqa = q_cur->ne[1] / nkv;
        ggml_tensor * q = ggml_is_contiguous(q_cur) ? q_cur : ggml_cont(ctx0, q_cur);
        if (inp->q_shift) {
            if (q->type != GGML_TYPE_F32) {
                q = ggml_cast(ctx0, q, GGML_TYPE_F32);
            }
            q = skv_rope_query(g, *skv, il, q, inp->q_shift);
        }
        if (n_tokens > 1) {
            // a prefill chunk scores with its mean query (InfLLM's chunk query), for the next chunk's selection
            q = ggml_cont(ctx0, ggml_permute(ctx0, q, 1, 2, 0, 3));  // [n_tokens, hd, n_head]
            q = ggml_scale(ctx0, ggml_sum_rows(ctx0, q), 1.0f / n_tokens); // [1, hd, n_head]
            q = ggml_reshape_3d(ctx0, q, hd, q_cur->ne[1], 1);
        }
        if (vd == 2 * hd) {
            // the bound: (q, |q|) . (c, r) = q . c + |q| . r; the group sum below sums the |q_j|
            // gauss: (q, s/2 q^2) . (m, s2), times s after compute: s q . m + s^2/2 q^2 . s2 (s = kq_scale)
            q = ggml_reshape_3d(ctx0, q, hd, q_cur->ne[1], 1);
            if (q->type != GGML_TYPE_F32) {
                q = ggml_cast(ctx0, q, GGML_TYPE_F32);
            }
            ggml_tensor * q2 = skv->gauss_summary() ? ggml_scale(ctx0, ggml_sqr(ctx0, q), 0.5f * kq_scale)
                                                    : ggml_abs(ctx0, q);
            q = ggml_concat(ctx0, q, q2, 0);                        // [2 hd, n_head, 1]
        }
        if (n_gqa > 1 && !inp->per_head) {
            q = ggml_reshape_3d(ctx0, q, vd, n_gqa, nkv);          // [vd, gqa, nkv]
            q = ggml_cont(ctx0, ggml_permute(ctx0, q, 1, 0, 2, 3)); // [gqa, vd, nkv]
            q = ggml_sum_rows(ctx0, q);                             // [1, vd, nkv]
        }
        // per_head (gqa_agg max / heads): one score per query head, [n_scored, gqa, nkv], query head h * gqa + g
        q = ggml_reshape_3d(ctx0, q, vd, inp->per_head ? n_gqa : 1, nkv); // [vd, 1 or gqa, nkv]
        ggml_tensor * sc = ggml_mul_mat(ctx0, vec, q);                    // [n_scored, 1 or gqa, nkv]
        ggml_format_name(sc, "skv_scores-%d", il);
        ggml_set_output(sc);
        ggml_build_forward_expand(g.gf, sc);
        inp->scores[li] = sc;
    }

    *k = ggml_view_3d(ctx0, l.stage_k, hd, nkv, inp->n_att,
            ggml_row_size(l.stage_k->type, hd), l.stage_k->nb[1], 0);
    if (inp->remap && skv->hparams.has_rope(il)) {
        *k = skv_rotate_staged(g, *skv, l, il, inp, li);
    }
    *v = ggml_view_3d(ctx0, l.stage_v, hdv, nkv, inp->n_att,
            ggml_row_size(l.stage_v->type, hdv), l.stage_v->nb[1], 0);
    if (inp->now) {
        // the same-step selection: an op after the scores re-places the staging rows; K and V are read through
        // it, so the layer's attention runs after it (never with remap: select_now_for)
        *k = ggml_map_custom2_inplace(ctx0, *k, inp->scores[li], skv_select_now_op, 1, &skv->now_args[li]);
        *v = ggml_map_custom2_inplace(ctx0, *v, *k, skv_after_now_op, 1, nullptr);
    }
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

// queries read back as the cache keeps them: times the model's kq_scale
static void skv_scaled(const std::vector<float> & q, float scale, std::vector<float> & out) {
    out.resize(q.size());
    for (size_t i = 0; i < q.size(); ++i) {
        out[i] = q[i] * scale;
    }
}

void llama_skv_cache::after(llm_graph_input_skv * inp, const llama_ubatch & ubatch) {
    expect_after = false;
    const int64_t t0 = ggml_time_us();
    struct timer { int64_t t0; int64_t & out; ~timer() { out = ggml_time_us() - t0; } } timer_{t0, stats.t_after_us_last};
    if (debug == 2 && inp->staged && inp->n_tok == 1) {
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
            // the ubatch's own rows went to the device in-graph: mirror them so a later upload keeps them
            for (int32_t j = 0; j < cur_n; ++j) {
                const int32_t c = cell_of(ubatch.pos[j]);
                const size_t slot = (size_t) (cur_slot + j);
                for (auto & l : layers) {
                    for (int32_t h = 0; c >= 0 && h < n_head_kv; ++h) {
                        memcpy(l.shadow_k.data() + slot * l.stage_k->nb[1] + h * k_row,
                               (const char *) l.k->data + (size_t) c * l.k->nb[1] + h * k_row, k_row);
                        memcpy(l.shadow_v.data() + slot * l.stage_v->nb[1] + h * v_row,
                               (const char *) l.v->data + (size_t) c * l.v->nb[1] + h * v_row, v_row);
                    }
                }
            }
        }
        const bool chunk = ubatch.n_tokens > 1;
        if (closed || chunk || params.query_mode == LLAMA_SKV_QUERY_LAST) {
            reset_query(); // a chunk's mean query alone chooses the next chunk's sentences (and query last: the step's)
        }
        for (size_t li = 0; li < layers.size(); ++li) {
            ggml_tensor * t = inp->scores.size() > li ? inp->scores[li] : nullptr;
            if (!t || inp->n_scored == 0) {
                continue;
            }
            const float * s = (const float *) t->data; // host memory: read in place
            if (!ggml_backend_buffer_is_host(t->buffer)) {
                buf.resize(ggml_nelements(t));
                ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
                s = buf.data();
            }
            if (inp->per_head) {
                add_head_scores(layers[li], s, (size_t) inp->n_scored, std::min(inp->n_scored, n_vec), inp->kq_scale);
            } else {
                add_scores(layers[li], s, (size_t) inp->n_scored, std::min(inp->n_scored, n_vec), inp->kq_scale);
            }
        }
        n_query = chunk ? std::max(n_query + 1, params.min_query_tokens) : n_query + 1;
        if (inp->q_out && !chunk) {
            // the oracle with lag: the next step selects from this step's true attention
            for (size_t li = 0; li < layers.size(); ++li) {
                ggml_tensor * t = inp->q_last.size() > li ? inp->q_last[li] : nullptr;
                auto & l = layers[li];
                if (!t) {
                    continue;
                }
                buf.resize(ggml_nelements(t));
                ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
                skv_scaled(buf, inp->kq_scale, l.oracle_q);
            }
            oracle_pos = p_last + 1;
        }
    } else {
        stats.n_dense_steps++;
        stats.positions_remapped = 0;
        stats.max_position       = p_last;
        const bool prefill = ubatch.n_tokens > 1;
        if (closed || prefill || params.query_mode == LLAMA_SKV_QUERY_LAST) {
            reset_query();
        }
        // the oracle's dense pass: this step's queries as the model scores them (not turned to a fixed distance)
        // (with lag: for the next step; a prefill's last token too)
        const bool keep_oracle = (!prefill || oracle_lag()) && params.oracle != LLAMA_SKV_ORACLE_OFF && !inp->q_shift;
        if (keep_oracle) {
            oracle_pos = oracle_lag() ? p_last + 1 : p_last;
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
            if (keep_oracle) {
                skv_scaled(buf, inp->kq_scale, l.oracle_q);
            }
            if (prefill) {
                skv_scaled(buf, inp->kq_scale, l.seed_q);
            } else {
                if (per_head_scores()) {
                    score_host_heads(l, buf.data(), inp->kq_scale, head_scratch);
                    add_head_scores(l, head_scratch.data(), (size_t) sent_cap, n_vec, 1.0f);
                } else {
                    score_host(l, buf.data(), inp->kq_scale, sc);
                    add_scores(l, sc.data(), (size_t) sent_cap, n_vec, 1.0f);
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
