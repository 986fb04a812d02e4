#pragma once

// The SentenceKV cache's internal types (see include/llama-skv.h for the public C API, llama-skv-impl.h for the
// hooks upstream calls). One concept a file, as llama.cpp's src/:
//   llama-skv-index.*    the sentence / chunk index (no ggml)
//   llama-skv-cache.cpp  the cache: attach, allocation, parameters, changes to the KV cache, the one-shot request
//   llama-skv-vectors.cpp semantic vectors on the device (sized by the index), host scoring
//   llama-skv-select.cpp selection and the staged decode step (prepare, in named steps)
//   llama-skv-stage.cpp  staging rows (host copies, device uploads)
//   llama-skv-graph.cpp  graph input, the attention hook, after compute
//   llama-skv-api.cpp    the flat C API
//   llama-skv-debug.cpp  benchmark fill and debug checks
//   llama-skv-fidelity.cpp the fidelity levers: per-query-head scores, the oracle selection
//
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
#include "llama-skv-index.h"

#include "llama-impl.h"
#include "llama-graph.h"

#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

class llama_kv_cache;

#define LLAMA_SKV_VERSION "0.2.0"

static constexpr int32_t SKV_PAD = 256;
// the largest prefill ubatch the sparse chunked prefill takes (past the trained length); larger ones run dense
static constexpr int32_t SKV_CHUNK_MAX = 512;

static inline int32_t skv_pad(int32_t n) {
    return ((n + SKV_PAD - 1) / SKV_PAD) * SKV_PAD;
}

llama_skv_params skv_default_params();
bool             skv_params_valid(const llama_skv_params & p);

// the graph input of one graph

struct llama_skv_cache;

class llm_graph_input_skv : public llm_graph_input_i {
public:
    explicit llm_graph_input_skv(llama_skv_cache * skv) : skv(skv) {}

    void set_input(const llama_ubatch * ubatch) override;
    bool can_reuse(const llm_graph_params & params) override;

    llama_skv_cache * skv;

    bool     staged   = false; // attention over the staging rows: a decode step, or a sparse prefill chunk
    int32_t  n_tok    = 1;     // tokens of the ubatch (> 1: a sparse prefill chunk)
    int32_t  s_max    = 0;
    int32_t  n_att    = 0;     // staging rows the graph attends (padded to 256, <= s_max)
    int32_t  n_scored = 0;     // semantic vectors scored in-graph (n_vec padded, <= sent_cap)
    uint64_t gen      = 0;     // staging buffer generation
    float    kq_scale = 1.0f;

    ggml_tensor * mask     = nullptr; // [n_att, n_tok] F16
    ggml_tensor * ring_idx = nullptr; // [n_tok] I64: the staging slots of the ubatch's own tokens
    bool          remap    = false;   // staged K rotated to virtual positions (remap_for)
    int32_t       score_d  = 0;       // score_dist() the graph was built for (> 0: q turned to that distance)
    ggml_tensor * q_shift  = nullptr; // score_d > 0: I32 [n_tok staged, 1 dense], score_d - the query's position

    std::vector<ggml_tensor *> k_shift; // per SKV layer (remap): I32 [n_head_kv * n_att], RoPE delta of each
                                        // (slot, head) row, index h + n_head_kv * slot

    bool    q_out    = false; // the step's queries are read back (oracle with lag)
    bool    per_head = false; // scores per query head (gqa_agg != sum): [n_scored, n_head] instead of [n_scored, nkv]
    int32_t dense_l  = 0;     // params.dense_layers the graph was built for
    bool    now      = false; // the entries are chosen inside the graph from the step's own query (select_now)
    bool    gauss    = false; // the graph scores (q, s/2 q^2) (summary gauss) rather than (q, |q|)

    std::vector<ggml_tensor *> scores; // per SKV layer: [n_scored, 1, n_head] F32 (staged regime)
    std::vector<ggml_tensor *> q_last; // per SKV layer: [head_dim, n_head] F32 (dense regime; staged with q_out)
};

struct skv_pick {
    int32_t id;
    float   score;
    int32_t n_tok;
};

struct skv_run {
    int32_t start; // first index in the head's wanted positions
    int32_t n;
};

struct skv_copy {
    int32_t slot;
    int32_t pos;
};

// the user data of one layer's in-graph selection op (select_at STEP*)
struct skv_now_arg {
    llama_skv_cache * skv;
    int32_t           li;
};

struct skv_layer {
    int32_t il;

    // the layer's RoPE as the graph applies it (set_rope): content vectors are means of keys turned back to
    // position 0 on the host
    bool                rope      = false;
    bool                rope_neox = false;
    int32_t             n_rot     = 0;
    std::vector<double> rope_freq; // [n_rot / 2] radians per position of each rotated pair

    ggml_tensor * k; // host cache
    ggml_tensor * v;

    ggml_tensor * vec     = nullptr; // [vec_dim, sent_cap, n_head_kv] on the device (head-major)
    ggml_tensor * stage_k = nullptr; // [n_embd_k_gqa, s_max]
    ggml_tensor * stage_v = nullptr; // [n_embd_v_gqa, s_max]

    std::vector<float> vec_host; // mirror of vec (same rounding), [sent_cap][n_head_kv * vec_dim]
    std::vector<float> acc;      // [n_head_kv][sent_cap] scores of the current query sentence
    std::vector<float> seed_q;   // [n_head][head_dim] queries of the last prefilled token (scaled)
    std::vector<float> acc_q;    // [n_head][sent_cap] per query head (gqa_agg != sum); acc is derived from it
    std::vector<float> oracle_q; // [n_head][head_dim] the last dense decode step's queries (scaled; oracle only)

    // the choice: every entry of [0, order_n) in selection order, per head: the scored ones [0, scored_n) by
    // descending score (a sorted prefix in `order`, extended on demand from `snap`), then `tail`
    std::vector<std::vector<skv_pick>> order;      // [n_head_kv] the sorted prefix of the scored entries
    std::vector<std::vector<int32_t>>  hint;       // [n_head_kv] the last choice's ordered prefix (order_more's first bar)
    std::vector<float>                 snap;       // [n_head_kv][snap_stride] the scores the choice was made from
    int32_t                            snap_stride   = 0;
    bool                               snap_from_acc = false; // the choice reads acc itself (no copy was made)
    std::vector<int32_t>               tail;       // entries closed after the choice, most recent first
    int32_t                            order_n  = 0;
    int32_t                            scored_n = 0;
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
    int32_t vec_dim   = 0; // floats of one KV head's entry vector: head_dim (mean), 2 * head_dim (bound: c, r;
                           // gauss: m, s2)
    std::vector<float> ent_logn; // [entries] gauss: log of the keys an entry's vector summarises
    int32_t s_max     = 0;
    uint64_t gen      = 0;
    bool    on_device = false;

    ggml_type type_k = GGML_TYPE_F16;
    ggml_type type_v = GGML_TYPE_F16;
    size_t    k_row  = 0; // bytes of one KV head's K row (host cache, staging): head_dim * size of type_k
    size_t    v_row  = 0; // the same for V
    ggml_type type_vec = GGML_TYPE_F16;

    ggml_backend_buffer_type_t buft = nullptr;

    ggml_context_ptr        ctx_vec;
    ggml_backend_buffer_ptr buf_vec;
    ggml_context_ptr        ctx_stage;
    ggml_backend_buffer_ptr buf_stage;

    std::vector<skv_layer> layers;

    // the index (sentence and chunk tables, llama-skv-index.h); its active table's vectors are on the device
    skv_index idx;
    int32_t n_vec      = 0;     // vectors computed for the active index
    bool    vec_dirty  = false; // every vector must be recomputed (positions moved)
    bool    vec_content = false; // the vectors are content vectors (means of keys at position 0: score_dist() > 0)
    bool    rope_known  = false; // set_rope ran (the graph's or the context's parameters)
    bool    rope_plain  = false; // every SKV layer's RoPE is a plain rotation the host can undo (no YaRN ramp,
                                 // no frequency factors): fixed-distance scores are possible

    // query state
    int32_t n_query   = 0;     // queries accumulated for the current query sentence
    bool    has_seed  = false; // seed scores pending for the next step
    bool    has_sel   = false;
    int32_t oracle_pos = -1;   // the position whose dense queries oracle_q holds (-1: none)

    int32_t n_cached  = 0;     // positions [0, n_cached) are in the cache
    bool    expect_after = false; // a staged step was prepared and has not finished yet
    int32_t cur_slot     = -1;    // first slot the last staged step wrote in-graph
    int32_t cur_n        = 0;     // slots it wrote (its tokens)

    std::vector<int32_t> mark;       // scratch [kv_size]: positions wanted by the current head
    int32_t              mark_gen = 0;
    std::vector<int32_t> free_slots; // scratch
    std::vector<int32_t> want_scratch; // scratch: a head's selected positions
    std::vector<int32_t> list_scratch; // scratch: a head's attended positions
    std::vector<int32_t> cand_scratch; // scratch: order_more's candidates
    int32_t order_need      = 0;       // the most entries of its order a head of this step visited
    int32_t order_need_last = 0;       // the same for the last step: the size of the first ordering batch
    std::vector<skv_run> run_scratch;  // scratch: a head's runs of wanted positions
    std::vector<int32_t> vrank_scratch; // scratch: remap, the virtual rank of each of a head's attended tokens
    std::vector<skv_copy> copy_scratch; // scratch: a head's rows to copy
    std::vector<ggml_fp16_t> vec_scratch; // scratch: one head's vectors in F16 on their way to the device
    std::vector<int64_t>  slot_scratch; // scratch: the slots of a ubatch's own tokens
    std::vector<float>    head_scratch; // scratch [n_head][sent_cap]: per-query-head scores (seed, dense step)
    std::vector<float>    derive_scratch; // scratch [n_head_kv][sent_cap]: scores derived for a choice
    std::vector<float>    oracle_w;     // scratch [p]: a head's true attention weights (oracle)
    std::vector<float>    oracle_k;     // scratch [p][head_dim]: a head's keys as F32 (oracle)
    std::vector<skv_pick> skip_scratch; // scratch: entries a head passed over (edge skip)
    std::vector<uint32_t> ent_mark;     // scratch [entries]: entries a head took this step (neighbours)
    uint32_t              ent_gen = 0;
    // cell lookups of one staged step (positions do not move inside prepare): memo_cell[pos] is valid when
    // memo_gen[pos] == step_gen
    std::vector<uint32_t> memo_gen;
    std::vector<int32_t>  memo_cell;
    uint32_t              step_gen = 0;

    std::vector<int32_t> pos2cell;
    // cells [0, n_ident) hold positions [0, n_ident) of sequence 0 (cell == position, as one append-only sequence
    // leaves them): a lookup there is the position itself. Grown by each step (extend_ident), cut by every change
    // that removes or moves cached positions (llama_skv_on_change)
    int32_t n_ident = 0;
    std::vector<ggml_fp16_t> mask_host;
    std::vector<int32_t> rank_scratch;               // [kv_size] remap: rank of a position in a head's list
    std::vector<std::vector<int32_t>> k_shift_host;  // [layer][n_head_kv * n_att] remap: the deltas uploaded

    // the same-step selection (select_at STEP*): what prepare() left for the in-graph op of each layer
    std::vector<skv_now_arg> now_args;     // [layers] the ops' user data (stable while a graph holds it)
    int32_t                  now_p      = -1;
    int32_t                  now_n_list = 0;
    int32_t                  now_scored = 0;
    float                    now_scale  = 1.0f;
    std::vector<float>       now_scores;   // scratch [n_head_kv][sent_cap]
    std::vector<float>       now_heads;    // scratch [n_head][sent_cap] (per-query-head scores)
    std::vector<int32_t>     now_list;     // scratch: a head's attended positions

    llama_skv_stats stats = {};

    bool warned_cap = false;
    int  debug      = 0; // env LLAMA_SKV_DEBUG

    llama_skv_cache(const llama_model & model, const llama_hparams & hparams, const llama_kv_cache & kv)
        : model(model), hparams(hparams), kv(kv) {}

    // a ubatch of n_tokens at positions [p0, p0 + n_tokens) attends staging rows: every decode step (policy != full),
    // and a prefill chunk that reaches past the trained length when remapping is not off (sparse chunked prefill)
    bool staged_regime(uint32_t n_tokens, int32_t p0) const {
        if (params.policy == LLAMA_SKV_POLICY_FULL || n_tokens == 0) {
            return false;
        }
        if (n_tokens == 1) {
            return true;
        }
        return params.remap_positions != LLAMA_SKV_REMAP_OFF && p0 + (int32_t) n_tokens > (int32_t) hparams.n_ctx_train &&
               (int32_t) n_tokens <= chunk_room();
    }

    // staging rows left for a chunk's own tokens beyond the step's attended context (0: no sparse prefill)
    int32_t chunk_room() const {
        return std::max(0, s_max - (att_cap() - 1));
    }

    // attended tokens of a decode step at most (sink, ring and sentences; the current token included)
    int32_t att_cap() const {
        return params.policy == LLAMA_SKV_POLICY_WINDOW ? params.sink + params.ring : budget_eff();
    }

    int32_t budget_eff() const {
        return std::min(params.budget, kv_size);
    }

    // staging rows a decode step at position p attends, padded like upstream n_kv (so that a budget covering the
    // context reduces exactly like dense attention, chunk for chunk)
    // a staged step at p gives its tokens virtual positions (native/README.md, "Positions past the trained length")
    bool remap_for(int32_t p) const {
        return params.remap_positions == LLAMA_SKV_REMAP_ON ||
               (params.remap_positions == LLAMA_SKV_REMAP_AUTO && p >= (int32_t) hparams.n_ctx_train);
    }

    // (a chunk of m tokens at p attends the context of a step at p, up to att_cap() - 1 rows, then its own m)
    int32_t n_att_for(int32_t p, int32_t m = 1) const {
        return std::min(s_max, skv_pad(std::min(p + m, att_cap() - 1 + m)));
    }

    // the distance every sentence is scored at (native/README.md, "Scores at a fixed distance"); 0: its own
    int32_t score_dist() const {
        if (!rope_known || !rope_plain) {
            return 0;
        }
        if (params.score_distance != LLAMA_SKV_SCORE_AUTO) {
            return params.score_distance;
        }
        const bool can_remap = params.remap_positions == LLAMA_SKV_REMAP_ON ||
            (params.remap_positions == LLAMA_SKV_REMAP_AUTO && kv_size > (int32_t) hparams.n_ctx_train);
        return can_remap ? std::max(1, att_cap() / 2) : 0;
    }

    // the cache (llama-skv-cache.cpp): state, positions -> cells, parameters
    void reset();
    // the choice and the reported selection of every layer and head
    void forget_selection();
    void reset_query();
    // close the sentences whose tokens are all in [0, n)
    // returns true if at least one entry of the active index was added
    bool close_ready(int32_t n);
    void set_chunk_mode(bool on);
    void rebuild_pos2cell();
    int32_t cell_of(int32_t pos);
    int32_t cell_in_step(int32_t pos); // cell_of, memoised for the current staged step
    void extend_ident();
    bool set_params(const llama_skv_params & p);
    int64_t host_kv_bytes() const;

    // semantic vectors (llama-skv-vectors.cpp)
    // an upper bound on the entries of either index after the prepare() of a decode step at position p
    int32_t entries_bound(int32_t p) const;
    // the vector table must hold what the step at p may close before its graph is built (its graph reads it)
    bool vec_fits_step(int32_t p) const;
    void reserve_for_step(int32_t p);
    // grow the vector table to hold n entries (padded; by at least an eighth, so growth is amortised): new device
    // tensors, the vectors uploaded again from the host mirror, the scores re-laid out. Only between graphs: a
    // built graph keeps the old tensors (gen changes, so it is not reused).
    void reserve_vec(int32_t n);
    // new tables of sent_cap rows (a new cap, or a new vec_dim), the vectors uploaded again from the host mirror
    void realloc_vec(int32_t cap);
    // the summary changed (mean <-> bound): tables of the other width, every vector recomputed at the next step
    void set_vec_dim(int32_t d);
    ggml_tensor * new_vec_table(ggml_context * ctx, int32_t il, int32_t cap) const;
    void upload_vectors(skv_layer & l, int32_t i0, int32_t i1);
    // the RoPE of every SKV layer under the context's parameters (the graph's hook and the API calls that close
    // sentences call it; the rotation the host undoes for content vectors)
    void set_rope(const llama_cparams & cp);
    // a post-RoPE K row [n_head_kv * head_dim] of the token at pos turned back to position 0 (its pre-RoPE key)
    void unrope_row(const skv_layer & l, float * row, int32_t pos) const;
    void compute_vector(skv_layer & l, int32_t idx, skv_span s);
    void update_vectors();
    void score_host(const skv_layer & l, const float * q, float scale, std::vector<float> & out) const;
    // scale * (q . v_i) for KV head h's vectors of every entry i < n_vec, into out[0, n_vec); with the bound
    // summary v_i = (c_i, r_i) and the score scale * (q . c_i + qa . r_i), qa the summed |q| of the group
    // gauss: v_i = (m_i, s2_i), qa the summed q_j^2 of the n_q query heads, score scale * q . m_i +
    // scale^2 / 2 * qa . s2_i + n_q * log n_i
    void score_vectors(const skv_layer & l, int32_t h, const float * q, const float * qa, float scale, float * out,
                       int32_t n_q = 1) const;
    bool bound_summary() const { return vec_dim == 2 * head_dim && params.summary == LLAMA_SKV_SUMMARY_BOUND; }
    bool gauss_summary() const { return vec_dim == 2 * head_dim && params.summary == LLAMA_SKV_SUMMARY_GAUSS; }
    // gauss: n_q * log n of entry i (n_q query heads summed into the score), else 0
    float len_term(int32_t i, int32_t n_q) const {
        return gauss_summary() && i < (int32_t) ent_logn.size() ? n_q * ent_logn[i] : 0.0f;
    }

    // fidelity levers (llama-skv-fidelity.cpp)
    bool per_head_scores() const { return params.gqa_agg != LLAMA_SKV_GQA_SUM; }
    bool oracle_lag() const {
        return params.oracle == LLAMA_SKV_ORACLE_TOKENS_LAG || params.oracle == LLAMA_SKV_ORACLE_SENTENCES_LAG;
    }
    bool oracle_tokens_mode() const {
        return params.oracle == LLAMA_SKV_ORACLE_TOKENS || params.oracle == LLAMA_SKV_ORACLE_TOKENS_LAG;
    }
    bool oracle_sentences_mode() const {
        return params.oracle == LLAMA_SKV_ORACLE_SENTENCES || params.oracle == LLAMA_SKV_ORACLE_SENTENCES_LAG;
    }
    bool dense_layer(size_t li) const { return (int32_t) li < params.dense_layers; }
    // per-query-head scores s (head j's nv scores at s + j * stride) times scale into acc_q, then acc derived
    void add_head_scores(skv_layer & l, const float * s, size_t stride, int32_t nv, float scale);
    // per-query-head scores [n_head][sent_cap] -> one score per KV head [n_head_kv][sent_cap] (max, or rank merge)
    void derive_scores(const float * heads, std::vector<float> & out);
    // acc replaced by src ([n_head_kv][sent_cap]), keeping a choice that reads acc (as add_scores does)
    void set_scores(skv_layer & l, const std::vector<float> & src);
    void score_host_heads(const skv_layer & l, const float * q, float scale, std::vector<float> & out) const;
    // the oracle: the dense queries of the step at p are known (a dense pass at p came first)
    bool oracle_ready(int32_t p) const;
    // head h's true attention weights over [0, p), summed over its query group (softmax per query head)
    void oracle_weights(const skv_layer & l, int32_t h, int32_t p, std::vector<float> & w);
    // every layer's choice from the entries' attention mass (oracle sentences)
    void oracle_select(int32_t p);
    // head h's most attended tokens of [lo, hi) into `want` as ascending runs (oracle tokens); returns the count
    int32_t oracle_tokens(skv_layer & l, int32_t h, int32_t p, int32_t lo, int32_t hi, int32_t room);

    // the same-step selection (llama-skv-fidelity.cpp): a decode step at p whose entries the graph chooses, per
    // layer, from the step's own query (the policy selects; a CPU build; no remapped positions)
    bool select_now_for(int32_t p, int32_t m) const;
    // inside the graph, after layer li's scores: the layer's choice from them, its rows re-placed (prepare()'s
    // choice from the lagged scores is replaced; the count of attended tokens, hence the mask, stays)
    void select_now(int32_t li, const ggml_tensor * scores);

    // selection and the staged step (llama-skv-select.cpp)
    void select_from(skv_layer & l, const std::vector<float> & sc);
    const float * choice_scores(const skv_layer & l, int32_t h) const;
    void add_scores(skv_layer & l, const float * s, size_t stride, int32_t nv, float scale);
    // the next k entries of head h's selection order (false: every scored entry is ordered)
    bool order_more(skv_layer & l, int32_t h, int32_t k);
    // entries closed after the selection was made join its end, most recent first, the same for every head
    void extend_order(skv_layer & l);
    // set_input of a staged step (llama-skv-select.cpp): begin_step, choose_selection, per layer and head
    // attended_positions and place_rows, write_step_inputs
    // (a sparse prefill chunk: p its first position, m its tokens; a decode step: m = 1)
    void prepare(int32_t p, int32_t m, llm_graph_input_skv * inp);
    void begin_step(int32_t p);
    void choose_selection(int32_t p);
    void attended_positions(skv_layer & l, int32_t h, int32_t p, bool use_sel, std::vector<int32_t> & list);
    void place_rows(skv_layer & l, int32_t h, int32_t p, int32_t m, const std::vector<int32_t> & list, int64_t & n_rows);
    // remap: the virtual rank of each attended token of the head whose list attended_positions just built (its runs
    // still in the scratch), under params.remap_layout; returns the query's rank
    int32_t virtual_ranks(int32_t p, const std::vector<int32_t> & list, std::vector<int32_t> & ranks);
    // remap: the RoPE delta of each staged row of head h, so that the query at p (rank n_q) sees list[r] at
    // distance n_q - ranks[r]
    void shift_rows(size_t li, int32_t h, int32_t p, const std::vector<int32_t> & list, const std::vector<int32_t> & ranks,
                    int32_t n_q, int32_t n_att);
    void write_step_inputs(int32_t p, int32_t m, int32_t n_list, llm_graph_input_skv * inp);

    // staging (llama-skv-stage.cpp)
    void write_row(skv_layer & l, int32_t h, int32_t slot, int32_t pos, int64_t & n_rows);
    void write_rows(skv_layer & l, int32_t h, const std::vector<skv_copy> & copies, int64_t & n_rows);
    void copy_row(skv_layer & l, int32_t h, int32_t slot, int32_t c, int64_t & n_rows);
    void flush_staging();
    void forget_staging();
    bool alloc_stage();

    // after compute: scores read back and accumulated (llama-skv-graph.cpp)
    void after(llm_graph_input_skv * inp, const llama_ubatch & ubatch);

    // debug checks (llama-skv-debug.cpp)
    // env LLAMA_SKV_DEBUG=2: check every live staged row against the host cache and the order of positions
    void verify(int32_t p, int32_t n_list);
};

// the cache of a context (nullptr without SentenceKV)
llama_skv_cache * skv_of_ctx(llama_context * ctx);
