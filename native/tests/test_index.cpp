// Unit tests of the SentenceKV index (native/src/llama-skv-index.*), which has no ggml dependency:
//   g++ -std=c++17 -I native/src native/tests/test_index.cpp native/src/llama-skv-index.cpp && ./a.out
// (tests/test_native_index.py builds and runs it). Prints "N passed, 0 failed" and exits 0, or names the check.

#include "llama-skv-index.h"

#include <cstdio>
#include <vector>

static int n_pass = 0;
static int n_fail = 0;

#define CHECK(cond) do { if (cond) { n_pass++; } else { n_fail++; std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)

static std::vector<int32_t> flat(const std::vector<skv_span> & t) {
    std::vector<int32_t> out;
    for (const auto & s : t) {
        out.push_back(s.p0);
        out.push_back(s.p1);
    }
    return out;
}

int main() {
    {   // sentences close once all their tokens are cached; long ones split into pieces of max_len
        skv_index ix;
        ix.cap = 100;
        ix.ends = {5, 9, 30};
        CHECK(ix.close(4, 8) == 0 && ix.sents.empty());
        CHECK(ix.close(9, 8) == 2);
        CHECK((flat(ix.sents) == std::vector<int32_t>{0, 5, 5, 9}));
        CHECK(ix.close(30, 8) == 3);  // 9..17, 17..25, 25..30
        CHECK((flat(ix.sents) == std::vector<int32_t>{0, 5, 5, 9, 9, 17, 17, 25, 25, 30}));
        CHECK(ix.close(47, 8) == 2 && ix.open_start == 46);  // text past the last end: pieces of max_len
        CHECK(ix.open_start_active() == 46);
    }
    {   // entries_bound is an upper bound of what close(p) adds, and exact without the chunk policy
        skv_index ix;
        ix.cap = 1000;
        ix.ends = {3, 20, 21, 60};
        for (int32_t p : {0, 2, 3, 19, 20, 21, 59, 60, 200}) {
            skv_index probe = ix;
            const int32_t bound = ix.entries_bound(p, 16, false);
            probe.close(p, 16);
            CHECK(bound == (int32_t) probe.sents.size());
        }
    }
    {   // a full table asks for room; without it the last entry grows and the flag says so
        skv_index ix;
        ix.cap = 2;
        int32_t asked = 0;
        ix.room = [&](int32_t n) { asked = n; return false; };
        ix.ends = {2, 4, 6};
        ix.close(6, 8);
        CHECK(asked == 3);
        CHECK((flat(ix.sents) == std::vector<int32_t>{0, 2, 2, 6}) && ix.merged_active && ix.full);
        skv_index grow;
        grow.cap = 2;
        grow.room = [&](int32_t n) { grow.cap = n; return true; };
        grow.ends = {2, 4, 6};
        grow.close(6, 8);
        CHECK(grow.sents.size() == 3 && !grow.merged_active && !grow.full);
    }
    {   // chunks: the mean sentence length, rebuilt from 0 when the policy switches to chunk
        skv_index ix;
        ix.cap = 100;
        ix.ends = {4, 10, 16};
        ix.close(16, 64);
        CHECK(ix.chunk_len_for_sents(64) == 5);  // (4 + 6 + 6) / 3 = 5.33 -> 5
        CHECK(ix.set_chunk_mode(true, 64) && !ix.set_chunk_mode(true, 64));
        CHECK(ix.close(16, 64) == 3 && (flat(ix.chunks) == std::vector<int32_t>{0, 5, 5, 10, 10, 15}));
        CHECK(ix.open_start_active() == 15 && &ix.active() == &ix.chunks);
        CHECK(ix.entries_bound(16, 64, true) >= 3);
        CHECK(ix.set_chunk_mode(false, 64) && ix.chunks.empty() && ix.chunk_len == 0 && &ix.active() == &ix.sents);
    }
    {   // removing positions drops every entry reaching into them and the ends after them
        skv_index ix;
        ix.cap = 100;
        ix.ends = {5, 9, 14, 20};
        ix.close(20, 64);
        ix.remove_from(10);
        CHECK((flat(ix.sents) == std::vector<int32_t>{0, 5, 5, 9}) && ix.open_start == 9);
        CHECK((ix.ends == std::vector<int32_t>{5, 9}));
        ix.ends.push_back(12);
        CHECK(ix.close(12, 64) == 1 && ix.sents.back().p0 == 9 && ix.sents.back().p1 == 12);
    }
    {   // a shift moves the spans starting in [p0, p1) and the ends in (p0, p1]; spans pushed before 0 are dropped
        skv_index ix;
        ix.cap = 100;
        ix.ends = {5, 9, 14};
        ix.close(14, 64);
        ix.shift(5, -1, -5);
        CHECK((flat(ix.sents) == std::vector<int32_t>{0, 5, 0, 4, 4, 9}));
        CHECK(ix.open_start == 9 && (ix.ends == std::vector<int32_t>{5, 4, 9}) && ix.i_end == 0);
        ix.shift(0, 5, -3);  // the three spans starting in [0, 5) move by -3; two fall before 0 and are dropped
        CHECK((flat(ix.sents) == std::vector<int32_t>{1, 6}));
        ix.clear();
        CHECK(ix.sents.empty() && ix.ends.empty() && ix.open_start == 0 && ix.i_end == 0);
    }
    std::printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
