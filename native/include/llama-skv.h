// SentenceKV: sentence-level semantic KV cache for llama.cpp (Zhu et al., arXiv 2504.00970).
//
// The K/V of the full-attention layers ("SKV layers") live in host RAM. Every closed sentence keeps one semantic
// vector per SKV layer and KV head (the mean of its post-RoPE keys; where positions can be remapped, of its keys
// turned back to position 0, scored at a fixed distance) in a tensor on the layer's compute device, and a
// fixed-size staging K/V (S_max rows = budget padded to 256) sits beside it. A decode step (one token) of an SKV
// layer attends only the staged rows: sink + ring of recent tokens + the selected sentences' tokens, under a
// per-slot mask. Prefill (more than one token per ubatch) is dense, as upstream, below the trained length.
//
// Flat C API; every symbol is prefixed llama_skv_. Status codes returned by the int32_t functions:
//    0 (or a count >= 0) success
//   -1 LLAMA_SKV_ERR_NOT_ENABLED   the context has no SentenceKV cache
//   -2 LLAMA_SKV_ERR_INVALID       an argument is out of range (nothing was changed)
//   -3 LLAMA_SKV_ERR_INTERNAL      an internal failure (logged); the cache stays usable
#pragma once

#include "llama.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LLAMA_SKV_ERR_NOT_ENABLED (-1)
#define LLAMA_SKV_ERR_INVALID     (-2)
#define LLAMA_SKV_ERR_INTERNAL    (-3)

// disk/ABI values: never renumber
enum llama_skv_policy {
    LLAMA_SKV_POLICY_FULL     = 0, // dense attention over the whole cache (upstream behaviour)
    LLAMA_SKV_POLICY_WINDOW   = 1, // sink + ring only (StreamingLLM)
    LLAMA_SKV_POLICY_CHUNK    = 2, // fixed-size pseudo-sentences of the mean sentence length (ablation)
    LLAMA_SKV_POLICY_SENTENCE = 3, // SentenceKV
};

// disk/ABI values: never renumber. Positions past the model's trained length (native/README.md, "Positions past
// the trained length"): the attended tokens of a staged step are given virtual positions inside the trained range
enum llama_skv_remap {
    LLAMA_SKV_REMAP_OFF  = 0, // every token keeps its own position (upstream behaviour)
    LLAMA_SKV_REMAP_ON   = 1, // every staged step (a budget covering the context still gives the dense result)
    LLAMA_SKV_REMAP_AUTO = 2, // staged steps whose position is at or past the model's trained length
};

struct llama_skv_params {
    int32_t policy;           // enum llama_skv_policy
    int32_t budget;           // tau: tokens attended per decode step in an SKV layer, sink + ring included
    int32_t sink;             // first tokens always attended
    int32_t ring;             // most recent tokens always attended (the current token included)
    int32_t min_query_tokens; // queries of a new query sentence needed before the selection changes (>= 1)
    int32_t max_sentence_len; // longer sentences are split into pieces of at most this many tokens (>= 1)
    int32_t remap_positions;  // enum llama_skv_remap
    int32_t score_distance;   // LLAMA_SKV_SCORE_*, or > 0: score each sentence as if it sat this many positions
                              // before the query (native/README.md, "Scores at a fixed distance")
    int32_t remap_layout;     // enum llama_skv_layout: where remapped retrieved sentences sit
    // fidelity levers (native/README.md, "Fidelity levers"); the defaults keep the paper's selection
    int32_t query_mode;       // enum llama_skv_query: which queries score the entries
    int32_t gqa_agg;          // enum llama_skv_gqa: how a KV head's query group is turned into one score
    int32_t dense_layers;     // the first n SKV layers attend every cached token on decode steps (0: none)
    int32_t edge;             // enum llama_skv_edge: an entry that does not fit the budget whole
    int32_t neighbours;       // a selected entry brings this many entries before and after it (0..4)
    int32_t oracle;           // enum llama_skv_oracle: diagnostics only (needs the step's dense queries)
    int32_t summary;          // enum llama_skv_summary: what an entry's vector holds of its keys
    int32_t exclude_sink;     // 1: an entry's vector leaves out its tokens inside the sink (always attended anyway;
                              // the first tokens' keys draw every query and made the document's first entry a hub)
    int32_t select_at;        // enum llama_skv_select: which step's queries choose the entries a step attends
};

// disk/ABI values: never renumber. When a staged decode step's entries are chosen
enum llama_skv_select {
    LLAMA_SKV_SELECT_LAG           = 0, // before the graph, from the scores through the step before (one-step lag)
    LLAMA_SKV_SELECT_STEP          = 1, // inside the graph, per layer, from the step's own query (its in-graph
                                        // scores); a CPU build, steps without remapped positions (else LAG)
    LLAMA_SKV_SELECT_STEP_SENTENCE = 2, // the same, from the current query sentence's scores plus the step's own
};

// disk/ABI values: never renumber. An entry's summary of its keys, scored against the query
enum llama_skv_summary {
    LLAMA_SKV_SUMMARY_MEAN  = 0, // the mean key (the paper's semantic vector): score q . mean
    LLAMA_SKV_SUMMARY_BOUND = 1, // Quest's bound: per dimension the keys' centre c and half range r, score
                                 // q . c + |q| . r = sum_d max(q_d min_d, q_d max_d) >= every key's q . k
    LLAMA_SKV_SUMMARY_GAUSS = 2, // the entry's attention mass if its keys were Gaussian (per dimension mean m and
                                 // variance s2, n keys): log sum_t exp(q.k_t) ~ log n + q.m + q^2.s2 / 2
};

// disk/ABI values: never renumber. The queries an entry's score sums
enum llama_skv_query {
    LLAMA_SKV_QUERY_SENTENCE = 0, // every query of the current query sentence (the paper's mean)
    LLAMA_SKV_QUERY_LAST     = 1, // the last decoded token's query alone (the step before: one-step lag)
};

// disk/ABI values: never renumber. One score per KV head from its group of query heads
enum llama_skv_gqa {
    LLAMA_SKV_GQA_SUM   = 0, // the sum of the group's dot products
    LLAMA_SKV_GQA_MAX   = 1, // the largest of the group's (accumulated) dot products (ShadowKV)
    LLAMA_SKV_GQA_HEADS = 2, // each query head's own order, merged rank by rank into the KV head's budget
};

// disk/ABI values: never renumber. The last selected entry when the budget cannot hold it whole
enum llama_skv_edge {
    LLAMA_SKV_EDGE_CUT  = 0, // cut, its earliest tokens kept
    LLAMA_SKV_EDGE_SKIP = 1, // skipped for the next entries that fit whole
};

// disk/ABI values: never renumber. An oracle selection (benchmarks: what a perfect score would choose). It needs the
// queries of the step itself: decode the token under policy full first, remove it (seq_rm) and decode it again
// under a sparse policy with the oracle set; the second pass selects from the first pass's true attention
enum llama_skv_oracle {
    LLAMA_SKV_ORACLE_OFF       = 0,
    LLAMA_SKV_ORACLE_TOKENS    = 1, // per layer and KV head, the tokens of most attention (summed over the group)
    LLAMA_SKV_ORACLE_SENTENCES = 2, // whole entries by their attention mass, filled as the policy fills them
    // the same from the previous step's queries (one-step lag, as the policy's own scores): no dense pass needed;
    // an exact top-k over the whole context on the host, so a method, not only a bound (its cost grows with it)
    LLAMA_SKV_ORACLE_TOKENS_LAG    = 3,
    LLAMA_SKV_ORACLE_SENTENCES_LAG = 4,
};

// disk/ABI values: never renumber. Where a remapped step puts the retrieved sentences (native/README.md,
// "Positions past the trained length")
enum llama_skv_layout {
    LLAMA_SKV_LAYOUT_ORDER = 0, // in their original order, compressed, right before the open sentence and ring
    LLAMA_SKV_LAYOUT_STACK = 1, // each one ending right before the open sentence and ring: every retrieved
                                // sentence at the same distance from the query (InfLLM's memory at one distance)
};

// score_distance values (disk/ABI: never renumber); a value > 0 is the distance itself
enum llama_skv_score {
    LLAMA_SKV_SCORE_AUTO = -1, // a fixed distance of budget / 2 where positions can be remapped (remap_positions
                               // on, or auto in a context longer than the trained length), else the real one
    LLAMA_SKV_SCORE_REAL =  0, // each sentence at its own distance: the mean of its post-RoPE keys (the paper)
};

struct llama_skv_stats {
    int64_t host_kv_bytes;        // K/V bytes of the SKV layers, read from their (host) buffers
    int64_t device_vec_bytes;     // semantic-vector buffer bytes (on the layers' device)
    int64_t device_stage_bytes;   // staging K/V buffer bytes (on the layers' device)
    int64_t full_kv_bytes;        // K/V bytes of every layer of the context's cache (SKV and others)
    int64_t rows_uploaded_last;   // staged (row, head) copies written before the last decode step
    int64_t rows_uploaded_total;  // the same, summed since the context was created
    int64_t n_skv_steps;          // decode ubatches that ran the staged path
    int64_t n_dense_steps;        // ubatches that ran dense attention (prefill, policy full)
    int32_t attended_last;        // rows attended per SKV layer and head in the last staged step
    int32_t s_max;                // staging rows per layer (budget padded to 256)
    int32_t n_sentences;          // closed entries of the active index (sentences or chunks)
    int32_t n_layers;             // SKV layers
    int32_t n_head_kv;            // KV heads of an SKV layer
    int32_t head_dim;             // K head size of an SKV layer
    int32_t sent_cap;             // rows of the semantic-vector table now (it grows with the index)
    int32_t on_device;            // 1 if vectors + staging sit in a non-host (GPU) buffer
    int64_t t_prepare_us_last;    // host microseconds of the last staged step before compute (selection, staging)
    int64_t t_after_us_last;      // host microseconds of the last step after compute (scores read back, summed)
    int32_t positions_remapped;   // 1 if the last staged step gave its tokens virtual positions
    int32_t max_position;         // the largest position the last ubatch gave an attended token or a query
    int32_t score_distance;       // the distance the vectors are scored at now (0: each sentence's own)
};

// Version string of the native patch, e.g. "skv 0.2.0". Static storage; never NULL.
LLAMA_API const char * llama_skv_version(void);

LLAMA_API struct llama_skv_params llama_skv_default_params(void);

// Turn SentenceKV on for the NEXT context created in this process (one shot, consumed by its memory creation).
// sent_cap: the most entries the sentence table may hold (0: n_ctx); the vector table on the device starts at 256
// rows and grows with the index (by at least an eighth, between decode steps), so device memory follows the
// document's sentences, not n_ctx. The environment variable LLAMA_SKV=1 does the same
// with default parameters for every context (for llama.cpp's own tools). Requires flash attention (V not
// transposed) and an F16 or F32 K/V cache. Returns 0, or -2 for invalid params.
LLAMA_API int32_t llama_skv_request(const struct llama_skv_params * params, int32_t sent_cap);

// 1 if ctx has a SentenceKV cache, else 0.
LLAMA_API int32_t llama_skv_enabled(struct llama_context * ctx);

// Change parameters between decode calls (no new prefill needed). budget larger than the context is clamped;
// budget <= sink + ring, negative values, or an unknown policy return -2 and change nothing.
LLAMA_API int32_t llama_skv_set_params(struct llama_context * ctx, const struct llama_skv_params * params);
LLAMA_API int32_t llama_skv_get_params(struct llama_context * ctx, struct llama_skv_params * out);

// Declare sentence ends: ends[i] is the position one past the last token of a sentence; strictly increasing and
// greater than every end declared before. A sentence is indexed once all its tokens are in the cache (prompt and
// generated text alike). Returns the number accepted, or -2 (nothing accepted) if the list is not increasing.
LLAMA_API int32_t llama_skv_add_sentence_boundaries(struct llama_context * ctx, const int32_t * ends, int32_t n);

// Closed sentences of the sentence table as [p0, p1) position pairs: writes min(n, n_max) pairs into spans
// (2*n_max int32) and returns n (the total). Pass spans = NULL to ask for the count.
LLAMA_API int32_t llama_skv_get_sentences(struct llama_context * ctx, int32_t * spans, int32_t n_max);

// Benchmarks only: put n_tokens tokens at positions [0, n_tokens) of sequence 0 into an empty plain (not iSWA) KV
// cache without computing them: the cells are marked used and every layer's K/V rows get uniform random values
// (seeded). Works with SentenceKV on or off; declare sentence boundaries as for a prefill. Prefilling 64k tokens
// of a 1B model takes hours on a small CPU; this takes seconds, so decode speed and memory can be measured at
// that length. Returns n_tokens, or -2 (not a plain cache, not empty, too small, or V transposed).
LLAMA_API int32_t llama_skv_debug_fill(struct llama_context * ctx, int32_t n_tokens, uint32_t seed);

// Close now the declared sentences whose tokens are all in the cache (they would close at the next decode step,
// whose graph is built before that: its in-graph scores would miss their vectors). For use after a state load
// and declaring the boundaries again. Returns the number of closed entries of the active index.
LLAMA_API int32_t llama_skv_close_cached(struct llama_context * ctx);

// The seed of the next decode step's selection: the last prefilled token's queries (per SKV layer, n_head x head_dim
// floats, as the cache keeps them). A state save does not hold it; get it before a save and set it after the load,
// and the first step after the load selects exactly as after the prefill, with no token decoded again.
// get: writes up to n_max floats, returns the count (0: no seed pending). set: n must be that count (0 or -2).
LLAMA_API int32_t llama_skv_get_seed(struct llama_context * ctx, float * out, int32_t n_max);
LLAMA_API int32_t llama_skv_set_seed(struct llama_context * ctx, const float * q, int32_t n);

// 1 if this build of llama.cpp knows the GGUF architecture name (general.architecture), else 0: lets a caller
// refuse an unsupported model with a clear message before loading it.
LLAMA_API int32_t llama_skv_arch_supported(const char * name);

// Model layer ids of the SKV layers: returns the count; writes up to n_max ids.
LLAMA_API int32_t llama_skv_get_layers(struct llama_context * ctx, int32_t * ids, int32_t n_max);

// Selection attended in the last staged decode step by SKV layer index skv_il (0..n_layers-1) and KV head:
// index entry ids (sentences or chunks, by policy) in descending score, their accumulated scores, and tokens taken
// (the last may be cut). Returns the count (<= n_max written), -2 for a bad layer/head.
LLAMA_API int32_t llama_skv_get_selection(struct llama_context * ctx, int32_t skv_il, int32_t head,
                                          int32_t * ids, float * scores, int32_t * n_tokens, int32_t n_max);

// Every selection of the last staged step at once (the UI's per-token readout in one call): the entry ids of SKV
// layer l, KV head h follow each other in descending score in `ids`, from offsets[l*n_head_kv + h] to
// offsets[l*n_head_kv + h + 1] (offsets has n_layers*n_head_kv + 1 values; pass n_offsets for its size). Returns
// the number of ids (<= n_max written; call with n_max 0 for the size), -2 for offsets too small.
LLAMA_API int32_t llama_skv_get_selections(struct llama_context * ctx, int32_t * ids, int32_t n_max,
                                           int32_t * offsets, int32_t n_offsets);

LLAMA_API int32_t llama_skv_get_stats(struct llama_context * ctx, struct llama_skv_stats * out);

// A fatal ggml error (GGML_ABORT: e.g. an RPC server that died mid-answer) prints `before`, the message's first
// line and `after` on stderr, then ends the process with `code` (_exit: no core dump). The strings are copied.
LLAMA_API void llama_skv_exit_on_abort(const char * before, const char * after, int32_t code);

#ifdef __cplusplus
}
#endif
