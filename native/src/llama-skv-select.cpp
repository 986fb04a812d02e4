// SentenceKV selection and the staged decode step: which entries each layer and head attend, and what is
// staged for the step (prepare, in named steps).

#include "llama-skv-cache.h"

#include <algorithm>
#include <cmath>
#include <numeric>

void llama_skv_cache::select_from(skv_layer & l, const std::vector<float> & sc) {
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
void llama_skv_cache::extend_order(skv_layer & l) {
    for (int32_t id = n_vec - 1; id >= l.order_n; --id) {
        for (auto & ord : l.order) {
            ord.push_back({id, 0.0f, 0});
        }
    }
    l.order_n = std::max(l.order_n, n_vec);
}

// Prepare the staging for a decode step of the token at position p.
// Layout, per layer and KV head: the attended tokens in ascending position order (sink, selected sentence
// tokens, ring), then the current token (written in-graph) in the next slot. Position order makes the staged
// attention reduce in the same order as dense attention, so budget >= context reproduces it; only the slots
// from the first one that changed are rewritten.
void llama_skv_cache::prepare(int32_t p, llm_graph_input_skv * inp) {
    in_prepare = true;
    struct unflag { bool & b; ~unflag() { b = false; } } unflag_{in_prepare};

    begin_step(p);
    const bool use_sel = params.policy == LLAMA_SKV_POLICY_SENTENCE || params.policy == LLAMA_SKV_POLICY_CHUNK;
    if (use_sel) {
        choose_selection();
    }
    int64_t n_rows = 0;
    int32_t n_list = -1;
    for (auto & l : layers) {
        for (int32_t h = 0; h < n_head_kv; ++h) {
            attended_positions(l, h, p, use_sel, list_scratch);
            GGML_ASSERT(n_list < 0 || n_list == (int32_t) list_scratch.size());
            GGML_ASSERT((int32_t) list_scratch.size() < s_max);
            n_list = (int32_t) list_scratch.size();
            place_rows(l, h, p, list_scratch, n_rows);
        }
    }
    GGML_ASSERT(n_list >= 0);
    write_step_inputs(p, n_list, inp);

    stats.rows_uploaded_last   = n_rows;
    stats.rows_uploaded_total += n_rows;
    stats.attended_last        = n_list + 1;
}

// step 1: the state the step starts from (an unfinished step's staging forgotten, the ready entries closed)
void llama_skv_cache::begin_step(int32_t p) {
    if (expect_after) {
        forget_staging(); // the last staged step did not finish: its in-graph row may be missing
    }
    n_cached = std::max(n_cached, p);
    set_chunk_mode(params.policy == LLAMA_SKV_POLICY_CHUNK);
    if (close_ready(p)) {
        // a query sentence closed: its accumulated scores no longer describe the current sentence
        reset_query();
    }
}

// step 2: the selection order of every layer and head, from the scores accumulated through step p-1 (one-step
// lag), else from the prefill's seed, else most recent first
void llama_skv_cache::choose_selection() {
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
        take(idx.open_start_active(), p);
    }
    // the full order is kept (a kept selection must give every head the same candidates); the
    // reported selection lists the entries that got tokens
    auto & sel = l.sel[h];
    sel.clear();
    if (use_sel && has_sel) {
        if (h == 0) {
            extend_order(l);
        }
        const auto & tab = idx.active();
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
}

// step 4: the rows of `list` into the head's staging slots (rows that stay selected keep their slot, only new
// positions are copied), the current token's slot right after them
void llama_skv_cache::place_rows(skv_layer & l, int32_t h, int32_t p, const std::vector<int32_t> & list, int64_t & n_rows) {
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

// step 5: the mask (one plane for every head), the upload of the staged rows, the current token's ring slot
void llama_skv_cache::write_step_inputs(int32_t p, int32_t n_list, llm_graph_input_skv * inp) {
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
}
