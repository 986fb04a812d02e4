// SentenceKV selection and the staged decode step: which entries each layer and head attend, and what is
// staged for the step (prepare, in named steps).

#include "llama-skv-cache.h"

#include <algorithm>
#include <cmath>

// the selection order is a stable descending sort of the scores (ties: the lower id first), built lazily: a
// step reads only the first few dozen entries, so each head keeps a sorted prefix and extends it from the
// snapshot of the scores on demand (one selection pass, O(n)), never sorting all n entries
static inline bool skv_better(const float * s, int32_t a, int32_t b) {
    return s[a] > s[b] || (s[a] == s[b] && a < b);
}

// a choice made from acc reads acc in place (acc then changes only through add_scores and reset_query, which keep
// the choice's scores as its snapshot when they must); from other scores (a seed) it keeps a copy
void llama_skv_cache::select_from(skv_layer & l, const std::vector<float> & sc) {
    const int32_t n = n_vec;
    l.snap_from_acc = &sc == &l.acc;
    if (!l.snap_from_acc) {
        l.snap.resize((size_t) n_head_kv * n);
        for (int32_t h = 0; h < n_head_kv; ++h) {
            std::copy_n(sc.data() + (size_t) h * sent_cap, n, l.snap.data() + (size_t) h * n);
        }
        l.snap_stride = n;
    }
    for (int32_t h = 0; h < n_head_kv; ++h) {
        auto & hint = l.hint[h];
        hint.clear();
        for (const skv_pick & pk : l.order[h]) {
            hint.push_back(pk.id);
        }
        l.order[h].clear();
    }
    l.tail.clear();
    l.order_n = n;
    l.scored_n = n;
}

// head h's scores of the current choice ([0, scored_n))
const float * llama_skv_cache::choice_scores(const skv_layer & l, int32_t h) const {
    return l.snap_from_acc ? l.acc.data() + (size_t) h * sent_cap : l.snap.data() + (size_t) h * l.snap_stride;
}

// acc += scale * s (head h's nv scores at s + h * stride). When the choice reads acc, the sums go to the other
// buffer, which becomes acc, and the choice keeps the old one as its snapshot: a choice kept over the next steps
// (a query sentence just closed) orders from the scores it was made from, without a copy per step
void llama_skv_cache::add_scores(skv_layer & l, const float * s, size_t stride, int32_t nv, float scale) {
    const size_t cap = (size_t) sent_cap;
    float * dst = l.acc.data();
    if (l.snap_from_acc) {
        l.snap.resize(l.acc.size());
        dst = l.snap.data();
    }
    const float * src = l.acc.data();
    const int32_t n_q = n_head / n_head_kv;
    for (int32_t h = 0; h < n_head_kv; ++h) {
        const float * sh = s + (size_t) h * stride;
        const float * a  = src + (size_t) h * cap;
        float       * d  = dst + (size_t) h * cap;
        for (int32_t i = 0; i < nv; ++i) {
            d[i] = a[i] + sh[i] * scale + len_term(i, n_q); // gauss: + n_q log n (scores taken in-graph)
        }
        if (d != a) {
            std::copy(a + nv, a + cap, d + nv);
        }
    }
    if (l.snap_from_acc) {
        std::swap(l.acc, l.snap);
        l.snap_from_acc = false;
        l.snap_stride   = (int32_t) cap;
    }
}

// entries the first extension of a prefix orders: about twice those that fill n_slot tokens at the mean entry length,
// or a quarter more than a head of the last step needed (the best-scored entries are often the short ones: a mean
// over fewer keys strays further), so that one pass over the scores usually fills the budget
static int32_t skv_first_batch(int32_t n_slot, int32_t n_cached, int32_t n_entries, int32_t last_need) {
    const int32_t mean = n_entries > 0 ? std::max(1, n_cached / n_entries) : 1;
    return std::max({16, 2 * n_slot / mean + 8, last_need + last_need / 4 + 8});
}

// the next `k` entries of head h's order after the last one ordered; false when every scored entry is ordered.
// One pass over the scores into a candidate buffer of 2k: an entry joins when it is no worse than the bar (the k-th
// best kept so far, or a first bar from the last step's choice); a full buffer is cut back to its best k
// (nth_element) and the k-th becomes the bar. O(n) with a pass that mostly compares against two registers, where a
// bounded heap paid O(log k) per entry that got in (~k ln(n/k) of them).
// The result is the set of the k best under skv_better, a strict total order: the same in any scan order.
bool llama_skv_cache::order_more(skv_layer & l, int32_t h, int32_t k) {
    auto & ord = l.order[h];
    const int32_t n = l.scored_n;
    if ((int32_t) ord.size() >= n) {
        return false;
    }
    const float * s = choice_scores(l, h);
    const bool have_last = !ord.empty();
    const int32_t last = have_last ? ord.back().id : -1;
    auto better = [s](int32_t a, int32_t b) { return skv_better(s, a, b); };
    std::vector<int32_t> & cand = cand_scratch;
    cand.clear();
    k = std::min(k, n - (int32_t) ord.size());
    if (k <= 0) {
        return false;
    }
    // an entry is a candidate when the last one ordered is better (the others are ordered already)
    auto fresh = [s, have_last, last](int32_t i) { return !have_last || skv_better(s, last, i); };
    auto cut = [&]() { // keep the best k; [0, k - 1) beat cand[k - 1]
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
        cand.resize(k);
    };
    bool    bar   = false; // an entry joins when it is the bar or beats it
    float   bar_s = 0.0f;
    int32_t bar_i = 0;
    const auto & hint = l.hint[h];
    if (!have_last && (int32_t) hint.size() >= k &&
        std::all_of(hint.begin(), hint.begin() + k, [n](int32_t id) { return id < n; })) {
        // the first bar: the worst, by today's scores, of the last choice's best k. The k best of any k entries
        // are no better than the k best of all, so every one of today's best k passes it; the choice moves
        // little from step to step, so few others do
        cand.assign(hint.begin(), hint.begin() + k);
        cut();
        bar   = true;
        bar_i = cand[k - 1];
        bar_s = s[bar_i];
        cand.clear();
    }
    for (int32_t i = 0; i < n; ++i) {
        const float v = s[i];
        if (bar && !(v > bar_s || (v == bar_s && i <= bar_i))) {
            continue;
        }
        if (!fresh(i)) {
            continue;
        }
        cand.push_back(i);
        if ((int32_t) cand.size() == 2 * k) {
            cut();
            bar   = true;
            bar_i = cand[k - 1];
            bar_s = s[bar_i];
        }
    }
    if ((int32_t) cand.size() > k) {
        cut();
    }
    std::sort(cand.begin(), cand.end(), better); // best first
    for (int32_t id : cand) {
        ord.push_back({id, s[id], 0});
    }
    return !cand.empty();
}

// entries closed after the selection was made join its end, most recent first, the same for every head
void llama_skv_cache::extend_order(skv_layer & l) {
    for (int32_t id = n_vec - 1; id >= l.order_n; --id) {
        l.tail.push_back(id);
    }
    l.order_n = std::max(l.order_n, n_vec);
}

// Prepare the staging for a decode step of the token at position p.
// Layout, per layer and KV head: the attended tokens in ascending position order (sink, selected sentence
// tokens, ring), then the current token (written in-graph) in the next slot. Position order makes the staged
// attention reduce in the same order as dense attention, so budget >= context reproduces it; only the slots
// from the first one that changed are rewritten.
// A sparse prefill chunk of m tokens at [p, p + m) is staged as a step at p (the same context: sink, sentences, the
// ring before p), its own tokens in the m slots after the context, each attending the context and the chunk's
// tokens up to itself (the mask is causal there).
void llama_skv_cache::prepare(int32_t p, int32_t m, llm_graph_input_skv * inp) {
    in_prepare = true;
    struct unflag { bool & b; ~unflag() { b = false; } } unflag_{in_prepare};
    const int64_t t0 = ggml_time_us();

    begin_step(p);
    step_gen++; // cell_in_step: cell lookups are valid for this step
    order_need_last = order_need;
    order_need      = 0;
    const bool use_sel = params.policy == LLAMA_SKV_POLICY_SENTENCE || params.policy == LLAMA_SKV_POLICY_CHUNK;
    if (use_sel) {
        choose_selection(p);
    }
    int64_t n_rows = 0;
    int32_t n_list = -1;
    int32_t max_q  = 0; // remap: the largest rank a head gives its query
    for (size_t li = 0; li < layers.size(); ++li) {
        auto & l = layers[li];
        if (dense_layer(li)) {
            for (auto & s : l.sel) {
                s.clear(); // attends every cached token (upstream's path), nothing staged
            }
            continue;
        }
        for (int32_t h = 0; h < n_head_kv; ++h) {
            attended_positions(l, h, p, use_sel, list_scratch);
            GGML_ASSERT(n_list < 0 || n_list == (int32_t) list_scratch.size());
            GGML_ASSERT((int32_t) list_scratch.size() + m <= inp->n_att);
            n_list = (int32_t) list_scratch.size();
            place_rows(l, h, p, m, list_scratch, n_rows);
            if (inp->remap) {
                const int32_t n_q = virtual_ranks(p, list_scratch, vrank_scratch);
                max_q = std::max(max_q, n_q);
                shift_rows(li, h, p, list_scratch, vrank_scratch, n_q, inp->n_att);
            }
        }
    }
    GGML_ASSERT(n_list >= 0);
    // the same-step selection: each layer's op in the graph chooses again from the step's own scores
    now_p      = inp->now ? p : -1;
    now_n_list = n_list;
    now_scored = inp->n_scored;
    now_scale  = inp->kq_scale;
    write_step_inputs(p, m, n_list, inp);

    stats.rows_uploaded_last   = n_rows;
    stats.rows_uploaded_total += n_rows;
    stats.attended_last        = n_list + m; // by the (last) query
    stats.positions_remapped   = inp->remap ? 1 : 0;
    stats.max_position         = inp->remap ? max_q + m - 1 : p + m - 1; // the (last) query's is the largest
    stats.t_prepare_us_last    = ggml_time_us() - t0;
}

// step 1: the state the step starts from (an unfinished step's staging forgotten, the ready entries closed)
void llama_skv_cache::begin_step(int32_t p) {
    if (expect_after) {
        forget_staging(); // the last staged step did not finish: its in-graph row may be missing
    }
    n_cached = std::max(n_cached, p);
    extend_ident();
    set_chunk_mode(params.policy == LLAMA_SKV_POLICY_CHUNK);
    if (close_ready(p)) {
        // a query sentence closed: its accumulated scores no longer describe the current sentence
        reset_query();
    }
}

// step 2: the selection order of every layer and head, from the scores accumulated through step p-1 (one-step
// lag), else from the prefill's seed, else most recent first (the oracle: from the true attention of step p)
void llama_skv_cache::choose_selection(int32_t p) {
    if (oracle_sentences_mode() && oracle_ready(p)) {
        oracle_select(p);
        has_sel  = true;
        has_seed = false;
    } else if (n_query >= params.min_query_tokens) {
        for (auto & l : layers) {
            select_from(l, l.acc);
        }
        has_sel  = true;
        has_seed = false;
    } else if (has_seed) {
        // first step after a prefill: seeded from the last prefilled token's queries
        std::vector<float> sc;
        for (auto & l : layers) {
            if (per_head_scores()) {
                score_host_heads(l, l.seed_q.data(), 1.0f, head_scratch);
                derive_scores(head_scratch.data(), sc);
            } else {
                score_host(l, l.seed_q.data(), 1.0f, sc);
            }
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
            l.tail.clear();
            l.order_n  = 0;
            l.scored_n = 0;
        }
        has_sel = true;
    }
}

// step 3: the positions a layer's head attends, in position order: sink, the open entry outside the ring, the
// selected entries in descending score (whole, the last one cut), the ring; the reported selection (l.sel) lists
// the entries that got tokens
void llama_skv_cache::attended_positions(skv_layer & l, int32_t h, int32_t p, bool use_sel, std::vector<int32_t> & list) {
    const int32_t sink       = params.sink;
    const int32_t ring       = params.ring;
    const int32_t ring_start = std::max(sink, p - ring + 1); // the ring is [ring_start, p]
    const int32_t n_slot     = std::max(0, budget_eff() - sink - ring);
    std::vector<int32_t> & want = want_scratch;
    // sentence tokens: the open sentence outside the ring first (it is the current context), then the
    // selected entries in descending score, whole, the last one cut (earliest tokens kept). Each take() appends
    // one ascending run of positions; the runs are disjoint, so ordering the runs orders the tokens
    want.clear();
    auto & runs = run_scratch;
    runs.clear();
    auto take = [&](int32_t a, int32_t b) -> int32_t {
        a = std::max(a, sink);
        b = std::min(b, ring_start);
        const int32_t w0 = (int32_t) want.size();
        for (int32_t q = a; q < b && (int32_t) want.size() < n_slot; ++q) {
            if (cell_in_step(q) < 0) {
                continue; // removed from the cache (seq_rm in the middle)
            }
            want.push_back(q);
        }
        const int32_t got = (int32_t) want.size() - w0;
        if (got > 0) {
            runs.push_back({w0, got});
        }
        return got;
    };
    auto & sel = l.sel[h];
    sel.clear();
    const bool oracle_tok = use_sel && oracle_tokens_mode() && oracle_ready(p);
    if (oracle_tok) {
        // the oracle: the most attended tokens anywhere outside sink and ring, the open sentence's included
        oracle_tokens(l, h, p, sink, ring_start, n_slot);
    } else if (params.policy != LLAMA_SKV_POLICY_WINDOW) {
        take(idx.open_start_active(), p);
    }
    // the full order is kept (a kept selection must give every head the same candidates); the
    // reported selection lists the entries that got tokens
    if (use_sel && has_sel && !oracle_tok) {
        if (h == 0) {
            extend_order(l);
        }
        const auto & tab = idx.active();
        // neighbours: an entry taken brings the ones around it, so each take is marked (an entry is taken once)
        const int32_t nb = params.neighbours;
        if (nb > 0) {
            if (ent_mark.size() < tab.size()) {
                ent_mark.assign(tab.size() + 256, 0);
                ent_gen = 0;
            }
            ent_gen++;
        }
        // edge skip: entries passed over for not fitting whole; the room left at the end goes to them, cut, as
        // under `cut` (the mask is one plane: every head attends the same number of tokens)
        auto & skipped = skip_scratch;
        skipped.clear();
        bool cut_now = params.edge != LLAMA_SKV_EDGE_SKIP;
        auto take_entry = [&](int32_t id, float score) {
            if (id < 0 || id >= (int32_t) tab.size()) {
                return;
            }
            if (nb > 0) {
                if (ent_mark[id] == ent_gen) {
                    return;
                }
                ent_mark[id] = ent_gen;
            }
            const skv_span sp = tab[id];
            if (!cut_now) {
                const int32_t len = std::min(sp.p1, ring_start) - std::max(sp.p0, sink);
                if (len > n_slot - (int32_t) want.size()) {
                    skipped.push_back({id, score, 0});
                    if (nb > 0) {
                        ent_mark[id] = 0; // not taken
                    }
                    return;
                }
            }
            const int32_t got = take(sp.p0, sp.p1);
            if (got > 0) {
                sel.push_back({id, score, got});
            }
        };
        auto visit = [&](int32_t id, float score) {
            take_entry(id, score);
            for (int32_t d = 1; d <= nb; ++d) {
                for (const int32_t j : {id - d, id + d}) {
                    const float sj = j >= 0 && j < l.scored_n ? choice_scores(l, h)[j] : 0.0f;
                    take_entry(j, sj);
                }
            }
        };
        int32_t batch = skv_first_batch(n_slot, n_cached, l.scored_n, order_need_last);
        size_t i = 0;
        for (; (int32_t) want.size() < n_slot && skipped.size() < 64; ++i) {
            if (i == l.order[h].size()) {
                if (!order_more(l, h, batch)) {
                    break;
                }
                batch *= 2;
            }
            visit(l.order[h][i].id, l.order[h][i].score);
        }
        order_need = std::max(order_need, (int32_t) i);
        for (size_t i = 0; i < l.tail.size() && (int32_t) want.size() < n_slot; ++i) {
            visit(l.tail[i], 0.0f);
        }
        cut_now = true;
        for (size_t i = 0; i < skipped.size() && (int32_t) want.size() < n_slot; ++i) {
            take_entry(skipped[i].id, skipped[i].score);
        }
    }
    std::sort(runs.begin(), runs.end(), [&want](const skv_run & x, const skv_run & y) {
        return want[x.start] < want[y.start];
    });

    list.clear();
    for (int32_t q = 0; q < std::min(sink, p); ++q) {
        list.push_back(q);
    }
    for (const skv_run & r : runs) {
        GGML_ASSERT(list.empty() || list.back() < want[r.start]); // no token staged twice
        list.insert(list.end(), want.begin() + r.start, want.begin() + r.start + r.n);
    }
    for (int32_t q = ring_start; q < p; ++q) {
        list.push_back(q);
    }
}

// step 4: the rows of `list` into the head's staging slots (rows that stay selected keep their slot, only new
// positions are copied), the slots of the ubatch's own m tokens [p, p + m) right after them
void llama_skv_cache::place_rows(skv_layer & l, int32_t h, int32_t p, int32_t m, const std::vector<int32_t> & list,
                                 int64_t & n_rows) {
    const int32_t n_list = (int32_t) list.size();
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
        auto & copies = copy_scratch;
        copies.clear();
        for (int32_t q : list) {
            if (mark[q] == mark_gen) {
                GGML_ASSERT(fi < free_slots.size());
                const int32_t s = free_slots[fi++];
                copies.push_back({s, q});
                sp[s] = q;
            }
        }
        write_rows(l, h, copies, n_rows);
    }
    for (int32_t j = 0; j < m; ++j) {
        sp[n_list + j] = p + j; // written in-graph by this step
    }
    for (int32_t s = n_list + m; s < (int32_t) sp.size() && sp[s] >= 0; ++s) {
        sp[s] = -1;
    }
}

// step 4b (remap): virtual positions. The head's attended tokens `list` (ascending) get virtual ranks and the query
// the rank n_q after them (virtual_ranks). RoPE scores depend on the distance only, so the query keeps its stored
// rotation (position p) and each staged key, stored rotated to its own position q = list[r], is turned by
// delta = (p - (n_q - ranks[r])) - q: the query then sees it at distance n_q - ranks[r] <= budget, inside the trained
// range.
// ORDER: list[r] gets rank r, the query n_list: sink, selected sentences and ring keep their order and, inside each
// run, their distances; the gaps between runs close.
// STACK: sink first and the open sentence + ring last as in ORDER, but every retrieved run ends at the same rank,
// the one right before the open sentence: each retrieved sentence sits at the same distance from the query whatever
// its place in the document (InfLLM keeps all its memory at one distance); runs may share ranks.
int32_t llama_skv_cache::virtual_ranks(int32_t p, const std::vector<int32_t> & list, std::vector<int32_t> & ranks) {
    const int32_t n_list = (int32_t) list.size();
    ranks.resize(n_list);
    if (params.remap_layout != LLAMA_SKV_LAYOUT_STACK) {
        for (int32_t r = 0; r < n_list; ++r) {
            ranks[r] = r;
        }
        return n_list;
    }
    // the head's runs, sorted by position: the retrieved ones (closed entries: before the open sentence), then the
    // open sentence's, if any (it starts at or after open0)
    const auto & runs = run_scratch;
    const auto & want = want_scratch;
    const int32_t open0  = std::max(idx.open_start_active(), params.sink);
    const int32_t n_sink = std::min(params.sink, p);
    int32_t w = 0; // the longest retrieved run
    for (const skv_run & rn : runs) {
        if (want[rn.start] < open0) {
            w = std::max(w, rn.n);
        }
    }
    int32_t i = 0;
    for (; i < n_sink; ++i) {
        ranks[i] = i;
    }
    for (const skv_run & rn : runs) {
        if (want[rn.start] >= open0) {
            break; // the open run and the ring follow
        }
        for (int32_t k = 0; k < rn.n; ++k) {
            ranks[i++] = n_sink + w - rn.n + k;
        }
    }
    const int32_t tail0 = n_sink + w - i; // the open sentence and the ring: consecutive after the retrieved zone
    for (; i < n_list; ++i) {
        ranks[i] = tail0 + i;
    }
    return tail0 + n_list;
}

void llama_skv_cache::shift_rows(size_t li, int32_t h, int32_t p, const std::vector<int32_t> & list,
                                 const std::vector<int32_t> & ranks, int32_t n_q, int32_t n_att) {
    const int32_t n_list = (int32_t) list.size();
    if ((int32_t) rank_scratch.size() != kv_size) {
        rank_scratch.assign(kv_size, 0);
    }
    for (int32_t r = 0; r < n_list; ++r) {
        rank_scratch[list[r]] = ranks[r];
    }
    if (k_shift_host.size() != layers.size()) {
        k_shift_host.resize(layers.size());
    }
    auto & out = k_shift_host[li];
    out.resize((size_t) n_head_kv * n_att);
    const auto & sp = layers[li].slot_pos[h];
    for (int32_t s = 0; s < n_att; ++s) {
        int32_t d = 0; // the ubatch's own tokens (slots from n_list) keep their rotation, as do the masked slots
        if (s < n_list) {
            const int32_t q = sp[s];
            d = (p - n_q + rank_scratch[q]) - q;
        }
        out[(size_t) h + (size_t) n_head_kv * s] = d;
    }
}

// step 5: the mask (one plane for every head; row j: the context and the ubatch's tokens up to j), the upload of
// the staged rows, the slots of the ubatch's own tokens
void llama_skv_cache::write_step_inputs(int32_t p, int32_t m, int32_t n_list, llm_graph_input_skv * inp) {
    const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f);
    const ggml_fp16_t ninf = ggml_fp32_to_fp16(-INFINITY);
    const int32_t n_att = inp->n_att;
    GGML_ASSERT(n_list + m <= n_att);
    mask_host.assign((size_t) n_att * m, ninf);
    for (int32_t j = 0; j < m; ++j) {
        std::fill_n(mask_host.begin() + (size_t) j * n_att, n_list + j + 1, zero);
    }
    if (debug == 2 && m == 1) {
        verify(p, n_list);
    }

    flush_staging();
    ggml_backend_tensor_set(inp->mask, mask_host.data(), 0, mask_host.size() * sizeof(ggml_fp16_t));
    for (size_t li = 0; inp->remap && li < inp->k_shift.size(); ++li) {
        if (inp->k_shift[li]) {
            ggml_backend_tensor_set(inp->k_shift[li], k_shift_host[li].data(), 0, ggml_nbytes(inp->k_shift[li]));
        }
    }
    slot_scratch.resize(m);
    for (int32_t j = 0; j < m; ++j) {
        slot_scratch[j] = n_list + j;
    }
    ggml_backend_tensor_set(inp->ring_idx, slot_scratch.data(), 0, m * sizeof(int64_t));

    expect_after = true;
    cur_slot     = n_list;
    cur_n        = m;
}
