// CPU implementation of the fused correlation + Kernel-Soft-Argmax (sd4m_ksa_cpu).
//
// Layout of the work (per call):
//   phase 0  pack every target map into panels of NR cells (fp32, channel-major inside a panel)
//            with the inverse cell norms -- or, for few queries and an fp32 map with contiguous
//            cells, only compute the norms and read the map in place later; sample (sparse) or
//            index (dense) the query descriptors and their inverse norms.
//   rounds   a round takes up to `threads` units of QB queries. Phase 1 computes their raw dot
//            products with every target cell into per-unit row buffers (QB x Mpad floats, one
//            cache-blocked GEMM per unit, split over cells when there are fewer units than
//            threads); phase 2 reads each row: cosine, first argmax, Gaussian, softmax, expectation.
// The GEMM micro-kernel and the row epilogue are written with GCC/Clang vector extensions and
// compiled per instruction set (AVX-512, AVX2+FMA, baseline), chosen at run time.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "internal.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define SD4M_VECTOR_EXT 1
#define SD4M_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SD4M_VECTOR_EXT 0
#define SD4M_ALWAYS_INLINE inline
#endif

#if SD4M_VECTOR_EXT && (defined(__x86_64__) || defined(__i386__))
#define SD4M_X86_DISPATCH 1
#else
#define SD4M_X86_DISPATCH 0
#endif

namespace sd4m {
namespace {

constexpr int NR = 32;   // cells per packed panel = width of the micro-tile
constexpr int KC = 256;  // channels per cache block (a 32 KB panel slice stays in L1)
constexpr int QB = 48;   // queries per work unit (a multiple of every micro-kernel's MR)
constexpr float kLog2e = 1.4426950408889634f;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ------------------------------------------------------------------------------------------
// A team of threads with a reusable barrier. Threads are created before any work starts, so a
// failed thread creation only shrinks the team (no thread ever waits for a missing member).

class Barrier {
  public:
    explicit Barrier(int count) : count_(count) {}
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const uint64_t generation = generation_;
        if (++waiting_ == count_) {
            waiting_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation_ != generation; });
        }
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int count_;
    int waiting_ = 0;
    uint64_t generation_ = 0;
};

//! Runs body(thread_index, team_size, barrier) on up to `wanted` threads (the caller is one).
void run_team(int wanted, const std::function<void(int, int, Barrier&)>& body) {
    if (wanted <= 1) {
        Barrier barrier(1);
        body(0, 1, barrier);
        return;
    }
    std::mutex gate_mutex;
    std::condition_variable gate_cv;
    int team = -1;  // set once every thread that could be created exists
    std::unique_ptr<Barrier> barrier;
    std::vector<std::thread> threads;
    auto worker = [&](int index) {
        int size;
        {
            std::unique_lock<std::mutex> lock(gate_mutex);
            gate_cv.wait(lock, [&] { return team >= 0; });
            size = team;
        }
        if (index < size) body(index, size, *barrier);
    };
    for (int i = 1; i < wanted; ++i) {
        try {
            threads.emplace_back(worker, i);
        } catch (const std::system_error&) {
            break;  // fewer threads than asked: the team shrinks
        }
    }
    {
        std::lock_guard<std::mutex> lock(gate_mutex);
        barrier.reset(new Barrier(static_cast<int>(threads.size()) + 1));
        team = static_cast<int>(threads.size()) + 1;
    }
    gate_cv.notify_all();
    body(0, team, *barrier);
    for (auto& t : threads) t.join();
}

// ------------------------------------------------------------------------------------------
// Element access of a strided fp32/fp16 map.

struct MapView {
    const void* data;
    sd4m_dtype dtype;
    int64_t stride_b, stride_c;
    std::vector<int64_t> cell_offsets;  // per cell j: y*stride_h + x*stride_w
    bool contiguous_cells;              // cell_offsets[j] == j

    MapView(const sd4m_tensor& t, int64_t w, int64_t cells)
        : data(t.data), dtype(t.dtype), stride_b(t.strides[0]), stride_c(t.strides[1]) {
        contiguous_cells = (t.strides[3] == 1 && (t.shape[2] == 1 || t.strides[2] == t.shape[3]));
        if (!contiguous_cells) {
            cell_offsets.resize(static_cast<size_t>(cells));
            for (int64_t j = 0; j < cells; ++j) cell_offsets[j] = cell_offset(j, w, t.strides[2], t.strides[3]);
        }
    }
    int64_t offset(int64_t b, int64_t c, int64_t j) const {
        return b * stride_b + c * stride_c + (contiguous_cells ? j : cell_offsets[j]);
    }
    float at(int64_t offset_elements) const {
        if (dtype == SD4M_FLOAT32) return static_cast<const float*>(data)[offset_elements];
        return half_bits_to_float(static_cast<const uint16_t*>(data)[offset_elements]);
    }
};

//! One target panel: dst[c * NR + r] = T[b, c, cell p*NR + r] (0 past M); its cells' inverse
//! norms go to inv_norm[p*NR + r] (0 past M).
void pack_target_panel(const MapView& t, int64_t b, int64_t p, int64_t C, int64_t M, float* dst, float* inv_norm) {
    float sum_sq[NR] = {0};
    const int64_t j0 = p * NR;
    const int valid = static_cast<int>(std::min<int64_t>(NR, M - j0));
    if (t.contiguous_cells && t.dtype == SD4M_FLOAT32 && valid == NR) {
        const float* src = static_cast<const float*>(t.data) + b * t.stride_b + j0;
        for (int64_t c = 0; c < C; ++c, dst += NR) {
            const float* row = src + c * t.stride_c;
            for (int r = 0; r < NR; ++r) {
                dst[r] = row[r];
                sum_sq[r] += row[r] * row[r];
            }
        }
    } else {
        for (int64_t c = 0; c < C; ++c, dst += NR) {
            for (int r = 0; r < NR; ++r) {
                const float v = r < valid ? t.at(t.offset(b, c, j0 + r)) : 0.0f;
                dst[r] = v;
                sum_sq[r] += v * v;
            }
        }
    }
    for (int r = 0; r < NR; ++r) {
        inv_norm[j0 + r] = r < valid ? 1.0f / (std::sqrt(sum_sq[r]) + SD4M_L2_EPS) : 0.0f;
    }
}

//! Bilinear sample of A at (x, y), align-corners and zero padding, as grid_sample: (C) floats.
void sample_descriptor(const MapView& a, int64_t b, int64_t C, int64_t h, int64_t w, float x, float y, float* out,
                       float* inv_norm) {
    const float fx = std::floor(x), fy = std::floor(y);
    const float tx = x - fx, ty = y - fy;
    const float corner_x[4] = {fx, fx + 1.0f, fx, fx + 1.0f};
    const float corner_y[4] = {fy, fy, fy + 1.0f, fy + 1.0f};
    const float weight[4] = {(1.0f - tx) * (1.0f - ty), tx * (1.0f - ty), (1.0f - tx) * ty, tx * ty};
    int64_t offset[4];
    float used_weight[4];
    int used = 0;
    for (int i = 0; i < 4; ++i) {  // out-of-range corners (and NaN points) contribute zero
        if (corner_x[i] >= 0.0f && corner_x[i] <= static_cast<float>(w - 1) && corner_y[i] >= 0.0f &&
            corner_y[i] <= static_cast<float>(h - 1)) {
            const int64_t j = static_cast<int64_t>(corner_y[i]) * w + static_cast<int64_t>(corner_x[i]);
            offset[used] = a.offset(b, 0, j);
            used_weight[used] = weight[i];
            ++used;
        }
    }
    float sum_sq = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
        float v = 0.0f;
        for (int i = 0; i < used; ++i) v += a.at(offset[i] + c * a.stride_c) * used_weight[i];
        out[c] = v;
        sum_sq += v * v;
    }
    *inv_norm = 1.0f / (std::sqrt(sum_sq) + SD4M_L2_EPS);
}

//! Inverse norms of cells [j0, j1) of batch b of a map (dense queries; unpacked targets).
constexpr int64_t kNormChunk = 256;  // cells per cell_norms call

void cell_norms(const MapView& a, int64_t b, int64_t C, int64_t j0, int64_t j1, float* inv_norm) {
    float sum_sq[kNormChunk] = {0};  // no allocation: this runs on worker threads
    for (int64_t c = 0; c < C; ++c) {
        if (a.contiguous_cells && a.dtype == SD4M_FLOAT32) {
            const float* row = static_cast<const float*>(a.data) + b * a.stride_b + c * a.stride_c;
            for (int64_t j = j0; j < j1; ++j) sum_sq[j - j0] += row[j] * row[j];
        } else {
            for (int64_t j = j0; j < j1; ++j) {
                const float v = a.at(a.offset(b, c, j));
                sum_sq[j - j0] += v * v;
            }
        }
    }
    for (int64_t j = j0; j < j1; ++j) inv_norm[j] = 1.0f / (std::sqrt(sum_sq[j - j0]) + SD4M_L2_EPS);
}

// ------------------------------------------------------------------------------------------
// Per-ISA kernels.

struct GemmArgs {
    int kc;            // channels in this block
    int mr_panels;     // micro-panels of MR queries with at least one real query
    const float* ap;   // packed queries: [mr_panel][k][MR]
    const float* tp;   // panel 0 at channel k0; panel p starts at tp + p * tp_panel_stride
    int64_t tp_panel_stride;  // packed: C * NR; unpacked map: NR
    int64_t ldt;              // floats between channels: packed NR; unpacked: the map's channel stride
    const float* tail;        // unpacked map with M % NR != 0: the last panel, packed, at channel k0
    int64_t p0, p1;    // panels [p0, p1)
    int64_t p_last;    // index of the last panel (where `tail` applies)
    float* s;          // row buffer of the unit (QB x lds), column p*NR of panel p
    int64_t lds;
    bool accumulate;   // add to s (later channel blocks) instead of overwriting it
};

struct RowArgs {
    float* row;            // Mpad raw dot products; overwritten
    int64_t cells;         // M
    int64_t padded;        // >= cells, multiple of the vector width
    const float* inv_t;    // Mpad inverse target norms
    const float* cell_x;   // Mpad cell x
    const float* cell_y;   // Mpad cell y
    float inv_q;           // inverse query norm
    float gauss_k;         // -1 / (2 sigma^2)
    float beta;
    float* coord_x;
    float* coord_y;
    float* score;
};

#if SD4M_VECTOR_EXT
template <int W>
struct Vec {
    typedef float type __attribute__((vector_size(W * 4)));
    typedef int32_t itype __attribute__((vector_size(W * 4)));
};

template <int W>
SD4M_ALWAYS_INLINE typename Vec<W>::type load(const float* p) {
    typename Vec<W>::type v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

template <int W>
SD4M_ALWAYS_INLINE void store(float* p, typename Vec<W>::type v) {
    __builtin_memcpy(p, &v, sizeof v);
}

template <int W>
SD4M_ALWAYS_INLINE typename Vec<W>::type splat(float x) {
    typename Vec<W>::type v = {};
    return v + x;
}

template <int W>
SD4M_ALWAYS_INLINE float hmax(typename Vec<W>::type v) {
    float m = v[0];
    for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
    return m;
}

template <int W>
SD4M_ALWAYS_INLINE float hsum(typename Vec<W>::type v) {
    float s = 0.0f;
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
}

//! exp(x) for x <= 0 (relative error ~1e-7); exactly 0 below -87.
template <int W>
SD4M_ALWAYS_INLINE typename Vec<W>::type exp_nonpositive(typename Vec<W>::type x) {
    typedef typename Vec<W>::type V;
    typedef typename Vec<W>::itype VI;
    const V lo = splat<W>(-87.0f);
    const V underflow = x < lo ? splat<W>(0.0f) : splat<W>(1.0f);  // lanes that become exactly 0
    x = x < lo ? lo : x;
    const V magic = splat<W>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const V n = (x * kLog2e + magic) - magic;
    const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // Cody-Waite ln2 = C1 - C2
    V p = splat<W>(1.0f / 5040.0f);
    p = p * r + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
    return p * (V)bits * underflow;  // a same-size vector cast reinterprets the bits
}

//! S[i, j] (+)= sum_k ap[k][i] * tp[k][j] for an MR x NR tile.
template <int MR, int W>
SD4M_ALWAYS_INLINE void micro_kernel(int kc, const float* __restrict__ ap, const float* __restrict__ tp, int64_t ldt,
                                     float* __restrict__ s, int64_t lds, bool accumulate) {
    typedef typename Vec<W>::type V;
    constexpr int NV = NR / W;
    V acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = accumulate ? load<W>(s + i * lds + v * W) : splat<W>(0.0f);
    }
    for (int k = 0; k < kc; ++k) {
        V t[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) t[v] = load<W>(tp + k * ldt + v * W);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            const float q = ap[k * MR + i];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[i][v] += t[v] * q;
        }
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) store<W>(s + i * lds + v * W, acc[i][v]);
    }
}

template <int MR, int W>
SD4M_ALWAYS_INLINE void gemm_block(const GemmArgs& g) {
    for (int64_t p = g.p0; p < g.p1; ++p) {
        const bool tail = g.tail != nullptr && p == g.p_last;
        const float* tp = tail ? g.tail : g.tp + p * g.tp_panel_stride;
        const int64_t ldt = tail ? NR : g.ldt;
        for (int mp = 0; mp < g.mr_panels; ++mp) {
            micro_kernel<MR, W>(g.kc, g.ap + static_cast<int64_t>(mp) * g.kc * MR, tp, ldt,
                                g.s + mp * MR * g.lds + p * NR, g.lds, g.accumulate);
        }
    }
}

//! Cosine, first argmax, Gaussian around it, softmax and expectation of one row.
template <int W>
SD4M_ALWAYS_INLINE void row_epilogue(const RowArgs& a) {
    typedef typename Vec<W>::type V;
    float* row = a.row;
    const int64_t padded = a.padded;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    V vmax = splat<W>(neg_inf);
    for (int64_t j = 0; j < padded; j += W) {
        const V cosine = load<W>(row + j) * a.inv_q * load<W>(a.inv_t + j);
        store<W>(row + j, cosine);
    }
    for (int64_t j = a.cells; j < padded; ++j) row[j] = neg_inf;
    for (int64_t j = 0; j < padded; j += W) {
        const V v = load<W>(row + j);
        vmax = v > vmax ? v : vmax;
    }
    const float best = hmax<W>(vmax);
    int64_t peak = 0;
    for (int64_t j = 0; j < a.cells; ++j) {  // the first maximum, as torch.argmax
        if (row[j] == best) {
            peak = j;
            break;
        }
    }
    const float px = a.cell_x[peak], py = a.cell_y[peak];
    V lmax = splat<W>(neg_inf);
    for (int64_t j = 0; j < padded; j += W) {
        const V dx = load<W>(a.cell_x + j) - px;
        const V dy = load<W>(a.cell_y + j) - py;
        const V gauss = exp_nonpositive<W>((dx * dx + dy * dy) * a.gauss_k);
        const V logit = load<W>(row + j) * gauss / a.beta;
        store<W>(row + j, logit);
    }
    for (int64_t j = a.cells; j < padded; ++j) row[j] = neg_inf;
    for (int64_t j = 0; j < padded; j += W) {
        const V v = load<W>(row + j);
        lmax = v > lmax ? v : lmax;
    }
    const float top = hmax<W>(lmax);
    V z = splat<W>(0.0f), sx = z, sy = z;
    for (int64_t j = 0; j < padded; j += W) {
        const V e = exp_nonpositive<W>(load<W>(row + j) - top);
        z += e;
        sx += e * (load<W>(a.cell_x + j) - px);  // offsets from the peak keep the sums small
        sy += e * (load<W>(a.cell_y + j) - py);
    }
    const float zs = hsum<W>(z);
    *a.coord_x = px + hsum<W>(sx) / zs;
    *a.coord_y = py + hsum<W>(sy) / zs;
    *a.score = 1.0f / zs;
}
#endif  // SD4M_VECTOR_EXT

#if !SD4M_VECTOR_EXT
// Scalar versions for compilers without vector extensions.
void gemm_block_scalar(const GemmArgs& g, int mr) {
    for (int64_t p = g.p0; p < g.p1; ++p) {
        const bool tail = g.tail != nullptr && p == g.p_last;
        const float* tp = tail ? g.tail : g.tp + p * g.tp_panel_stride;
        const int64_t ldt = tail ? NR : g.ldt;
        for (int mp = 0; mp < g.mr_panels; ++mp) {
            const float* ap = g.ap + static_cast<int64_t>(mp) * g.kc * mr;
            for (int i = 0; i < mr; ++i) {
                float* s = g.s + (mp * mr + i) * g.lds + p * NR;
                float acc[NR];
                for (int r = 0; r < NR; ++r) acc[r] = g.accumulate ? s[r] : 0.0f;
                for (int k = 0; k < g.kc; ++k) {
                    const float q = ap[k * mr + i];
                    for (int r = 0; r < NR; ++r) acc[r] += q * tp[k * ldt + r];
                }
                for (int r = 0; r < NR; ++r) s[r] = acc[r];
            }
        }
    }
}

void row_epilogue_scalar(const RowArgs& a) {
    float* row = a.row;
    int64_t peak = 0;
    for (int64_t j = 0; j < a.cells; ++j) {
        row[j] = row[j] * a.inv_q * a.inv_t[j];
        if (row[j] > row[peak]) peak = j;
    }
    const float px = a.cell_x[peak], py = a.cell_y[peak];
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < a.cells; ++j) {
        const float dx = a.cell_x[j] - px, dy = a.cell_y[j] - py;
        row[j] = row[j] * std::exp((dx * dx + dy * dy) * a.gauss_k) / a.beta;
        top = std::max(top, row[j]);
    }
    float z = 0.0f, sx = 0.0f, sy = 0.0f;
    for (int64_t j = 0; j < a.cells; ++j) {
        const float e = std::exp(row[j] - top);
        z += e;
        sx += e * (a.cell_x[j] - px);
        sy += e * (a.cell_y[j] - py);
    }
    *a.coord_x = px + sx / z;
    *a.coord_y = py + sy / z;
    *a.score = 1.0f / z;
}
#endif

struct Isa {
    const char* name;
    int mr;  // queries per micro-tile
    void (*gemm)(const GemmArgs&);
    void (*row)(const RowArgs&);
};

#if SD4M_X86_DISPATCH
__attribute__((target("avx512f,avx512vl,avx512dq,fma"))) void gemm_avx512(const GemmArgs& g) {
    gemm_block<12, 16>(g);
}
__attribute__((target("avx512f,avx512vl,avx512dq,fma"))) void row_avx512(const RowArgs& a) {
    row_epilogue<16>(a);
}
__attribute__((target("avx2,fma"))) void gemm_avx2(const GemmArgs& g) { gemm_block<3, 8>(g); }
__attribute__((target("avx2,fma"))) void row_avx2(const RowArgs& a) { row_epilogue<8>(a); }
#endif
#if SD4M_VECTOR_EXT
void gemm_baseline(const GemmArgs& g) { gemm_block<2, 4>(g); }
void row_baseline(const RowArgs& a) { row_epilogue<4>(a); }
#else
void gemm_baseline(const GemmArgs& g) { gemm_block_scalar(g, 2); }
void row_baseline(const RowArgs& a) { row_epilogue_scalar(a); }
#endif

Isa select_isa() {
#if SD4M_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")) {
        return {"avx512", 12, gemm_avx512, row_avx512};
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {"avx2", 3, gemm_avx2, row_avx2};
#endif
    return {"baseline", 2, gemm_baseline, row_baseline};
}

// ------------------------------------------------------------------------------------------

//! How one call's work is divided. Queries go in units of QB; a round takes up to one unit per
//! thread, and when there are fewer units than threads each unit's cells are split among them.
struct Plan {
    int64_t panels;           // P: target panels of NR cells
    int64_t padded;           // Mpad = P * NR: cells of a row buffer
    int64_t units_per_batch;  // query units of each batch item
    int64_t units;            // all query units
    int64_t round_units;      // units per round
    int64_t rounds;
    int64_t splits;           // cell ranges of each unit's products
    // Few query units per map (sparse queries): an fp32 target with contiguous cells is read in
    // place instead of packed; packing writes and rereads the whole map, most of a sparse call's
    // work. Only a last, partial panel is packed then (reading past its end would leave the map).
    bool direct;
    bool tail;                // direct, and the last panel is partial
    int64_t full_cells;       // cells whose norms come from cell_norms (direct)
    int64_t norm_chunks;      // kNormChunk-cell chunks of those per batch item
    int64_t target_items;     // phase 0 items for the target ...
    int64_t pack_items;       // ... and for the target and the queries
    int team;                 // threads wanted
};

constexpr int64_t kQueryChunk = 64;  // sparse queries sampled per phase 0 item

Plan make_plan(const Problem& pb, const MapView& target, int num_threads) {
    const int64_t B = pb.batch, N = pb.queries, M = pb.cells1();
    int threads = num_threads > 0 ? num_threads : static_cast<int>(std::thread::hardware_concurrency());
    threads = std::max(1, threads);
    Plan plan;
    plan.panels = round_up(M, NR) / NR;
    plan.padded = plan.panels * NR;
    plan.units_per_batch = (N + QB - 1) / QB;
    plan.units = B * plan.units_per_batch;
    plan.round_units = std::max<int64_t>(1, std::min<int64_t>(plan.units, threads));
    plan.splits = std::min<int64_t>(plan.panels,
                                    std::max<int64_t>(1, (2 * threads + plan.round_units - 1) / plan.round_units));
    plan.rounds = (plan.units + plan.round_units - 1) / plan.round_units;
    plan.direct = target.contiguous_cells && target.dtype == SD4M_FLOAT32 && plan.units_per_batch <= 2;
    plan.tail = plan.direct && M % NR != 0;
    plan.full_cells = plan.tail ? (plan.panels - 1) * NR : M;
    plan.norm_chunks = (plan.full_cells + kNormChunk - 1) / kNormChunk;
    const int64_t query_items = pb.dense ? B * ((pb.cells0() + kNormChunk - 1) / kNormChunk)
                                         : B * ((N + kQueryChunk - 1) / kQueryChunk);
    plan.target_items = plan.direct ? B * plan.norm_chunks + (plan.tail ? B : 0) : B * plan.panels;
    plan.pack_items = plan.target_items + query_items;
    plan.team = static_cast<int>(
        std::min<int64_t>(threads, std::max<int64_t>(plan.pack_items, plan.round_units * plan.splits)));
    return plan;
}

//! The memory a call works in.
struct Scratch {
    std::vector<float> panels;       // packed target panels: [b][p][c][NR] (direct: the last panel of each b)
    std::vector<float> inv_t;        // [b][Mpad] inverse target norms (0 past M)
    std::vector<float> cell_x;       // [Mpad] cell coordinates (padded cells repeat the last one)
    std::vector<float> cell_y;
    std::vector<float> inv_q;        // [b][n] inverse query norms
    std::vector<float> descriptors;  // [b][n][C] sampled query descriptors (sparse queries)
    std::vector<float> rows;         // [slot][QB][Mpad] raw dot products of a round's units
    std::vector<std::vector<float>> ap;  // per thread: one channel block of a unit's queries, packed
};

sd4m_status allocate_scratch(const Problem& pb, const Plan& plan, Scratch* s) {
    const int64_t B = pb.batch, C = pb.channels, N = pb.queries;
    try {
        s->panels.resize(static_cast<size_t>(plan.direct ? (plan.tail ? B * C * NR : 0) : B * plan.panels * C * NR));
        s->inv_t.resize(static_cast<size_t>(B * plan.padded));
        s->cell_x.resize(static_cast<size_t>(plan.padded));
        s->cell_y.resize(static_cast<size_t>(plan.padded));
        s->inv_q.resize(static_cast<size_t>(B * N));
        if (!pb.dense) s->descriptors.resize(static_cast<size_t>(B * N * C));
        s->rows.resize(static_cast<size_t>(plan.round_units * QB * plan.padded));
        s->ap.resize(static_cast<size_t>(plan.team));
        for (auto& buf : s->ap) buf.resize(static_cast<size_t>(QB * std::min<int64_t>(KC, C)));
    } catch (const std::bad_alloc&) {
        set_error("out of host memory for the kernel's scratch buffers");
        return SD4M_ERR_OUT_OF_MEMORY;
    }
    const int64_t M = pb.cells1();
    for (int64_t j = 0; j < plan.padded; ++j) {  // padded cells sit on valid coordinates; they are masked anyway
        const int64_t jj = std::min(j, M - 1);
        s->cell_x[j] = static_cast<float>(jj % pb.w1);
        s->cell_y[j] = static_cast<float>(jj / pb.w1);
    }
    return SD4M_OK;
}

struct Outputs {
    float* coords;
    int64_t cs0, cs1, cs2;
    float* scores;
    int64_t ss0, ss1;
};

Outputs outputs_of(const sd4m_ksa_args& args) {
    return {static_cast<float*>(args.coords.data), args.coords.strides[0], args.coords.strides[1],
            args.coords.strides[2],                static_cast<float*>(args.scores.data),
            args.scores.strides[0],                args.scores.strides[1]};
}

//! What the phases of one call read, and the scratch they write.
struct Call {
    const sd4m_ksa_args& args;
    const Problem& pb;
    const Plan& plan;
    const Isa& isa;
    const MapView& source;
    const MapView& target;
    const Outputs out;
    const float gauss_k;  // -1 / (2 sigma^2)
    Scratch& s;
};

//! Phase 0 item: one target panel (or, read in place, one chunk of its norms or its partial last
//! panel), or one chunk of query norms (dense) or of sampled query descriptors (sparse).
void pack_item(const Call& c, int64_t item) {
    const int64_t B = c.pb.batch, C = c.pb.channels, N = c.pb.queries, M = c.pb.cells1();
    const int64_t P = c.plan.panels, Mpad = c.plan.padded;
    Scratch& s = c.s;
    if (item < c.plan.target_items && !c.plan.direct) {
        const int64_t b = item / P, p = item % P;
        pack_target_panel(c.target, b, p, C, M, s.panels.data() + (b * P + p) * C * NR, s.inv_t.data() + b * Mpad);
    } else if (item < B * c.plan.norm_chunks) {  // direct: norms of the full panels' cells
        const int64_t b = item / c.plan.norm_chunks, j0 = (item % c.plan.norm_chunks) * kNormChunk;
        cell_norms(c.target, b, C, j0, std::min(j0 + kNormChunk, c.plan.full_cells), s.inv_t.data() + b * Mpad);
    } else if (item < c.plan.target_items) {  // direct: the partial last panel, packed
        const int64_t b = item - B * c.plan.norm_chunks;
        pack_target_panel(c.target, b, P - 1, C, M, s.panels.data() + b * C * NR, s.inv_t.data() + b * Mpad);
    } else if (c.pb.dense) {
        const int64_t q = item - c.plan.target_items, per_batch = (c.pb.cells0() + kNormChunk - 1) / kNormChunk;
        const int64_t b = q / per_batch, j0 = (q % per_batch) * kNormChunk;
        cell_norms(c.source, b, C, j0, std::min(j0 + kNormChunk, c.pb.cells0()), s.inv_q.data() + b * N);
    } else {
        const int64_t q = item - c.plan.target_items, per_batch = (N + kQueryChunk - 1) / kQueryChunk;
        const int64_t b = q / per_batch, n0 = (q % per_batch) * kQueryChunk;
        const float* points = static_cast<const float*>(c.args.points.data);
        const int64_t* ps = c.args.points.strides;
        for (int64_t n = n0; n < std::min(n0 + kQueryChunk, N); ++n) {
            const float* pt = points + b * ps[0] + n * ps[1];
            sample_descriptor(c.source, b, C, c.pb.h0, c.pb.w0, pt[0], pt[ps[2]],
                              s.descriptors.data() + (b * N + n) * C, s.inv_q.data() + b * N + n);
        }
    }
}

//! Channels [k0, k0 + kc) of queries n0... of batch item b as [k][MR] micro-panels (0 past N).
void pack_query_block(const Call& c, int64_t b, int64_t n0, int64_t k0, int kc, int mr_panels, float* ap) {
    const int mr = c.isa.mr;
    for (int mp = 0; mp < mr_panels; ++mp) {
        float* dst = ap + static_cast<int64_t>(mp) * kc * mr;
        for (int i = 0; i < mr; ++i) {
            const int64_t n = n0 + mp * mr + i;
            if (n >= c.pb.queries) {
                for (int k = 0; k < kc; ++k) dst[k * mr + i] = 0.0f;
            } else if (c.pb.dense) {
                for (int k = 0; k < kc; ++k) dst[k * mr + i] = c.source.at(c.source.offset(b, k0 + k, n));
            } else {
                const float* d = c.s.descriptors.data() + (b * c.pb.queries + n) * c.pb.channels + k0;
                for (int k = 0; k < kc; ++k) dst[k * mr + i] = d[k];
            }
        }
    }
}

//! Where the GEMM of channels [k0, k0 + kc) finds batch item b's target cells: the packed panels,
//! or the map itself (direct) with the packed partial last panel.
void locate_target(const Call& c, int64_t b, int64_t k0, GemmArgs* g) {
    const int64_t C = c.pb.channels, P = c.plan.panels;
    if (c.plan.direct) {
        g->tp = static_cast<const float*>(c.args.target.data) + b * c.target.stride_b + k0 * c.target.stride_c;
        g->tp_panel_stride = NR;
        g->ldt = c.target.stride_c;
        g->tail = c.plan.tail ? c.s.panels.data() + b * C * NR + k0 * NR : nullptr;
    } else {
        g->tp = c.s.panels.data() + b * P * C * NR + k0 * NR;
        g->tp_panel_stride = C * NR;
        g->ldt = NR;
        g->tail = nullptr;
    }
    g->p_last = P - 1;
}

//! Phase 1 item: raw dot products of one unit's queries with one split of the target cells, written
//! to the unit's row buffer (`slot` of the round), channel block by channel block.
void unit_products(const Call& c, int64_t first_unit, int64_t item, float* ap) {
    const int64_t slot = item / c.plan.splits, split = item % c.plan.splits, unit = first_unit + slot;
    const int64_t b = unit / c.plan.units_per_batch, n0 = (unit % c.plan.units_per_batch) * QB;
    const int64_t real = std::min<int64_t>(QB, c.pb.queries - n0);
    const int mr_panels = static_cast<int>((real + c.isa.mr - 1) / c.isa.mr);
    for (int64_t k0 = 0; k0 < c.pb.channels; k0 += KC) {
        const int kc = static_cast<int>(std::min<int64_t>(KC, c.pb.channels - k0));
        pack_query_block(c, b, n0, k0, kc, mr_panels, ap);
        GemmArgs g;
        g.kc = kc;
        g.mr_panels = mr_panels;
        g.ap = ap;
        locate_target(c, b, k0, &g);
        g.p0 = split * c.plan.panels / c.plan.splits;
        g.p1 = (split + 1) * c.plan.panels / c.plan.splits;
        g.s = c.s.rows.data() + slot * QB * c.plan.padded;
        g.lds = c.plan.padded;
        g.accumulate = k0 > 0;
        c.isa.gemm(g);
    }
}

//! Phase 2 item: the Kernel-Soft-Argmax of one row of a unit's buffer, into coords and scores.
void finish_row(const Call& c, int64_t first_unit, int64_t item) {
    const int64_t slot = item / QB, r = item % QB, unit = first_unit + slot;
    const int64_t b = unit / c.plan.units_per_batch, n = (unit % c.plan.units_per_batch) * QB + r;
    if (n >= c.pb.queries) return;
    RowArgs ra;
    ra.row = c.s.rows.data() + (slot * QB + r) * c.plan.padded;
    ra.cells = c.pb.cells1();
    ra.padded = c.plan.padded;
    ra.inv_t = c.s.inv_t.data() + b * c.plan.padded;
    ra.cell_x = c.s.cell_x.data();
    ra.cell_y = c.s.cell_y.data();
    ra.inv_q = c.s.inv_q[static_cast<size_t>(b * c.pb.queries + n)];
    ra.gauss_k = c.gauss_k;
    ra.beta = c.pb.beta;
    ra.coord_x = c.out.coords + b * c.out.cs0 + n * c.out.cs1;
    ra.coord_y = ra.coord_x + c.out.cs2;
    ra.score = c.out.scores + b * c.out.ss0 + n * c.out.ss1;
    c.isa.row(ra);
}

//! One thread's share of a call. Each phase hands out its items through one atomic counter
//! (counters[0] for phase 0, then two per round); barriers separate the phases.
void run_thread(const Call& c, std::vector<std::atomic<int64_t>>& counters, int tid, Barrier& barrier) {
    // Phase 0: target panels and norms; query descriptors and norms.
    for (int64_t item; (item = counters[0].fetch_add(1)) < c.plan.pack_items;) pack_item(c, item);
    barrier.wait();
    float* ap = c.s.ap[static_cast<size_t>(tid)].data();
    for (int64_t round = 0; round < c.plan.rounds; ++round) {
        const int64_t first_unit = round * c.plan.round_units;
        const int64_t count = std::min(c.plan.round_units, c.plan.units - first_unit);
        // Phase 1: raw dot products of each unit's queries with all target cells.
        for (int64_t item; (item = counters[1 + 2 * round].fetch_add(1)) < count * c.plan.splits;) {
            unit_products(c, first_unit, item, ap);
        }
        barrier.wait();
        // Phase 2: the Kernel-Soft-Argmax of every row.
        for (int64_t item; (item = counters[2 + 2 * round].fetch_add(1)) < count * QB;) finish_row(c, first_unit, item);
        barrier.wait();
    }
}

sd4m_status run(const sd4m_ksa_args& args, const Problem& pb, int num_threads) {
    // 1. Pick the instruction set and view the maps.
    const Isa isa = select_isa();
    const MapView source(args.source, pb.w0, pb.cells0());
    const MapView target(args.target, pb.w1, pb.cells1());

    // 2. Divide the work: query units, rounds, cell splits, and whether the target is packed.
    const Plan plan = make_plan(pb, target, num_threads);

    // 3. Allocate the scratch buffers and lay out the cells' coordinates.
    Scratch scratch;
    const sd4m_status status = allocate_scratch(pb, plan, &scratch);
    if (status != SD4M_OK) return status;

    // 4. Run the phases on a team of threads: pack, then per round the products and the rows.
    const float gauss_k = -1.0f / (2.0f * pb.sigma * pb.sigma);
    const Call call{args, pb, plan, isa, source, target, outputs_of(args), gauss_k, scratch};
    std::vector<std::atomic<int64_t>> counters(static_cast<size_t>(1 + 2 * plan.rounds));
    for (auto& counter : counters) counter.store(0);
    run_team(plan.team, [&](int tid, int, Barrier& barrier) { run_thread(call, counters, tid, barrier); });
    return SD4M_OK;
}

}  // namespace
}  // namespace sd4m

extern "C" sd4m_status sd4m_ksa_cpu(const sd4m_ksa_args* args, int num_threads) {
    sd4m::Problem problem;
    const sd4m_status status = sd4m::validate(args, &problem);
    if (status != SD4M_OK || problem.empty()) return status;
    try {
        return sd4m::run(*args, problem, num_threads);
    } catch (const std::bad_alloc&) {
        sd4m::set_error("out of host memory");
        return SD4M_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        sd4m::set_error(std::string("internal error: ") + e.what());
        return SD4M_ERR_INTERNAL;
    }
}
