#include "llama-skv-index.h"

#include <algorithm>
#include <cmath>
#include <limits>

int32_t skv_index::open_start_active() const {
    if (!chunk_mode) {
        return open_start;
    }
    return chunks.empty() ? 0 : chunks.back().p1;
}

int32_t skv_index::close(int32_t n, int32_t max_len) {
    const size_t n_before = active().size();
    while (true) {
        while (i_end < ends.size() && ends[i_end] <= open_start) {
            i_end++;
        }
        const int32_t end   = i_end < ends.size() ? ends[i_end] : std::numeric_limits<int32_t>::max();
        const int32_t piece = (int32_t) std::min<int64_t>(end, (int64_t) open_start + max_len);
        if (piece > n) {
            break;
        }
        add(sents, {open_start, piece});
        open_start = piece;
    }
    if (chunk_len > 0) {
        while (true) {
            const int32_t c0 = chunks.empty() ? 0 : chunks.back().p1;
            if (c0 + chunk_len > n) {
                break;
            }
            add(chunks, {c0, c0 + chunk_len});
        }
    }
    return (int32_t) (active().size() - n_before);
}

void skv_index::add(std::vector<skv_span> & tab, skv_span s) {
    if ((int32_t) tab.size() >= cap && room) {
        room((int32_t) tab.size() + 1);
    }
    if ((int32_t) tab.size() < cap) {
        tab.push_back(s);
        return;
    }
    // table full: the last entry grows (its vector is recomputed)
    full = true;
    tab.back().p1 = s.p1;
    if (&tab == &active()) {
        merged_active = true;
    }
}

int32_t skv_index::chunk_len_for_sents(int32_t max_len) const {
    int64_t tot = 0;
    for (const auto & s : sents) {
        tot += s.p1 - s.p0;
    }
    return sents.empty() ? std::max(1, max_len / 8)
                         : std::max<int32_t>(1, (int32_t) std::lround((double) tot / sents.size()));
}

int32_t skv_index::entries_bound(int32_t p, int32_t max_len, bool chunk_policy) const {
    max_len = std::max(1, max_len);
    int64_t bound = (int64_t) sents.size();
    int32_t start = open_start;
    for (size_t i = i_end; i < ends.size() && ends[i] <= p; ++i) {
        if (ends[i] > start) {
            bound += (ends[i] - start + max_len - 1) / max_len;
            start = ends[i];
        }
    }
    bound += std::max(0, p - start) / max_len;
    if (chunk_policy) {
        const int32_t cl = chunk_mode && chunk_len > 0 ? chunk_len : chunk_len_for_sents(max_len);
        bound = std::max<int64_t>(bound, (int64_t) p / cl + 1);
    }
    return (int32_t) std::min<int64_t>(bound, std::numeric_limits<int32_t>::max());
}

bool skv_index::set_chunk_mode(bool on, int32_t max_len) {
    if (on == chunk_mode) {
        return false;
    }
    chunk_len = on ? chunk_len_for_sents(max_len) : 0;
    chunks.clear();
    chunk_mode = on;
    return true;
}

void skv_index::clear() {
    ends.clear();
    i_end = 0;
    sents.clear();
    chunks.clear();
    open_start = 0;
}

void skv_index::remove_from(int32_t p0) {
    auto cut = [p0](std::vector<skv_span> & tab) {
        while (!tab.empty() && tab.back().p1 > p0) {
            tab.pop_back();
        }
    };
    cut(sents);
    cut(chunks);
    open_start = sents.empty() ? 0 : sents.back().p1;
    while (!ends.empty() && ends.back() > p0) {
        ends.pop_back();
    }
    i_end = 0; // ends at or before the new open sentence's start are skipped again
}

void skv_index::shift(int32_t p0, int32_t p1, int32_t delta) {
    auto shift_tab = [p0, p1, delta](std::vector<skv_span> & tab) {
        for (auto & s : tab) {
            if (s.p0 >= p0 && (p1 < 0 || s.p0 < p1)) {
                s.p0 += delta;
                s.p1 += delta;
            }
        }
        tab.erase(std::remove_if(tab.begin(), tab.end(), [](const skv_span & s) { return s.p0 < 0; }), tab.end());
    };
    shift_tab(sents);
    shift_tab(chunks);
    for (auto & e : ends) {
        if (e > p0 && (p1 < 0 || e <= p1)) {
            e += delta;
        }
    }
    open_start = sents.empty() ? 0 : sents.back().p1;
    i_end      = 0;
}
