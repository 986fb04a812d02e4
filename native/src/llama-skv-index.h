#pragma once

// The SentenceKV index: which token spans are entries (sentences, or fixed chunks for the chunk policy) and when an
// entry closes. Plain positions and vectors of spans, no ggml: unit testable on its own. The cache
// (llama-skv-cache.h) keeps one and computes a semantic vector for every entry of the active table.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

struct skv_span {
    int32_t p0;
    int32_t p1;
};

struct skv_index {
    // sentence table
    std::vector<int32_t>  ends;       // declared ends, increasing
    size_t                i_end = 0;  // first declared end not yet consumed
    std::vector<skv_span> sents;      // closed sentences (pieces of at most max_sentence_len)
    int32_t               open_start = 0;

    // chunk table (policy chunk)
    int32_t               chunk_len = 0;
    std::vector<skv_span> chunks;
    bool                  chunk_mode = false; // the active table is the chunk table

    // entries a table may hold now; `room(n)` is asked to make it n when a table is full (false: it cannot, and the
    // new span is merged into the table's last entry)
    int32_t                     cap = 0;
    std::function<bool(int32_t)> room;

    bool merged_active = false; // the active table's last entry grew since the flag was cleared (vector stale)
    bool full          = false; // a table was full at least once (the cache warns once)

    const std::vector<skv_span> & active() const { return chunk_mode ? chunks : sents; }

    // first position of the open (not yet closed) entry of the active table
    int32_t open_start_active() const;

    // close the entries whose tokens are all in [0, n); returns the number of entries the active table gained
    int32_t close(int32_t n, int32_t max_len);

    // the chunk length the chunk table takes: the mean sentence length (max_len / 8 before any sentence)
    int32_t chunk_len_for_sents(int32_t max_len) const;

    // an upper bound on the entries of either table after close(p): declared ends up to p in pieces of max_len,
    // the text after the last one, chunks when the chunk policy is on (O(pending ends))
    int32_t entries_bound(int32_t p, int32_t max_len, bool chunk_policy) const;

    // switch the active table; true when it changed (the chunk table is rebuilt from 0 by the next close)
    bool set_chunk_mode(bool on, int32_t max_len);

    void clear();

    // positions [p0, ...) removed: every entry reaching into or past p0 and every end after it dropped
    void remove_from(int32_t p0);

    // positions [p0, p1) (p1 < 0: to the end) moved by delta
    void shift(int32_t p0, int32_t p1, int32_t delta);

private:
    void add(std::vector<skv_span> & tab, skv_span s);
};
