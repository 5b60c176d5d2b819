// CUDA implementation of the fused correlation + Kernel-Soft-Argmax (sd4m_ksa_cuda).
//
// The N x M similarity matrix never reaches global memory. Work is tiled into blocks of
// kBM = 128 queries x kBN = 128 target cells: a block computes its tile of raw dot products
// (tensor cores for fp16 through WMMA with fp32 accumulation; fp32 FMA for fp32 inputs) into
// shared memory and reduces each row of the tile at once. Because the Gaussian is centred on the
// row's argmax over all cells, the matrix is computed twice (recomputation instead of storage):
//
//   pack     targets -> Tp[b][cell][channel] and 1/(|t|+eps); queries -> Qp[b][query][channel]
//            and 1/(|q|+eps) (bilinear samples of raw A, or A's cells in dense mode). Channels are
//            zero-padded to a multiple of 32, queries and cells to multiples of 128, so the GEMM
//            loop needs no bounds checks.
//   pass A   per (query, cell tile): the first maximum of the cosine and its cell.
//   argmax   per query: the first maximum over the tiles -> peak cell.
//   pass B   per (query, cell tile): online softmax of cos * Gaussian(peak) / beta in base 2
//            (running max, sum, and sums of the offsets dx, dy from the peak).
//   finalize per query: merge the tiles -> (peak + sum dx / z, ...), score 1 / z.
//
// Per-tile partials (16 bytes per query and tile) are the only intermediate in global memory.
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda_compat.hpp"
#include "internal.hpp"

namespace sd4m {
namespace cuda_ksa {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 256;                          // 8 warps per tile block
constexpr int kBM = 128;                               // queries per block
constexpr int kBN = 128;                               // target cells per block
constexpr int kStages = 3;                             // cp.async pipeline depth
constexpr int kLdS = kBN + 4;                          // floats per row of the S tile (16-byte rows)
constexpr int kRowThreads = 4;                         // epilogue threads per row (bank-conflict free)
constexpr int kRowsPerSweep = kThreads / kRowThreads;  // 64
constexpr int kChannelAlign = 32;                      // channels are padded to this
constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
struct Operand;
// Both operand tiles are [128 rows][kBK + pad] with 80-byte rows: 16-byte aligned for cp.async,
// 32-byte aligned fragment starts for WMMA, and 8 consecutive rows hit distinct banks.
template <>
struct Operand<__half> {
    static constexpr int kBK = 32;
    static constexpr int kLd = kBK + 8;
};
template <>
struct Operand<float> {
    static constexpr int kBK = 16;
    static constexpr int kLd = kBK + 4;
};

template <typename T>
struct Smem {
    static constexpr int kTileElems = 128 * Operand<T>::kLd;
    static constexpr int kStageElems = 2 * kTileElems;
    static constexpr size_t kPipeBytes = kStages * kStageElems * sizeof(T);
    static constexpr size_t kSBytes = size_t(kBM) * kLdS * sizeof(float);
    static constexpr size_t kMainBytes = kPipeBytes > kSBytes ? kPipeBytes : kSBytes;  // S overlays the pipe
    static constexpr size_t kTableBytes = (3 * kBN + 3 * kBM) * sizeof(float);
    static constexpr size_t kBytes = kMainBytes + kTableBytes;
};
static_assert(Smem<__half>::kMainBytes % 128 == 0 && Smem<float>::kMainBytes % 128 == 0, "table alignment");
static_assert(Operand<__half>::kLd * sizeof(__half) == 80 && Operand<float>::kLd * sizeof(float) == 80, "row size");

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
    return __float2half_rn(x);
}

// ------------------------------------------------------------------------------------------
// Packing kernels.

struct MapArgs {
    const void* data;
    int64_t stride_b, stride_c, stride_h, stride_w;
    int channels, width, cells;
};

//! dst[b][cell][c] = src[b, c, cell] (zero past `cells` and `channels`) and the inverse norms.
//! Block (32, 8): 32 cells x all channels, through a 32x32 shared tile.
template <typename In, typename T>
__global__ void __launch_bounds__(256) pack_cells_kernel(MapArgs src, int cells_pad, int channels_pad, T* dst,
                                                          float* inv_norm) {
    SD4M_DYNAMIC_SMEM(smem);
    float* tile = reinterpret_cast<float*>(smem);  // [32 channels][33]
    float* partial = tile + 32 * 33;                // [8][32]
    const int tx = threadIdx.x, ty = threadIdx.y, b = blockIdx.y;
    const int cell0 = blockIdx.x * 32;
    const int j = cell0 + tx;
    const bool valid = j < src.cells;
    const int64_t offset = valid ? b * src.stride_b + (j / src.width) * src.stride_h + (j % src.width) * src.stride_w : 0;
    const In* in = static_cast<const In*>(src.data);
    float sum_sq = 0.0f;
    for (int c0 = 0; c0 < channels_pad; c0 += 32) {
        for (int k = ty; k < 32; k += 8) {
            const int c = c0 + k;
            const float v = (valid && c < src.channels) ? to_float(in[offset + c * src.stride_c]) : 0.0f;
            tile[k * 33 + tx] = v;
            sum_sq += v * v;
        }
        __syncthreads();
        for (int r = ty; r < 32; r += 8) {
            dst[(int64_t(b) * cells_pad + cell0 + r) * channels_pad + c0 + tx] = from_float<T>(tile[tx * 33 + r]);
        }
        __syncthreads();
    }
    partial[ty * 32 + tx] = sum_sq;
    __syncthreads();
    if (ty == 0) {
        float total = 0.0f;
        for (int k = 0; k < 8; ++k) total += partial[k * 32 + tx];
        inv_norm[int64_t(b) * cells_pad + j] = valid ? 1.0f / (sqrtf(total) + SD4M_L2_EPS) : 0.0f;
    }
}

struct PointArgs {
    const float* data;
    int64_t stride_b, stride_n, stride_xy;
    int count;
};

//! dst[b][n][c] = bilinear sample of src at point n (align-corners, zero padding) and 1/(|q|+eps).
//! One block of 256 threads per (query, batch).
template <typename In, typename T>
__global__ void __launch_bounds__(256) sample_points_kernel(MapArgs src, int height, PointArgs pts, int queries_pad,
                                                             int channels_pad, T* dst, float* inv_norm) {
    SD4M_DYNAMIC_SMEM(smem);
    float* warp_sums = reinterpret_cast<float*>(smem);
    const int n = blockIdx.x, b = blockIdx.y;
    T* out = dst + (int64_t(b) * queries_pad + n) * channels_pad;
    if (n >= pts.count) {  // padding row (uniform over the block)
        for (int c = threadIdx.x; c < channels_pad; c += blockDim.x) out[c] = from_float<T>(0.0f);
        if (threadIdx.x == 0) inv_norm[int64_t(b) * queries_pad + n] = 0.0f;
        return;
    }
    const float* p = pts.data + b * pts.stride_b + n * pts.stride_n;
    const float x = p[0], y = p[pts.stride_xy];
    const float fx = floorf(x), fy = floorf(y);
    const float tx = x - fx, ty = y - fy;
    const float corner_x[4] = {fx, fx + 1.0f, fx, fx + 1.0f};
    const float corner_y[4] = {fy, fy, fy + 1.0f, fy + 1.0f};
    const float weight[4] = {(1.0f - tx) * (1.0f - ty), tx * (1.0f - ty), (1.0f - tx) * ty, tx * ty};
    int64_t offset[4] = {0, 0, 0, 0};
    bool inside[4];  // corners outside the map (and NaN points) contribute zero
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        inside[i] = corner_x[i] >= 0.0f && corner_x[i] <= float(src.width - 1) && corner_y[i] >= 0.0f &&
                    corner_y[i] <= float(height - 1);
        if (inside[i]) {
            offset[i] = b * src.stride_b + int64_t(corner_y[i]) * src.stride_h + int64_t(corner_x[i]) * src.stride_w;
        }
    }
    const In* in = static_cast<const In*>(src.data);
    float sum_sq = 0.0f;
    for (int c = threadIdx.x; c < channels_pad; c += blockDim.x) {
        float v = 0.0f;
        if (c < src.channels) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                if (inside[i]) v += to_float(in[offset[i] + c * src.stride_c]) * weight[i];
            }
        }
        out[c] = from_float<T>(v);
        sum_sq += v * v;  // the norm of the float32 sample, as the reference normalises it
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, off);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum_sq;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int w = 0; w < int(blockDim.x / 32); ++w) total += warp_sums[w];
        inv_norm[int64_t(b) * queries_pad + n] = 1.0f / (sqrtf(total) + SD4M_L2_EPS);
    }
}

// ------------------------------------------------------------------------------------------
// The tile GEMM: S[128 queries][128 cells] = Q . T^T over all channels, into shared memory.

//! Which 16-byte chunks of a [128 rows][kBK] operand tile this thread copies: the same offsets
//! for both operands and every channel step, so they are computed once per block.
template <typename T>
struct CopyPlan {
    static constexpr int kChunk = 16 / sizeof(T);  // elements per 16-byte copy
    static constexpr int kChunksPerRow = Operand<T>::kBK / kChunk;
    static constexpr int kCopies = 128 * kChunksPerRow / kThreads;  // per thread and operand
    static_assert(128 * kChunksPerRow % kThreads == 0, "every thread copies the same number of chunks");
    int smem[kCopies];
    int64_t gmem[kCopies];

    __device__ __forceinline__ explicit CopyPlan(int64_t ld) {
#pragma unroll
        for (int i = 0; i < kCopies; ++i) {
            const int c = threadIdx.x + i * kThreads;
            const int row = c / kChunksPerRow, col = (c % kChunksPerRow) * kChunk;
            smem[i] = row * Operand<T>::kLd + col;
            gmem[i] = row * ld + col;
        }
    }
    //! Copies rows [0, 128) x channels [k0, k0 + kBK) of a [row][ld] matrix into a [128][kLd] tile.
    __device__ __forceinline__ void issue(T* tile, const T* rows, int64_t k0) const {
#pragma unroll
        for (int i = 0; i < kCopies; ++i) __pipeline_memcpy_async(tile + smem[i], rows + k0 + gmem[i], 16);
    }
};

//! fp16 tile on tensor cores: 8 warps as 2 (queries) x 4 (cells), 64 x 32 outputs per warp.
struct WmmaTile {
    static constexpr int kLd = Operand<__half>::kLd;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];

    __device__ __forceinline__ void init() {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    }
    __device__ __forceinline__ void consume(const __half* sq, const __half* st) {
        const int warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4;
#pragma unroll
        for (int kk = 0; kk < Operand<__half>::kBK; kk += 16) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], st + (wn * 32 + j * 16) * kLd + kk, kLd);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
                wmma::load_matrix_sync(a, sq + (wm * 64 + i * 16) * kLd + kk, kLd);
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
            }
        }
    }
    __device__ __forceinline__ void store(float* s) {
        const int warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4;
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
                wmma::store_matrix_sync(s + (wm * 64 + i * 16) * kLdS + wn * 32 + j * 16, acc[i][j], kLdS,
                                        wmma::mem_row_major);
    }
};

//! fp32 tile with FMA: thread (ty, tx) owns rows ty + 16 i and cells tx + 16 j (i, j < 8).
struct SimtTile {
    static constexpr int kLd = Operand<float>::kLd;
    float acc[8][8];

    __device__ __forceinline__ void init() {
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
    }
    __device__ __forceinline__ void consume(const float* sq, const float* st) {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
        for (int k = 0; k < Operand<float>::kBK; k += 4) {
            float4 b[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) b[j] = *reinterpret_cast<const float4*>(st + (tx + 16 * j) * kLd + k);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float4 a = *reinterpret_cast<const float4*>(sq + (ty + 16 * i) * kLd + k);
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    float v = acc[i][j];
                    v = fmaf(a.x, b[j].x, v);
                    v = fmaf(a.y, b[j].y, v);
                    v = fmaf(a.z, b[j].z, v);
                    v = fmaf(a.w, b[j].w, v);
                    acc[i][j] = v;
                }
            }
        }
    }
    __device__ __forceinline__ void store(float* s) {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) s[(ty + 16 * i) * kLdS + tx + 16 * j] = acc[i][j];
    }
};

template <typename T>
struct TileFor;
template <>
struct TileFor<__half> {
    typedef WmmaTile type;
    static constexpr int kMinBlocks = 2;  // <= 128 registers: two blocks (16 warps) per SM
};
template <>
struct TileFor<float> {
    typedef SimtTile type;
    static constexpr int kMinBlocks = 1;  // 64 accumulators + 32 operands per thread: no register cap
};

//! Multistage cp.async pipeline over the channels; leaves the raw dot products in `s`.
template <typename T>
__device__ __forceinline__ void gemm_tile(const T* q, const T* t, int64_t ld, int k_tiles, T* pipe, float* s) {
    constexpr int kBK = Operand<T>::kBK;
    typename TileFor<T>::type tile;
    tile.init();
    const CopyPlan<T> plan(ld);
#pragma unroll
    for (int stage = 0; stage < kStages - 1; ++stage) {
        if (stage < k_tiles) {
            T* dst = pipe + stage * Smem<T>::kStageElems;
            plan.issue(dst, q, int64_t(stage) * kBK);
            plan.issue(dst + Smem<T>::kTileElems, t, int64_t(stage) * kBK);
        }
        __pipeline_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
        __pipeline_wait_prior(kStages - 2);  // the group of tile kt has landed (this thread's copies)
        __syncthreads();                     // ... everyone's; and stage (kt - 1) % kStages is free again
        const int next = kt + kStages - 1;
        if (next < k_tiles) {
            T* dst = pipe + (next % kStages) * Smem<T>::kStageElems;
            plan.issue(dst, q, int64_t(next) * kBK);
            plan.issue(dst + Smem<T>::kTileElems, t, int64_t(next) * kBK);
        }
        __pipeline_commit();
        const T* cur = pipe + (kt % kStages) * Smem<T>::kStageElems;
        tile.consume(cur, cur + Smem<T>::kTileElems);
    }
    __pipeline_wait_prior(0);
    __syncthreads();  // every warp is done with the pipeline buffers, which `s` overlays
    tile.store(s);
    __syncthreads();
}

struct TileArgs {
    const void* q;     // Qp[b][Npad][Cpad]
    const void* t;     // Tp[b][Mpad][Cpad]
    int64_t ld;        // Cpad
    const float* inv_q;  // [b][Npad]
    const float* inv_t;  // [b][Mpad]
    const int* peak;     // [b][Npad] peak cell (pass B)
    float* part;         // pass A: (value, index) pairs; pass B: (max, z, sum dx, sum dy); [b][Npad][tiles]
    int queries_pad, cells_pad, cells, width, tiles, k_tiles;
    float gauss_k;  // -log2(e) / (2 sigma^2)
    float logit_k;  // log2(e) / beta
};

//! One (query block, cell tile, batch) per block. kPass 0: first argmax; 1: online softmax.
template <typename T, int kPass>
__global__ void __launch_bounds__(kThreads, TileFor<T>::kMinBlocks) tile_kernel(TileArgs p) {
    SD4M_DYNAMIC_SMEM(smem);
    float* s = reinterpret_cast<float*>(smem);
    T* pipe = reinterpret_cast<T*>(smem);
    float* inv_t = reinterpret_cast<float*>(smem + Smem<T>::kMainBytes);
    float* cell_x = inv_t + kBN;
    float* cell_y = cell_x + kBN;
    float* inv_q = cell_y + kBN;
    float* peak_x = inv_q + kBM;
    float* peak_y = peak_x + kBM;

    const int qb = blockIdx.x, tile = blockIdx.y, b = blockIdx.z;
    const int m0 = qb * kBM, n0 = tile * kBN;
    for (int c = threadIdx.x; c < kBN; c += kThreads) {
        const int j = n0 + c;
        inv_t[c] = p.inv_t[int64_t(b) * p.cells_pad + j];
        cell_x[c] = float(j % p.width);
        cell_y[c] = float(j / p.width);
    }
    for (int r = threadIdx.x; r < kBM; r += kThreads) {
        inv_q[r] = p.inv_q[int64_t(b) * p.queries_pad + m0 + r];
        if (kPass == 1) {
            const int pk = p.peak[int64_t(b) * p.queries_pad + m0 + r];
            peak_x[r] = float(pk % p.width);
            peak_y[r] = float(pk / p.width);
        }
    }
    __syncthreads();
    const T* q = static_cast<const T*>(p.q) + (int64_t(b) * p.queries_pad + m0) * p.ld;
    const T* t = static_cast<const T*>(p.t) + (int64_t(b) * p.cells_pad + n0) * p.ld;
    gemm_tile<T>(q, t, p.ld, p.k_tiles, pipe, s);

    const int lane_in_row = threadIdx.x % kRowThreads;
    for (int sweep = 0; sweep < kBM / kRowsPerSweep; ++sweep) {
        const int r = sweep * kRowsPerSweep + threadIdx.x / kRowThreads;
        const float* row = s + r * kLdS;
        const float iq = inv_q[r];
        const int64_t out = (int64_t(b) * p.queries_pad + m0 + r) * p.tiles + tile;
        if (kPass == 0) {
            float best = -INFINITY;
            int best_j = INT_MAX;
            for (int i = 0; i < kBN / kRowThreads; ++i) {  // increasing cells: the first maximum wins
                const int c = lane_in_row + i * kRowThreads, j = n0 + c;
                if (j < p.cells) {
                    const float v = row[c] * iq * inv_t[c];
                    if (v > best) {
                        best = v;
                        best_j = j;
                    }
                }
            }
#pragma unroll
            for (int off = 1; off < kRowThreads; off <<= 1) {
                const float other = __shfl_xor_sync(0xffffffffu, best, off);
                const int other_j = __shfl_xor_sync(0xffffffffu, best_j, off);
                if (other > best || (other == best && other_j < best_j)) {
                    best = other;
                    best_j = other_j;
                }
            }
            if (lane_in_row == 0) {
                p.part[2 * out] = best;
                reinterpret_cast<int*>(p.part)[2 * out + 1] = best_j;
            }
        } else {
            const float px = peak_x[r], py = peak_y[r];
            float m = -INFINITY, z = 0.0f, sx = 0.0f, sy = 0.0f;
            for (int i = 0; i < kBN / kRowThreads; ++i) {
                const int c = lane_in_row + i * kRowThreads, j = n0 + c;
                if (j < p.cells) {
                    const float cosine = row[c] * iq * inv_t[c];
                    const float dx = cell_x[c] - px, dy = cell_y[c] - py;
                    const float logit = cosine * exp2f((dx * dx + dy * dy) * p.gauss_k) * p.logit_k;
                    if (logit > m) {  // new running maximum: rescale what was summed so far
                        const float scale = exp2f(m - logit);
                        z = z * scale + 1.0f;
                        sx = sx * scale + dx;
                        sy = sy * scale + dy;
                        m = logit;
                    } else {
                        const float e = exp2f(logit - m);
                        z += e;
                        sx += e * dx;
                        sy += e * dy;
                    }
                }
            }
#pragma unroll
            for (int off = 1; off < kRowThreads; off <<= 1) {
                const float om = __shfl_xor_sync(0xffffffffu, m, off);
                const float oz = __shfl_xor_sync(0xffffffffu, z, off);
                const float ox = __shfl_xor_sync(0xffffffffu, sx, off);
                const float oy = __shfl_xor_sync(0xffffffffu, sy, off);
                const float nm = fmaxf(m, om);
                if (nm != -INFINITY) {  // both empty (no valid cell): keep the empty state
                    const float a = exp2f(m - nm), c = exp2f(om - nm);
                    z = z * a + oz * c;
                    sx = sx * a + ox * c;
                    sy = sy * a + oy * c;
                    m = nm;
                }
            }
            if (lane_in_row == 0) {
                float4 v;
                v.x = m;
                v.y = z;
                v.z = sx;
                v.w = sy;
                reinterpret_cast<float4*>(p.part)[out] = v;
            }
        }
    }
}

//! peak[row] = the first maximum over the tiles of pass A.
__global__ void __launch_bounds__(256) argmax_kernel(const float* part, int tiles, int64_t rows, int* peak) {
    const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    float best = -INFINITY;
    int best_j = INT_MAX;
    for (int tile = 0; tile < tiles; ++tile) {
        const int64_t at = 2 * (row * tiles + tile);
        const float v = part[at];
        const int j = reinterpret_cast<const int*>(part)[at + 1];
        if (v > best || (v == best && j < best_j)) {
            best = v;
            best_j = j;
        }
    }
    peak[row] = best_j == INT_MAX ? 0 : best_j;  // all-NaN rows: cell 0
}

struct OutArgs {
    float* coords;
    int64_t cs_b, cs_n, cs_xy;
    float* scores;
    int64_t ss_b, ss_n;
};

//! Merges the tiles of pass B: coords = peak + (sum dx, sum dy) / z, score = 1 / z.
__global__ void __launch_bounds__(256) finalize_kernel(const float* part, int tiles, int queries, int queries_pad,
                                                        int batch, const int* peak, int width, OutArgs out) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= int64_t(batch) * queries) return;
    const int b = int(idx / queries), n = int(idx % queries);
    const int64_t row = int64_t(b) * queries_pad + n;
    const float4* partials = reinterpret_cast<const float4*>(part) + row * tiles;
    float m = -INFINITY;
    for (int tile = 0; tile < tiles; ++tile) m = fmaxf(m, partials[tile].x);
    float z = 0.0f, sx = 0.0f, sy = 0.0f;
    for (int tile = 0; tile < tiles; ++tile) {
        const float4 v = partials[tile];
        if (v.x == -INFINITY) continue;
        const float scale = exp2f(v.x - m);
        z += v.y * scale;
        sx += v.z * scale;
        sy += v.w * scale;
    }
    const int pk = peak[row];
    float* c = out.coords + b * out.cs_b + n * out.cs_n;
    c[0] = float(pk % width) + sx / z;
    c[out.cs_xy] = float(pk / width) + sy / z;
    out.scores[b * out.ss_b + n * out.ss_n] = 1.0f / z;
}

// ------------------------------------------------------------------------------------------
// Host side.

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
size_t align256(size_t x) { return (x + 255) / 256 * 256; }

struct Layout {
    int64_t queries_pad, cells_pad, channels_pad;
    int tiles;
    size_t q, t, inv_q, inv_t, peak, part, total;  // byte offsets into the workspace
};

//! `element`: bytes per GEMM operand (2 for the tensor-core path, 4 for fp32 math).
Layout make_layout(const Problem& pb, size_t element) {
    Layout l;
    l.queries_pad = round_up(pb.queries, kBM);
    l.cells_pad = round_up(pb.cells1(), kBN);
    l.channels_pad = round_up(pb.channels, kChannelAlign);
    l.tiles = int(l.cells_pad / kBN);
    const size_t batch = size_t(pb.batch);
    size_t at = 0;
    l.q = at;
    at = align256(at + batch * l.queries_pad * l.channels_pad * element);
    l.t = at;
    at = align256(at + batch * l.cells_pad * l.channels_pad * element);
    l.inv_q = at;
    at = align256(at + batch * l.queries_pad * sizeof(float));
    l.inv_t = at;
    at = align256(at + batch * l.cells_pad * sizeof(float));
    l.peak = at;
    at = align256(at + batch * l.queries_pad * sizeof(int));
    l.part = at;  // pass A pairs (8 bytes) and pass B quadruples (16 bytes) share this region
    at = align256(at + batch * l.queries_pad * l.tiles * 4 * sizeof(float));
    l.total = at;
    return l;
}

sd4m_status cuda_failure(cudaError_t error, const char* what) {
    set_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(error));
    return SD4M_ERR_CUDA;
}

#define SD4M_CUDA_CHECK(call, what)                              \
    do {                                                         \
        const cudaError_t sd4m_error_ = (call);                  \
        if (sd4m_error_ != cudaSuccess) return cuda_failure(sd4m_error_, what); \
    } while (0)

MapArgs map_args(const sd4m_tensor& t) {
    MapArgs m;
    m.data = t.data;
    m.stride_b = t.strides[0];
    m.stride_c = t.strides[1];
    m.stride_h = t.strides[2];
    m.stride_w = t.strides[3];
    m.channels = int(t.shape[1]);
    m.width = int(t.shape[3]);
    m.cells = int(t.shape[2] * t.shape[3]);
    return m;
}

//! In: the maps' element type; T: the GEMM operand type (__half: tensor cores, float: FMA).
template <typename In, typename T>
sd4m_status run(const sd4m_ksa_args& args, const Problem& pb, cudaStream_t stream, unsigned char* ws) {
    const Layout l = make_layout(pb, sizeof(T));
    T* qp = reinterpret_cast<T*>(ws + l.q);
    T* tp = reinterpret_cast<T*>(ws + l.t);
    float* inv_q = reinterpret_cast<float*>(ws + l.inv_q);
    float* inv_t = reinterpret_cast<float*>(ws + l.inv_t);
    int* peak = reinterpret_cast<int*>(ws + l.peak);
    float* part = reinterpret_cast<float*>(ws + l.part);
    const int batch = int(pb.batch);
    const size_t pack_smem = (32 * 33 + 8 * 32) * sizeof(float);

    // Pack the targets, then the queries.
    const MapArgs target = map_args(args.target);
    const MapArgs source = map_args(args.source);
    auto* pack = &pack_cells_kernel<In, T>;
    SD4M_LAUNCH(pack, dim3(unsigned(l.cells_pad / 32), unsigned(batch)), dim3(32, 8), pack_smem, stream, target,
                int(l.cells_pad), int(l.channels_pad), tp, inv_t);
    SD4M_CUDA_CHECK(cudaGetLastError(), "pack_cells_kernel (targets)");
    if (pb.dense) {
        SD4M_LAUNCH(pack, dim3(unsigned(l.queries_pad / 32), unsigned(batch)), dim3(32, 8), pack_smem, stream, source,
                    int(l.queries_pad), int(l.channels_pad), qp, inv_q);
        SD4M_CUDA_CHECK(cudaGetLastError(), "pack_cells_kernel (queries)");
    } else {
        PointArgs pts;
        pts.data = static_cast<const float*>(args.points.data);
        pts.stride_b = args.points.strides[0];
        pts.stride_n = args.points.strides[1];
        pts.stride_xy = args.points.strides[2];
        pts.count = int(pb.queries);
        auto* sample = &sample_points_kernel<In, T>;
        SD4M_LAUNCH(sample, dim3(unsigned(l.queries_pad), unsigned(batch)), dim3(256), 8 * sizeof(float), stream,
                    source, int(pb.h0), pts, int(l.queries_pad), int(l.channels_pad), qp, inv_q);
        SD4M_CUDA_CHECK(cudaGetLastError(), "sample_points_kernel");
    }

    TileArgs ta;
    ta.q = qp;
    ta.t = tp;
    ta.ld = l.channels_pad;
    ta.inv_q = inv_q;
    ta.inv_t = inv_t;
    ta.peak = peak;
    ta.part = part;
    ta.queries_pad = int(l.queries_pad);
    ta.cells_pad = int(l.cells_pad);
    ta.cells = int(pb.cells1());
    ta.width = int(pb.w1);
    ta.tiles = l.tiles;
    ta.k_tiles = int(l.channels_pad / Operand<T>::kBK);
    ta.gauss_k = -kLog2e / (2.0f * pb.sigma * pb.sigma);
    ta.logit_k = kLog2e / pb.beta;
    const dim3 tile_grid(unsigned(l.queries_pad / kBM), unsigned(l.tiles), unsigned(batch));
    const size_t tile_smem = Smem<T>::kBytes;
    auto* pass_a = &tile_kernel<T, 0>;
    auto* pass_b = &tile_kernel<T, 1>;
    SD4M_CUDA_CHECK(cudaFuncSetAttribute(pass_a, cudaFuncAttributeMaxDynamicSharedMemorySize, int(tile_smem)),
                    "cudaFuncSetAttribute");
    SD4M_CUDA_CHECK(cudaFuncSetAttribute(pass_b, cudaFuncAttributeMaxDynamicSharedMemorySize, int(tile_smem)),
                    "cudaFuncSetAttribute");

    SD4M_LAUNCH(pass_a, tile_grid, dim3(kThreads), tile_smem, stream, ta);
    SD4M_CUDA_CHECK(cudaGetLastError(), "tile_kernel (pass A)");
    const int64_t rows = int64_t(batch) * l.queries_pad;
    auto* merge = &argmax_kernel;
    SD4M_LAUNCH(merge, dim3(unsigned((rows + 255) / 256)), dim3(256), 0, stream, part, l.tiles, rows, peak);
    SD4M_CUDA_CHECK(cudaGetLastError(), "argmax_kernel");
    SD4M_LAUNCH(pass_b, tile_grid, dim3(kThreads), tile_smem, stream, ta);
    SD4M_CUDA_CHECK(cudaGetLastError(), "tile_kernel (pass B)");

    OutArgs out;
    out.coords = static_cast<float*>(args.coords.data);
    out.cs_b = args.coords.strides[0];
    out.cs_n = args.coords.strides[1];
    out.cs_xy = args.coords.strides[2];
    out.scores = static_cast<float*>(args.scores.data);
    out.ss_b = args.scores.strides[0];
    out.ss_n = args.scores.strides[1];
    const int64_t outputs = int64_t(batch) * pb.queries;
    auto* finalize = &finalize_kernel;
    SD4M_LAUNCH(finalize, dim3(unsigned((outputs + 255) / 256)), dim3(256), 0, stream, part, l.tiles,
                int(pb.queries), int(l.queries_pad), batch, peak, int(pb.w1), out);
    SD4M_CUDA_CHECK(cudaGetLastError(), "finalize_kernel");
    return SD4M_OK;
}

}  // namespace cuda_ksa
}  // namespace sd4m

extern "C" {

namespace {
bool tensor_cores(const sd4m::Problem& problem) {
    return problem.dtype == SD4M_FLOAT16 && !(problem.flags & SD4M_KSA_FP32_MATH);
}

sd4m_status dispatch(const sd4m_ksa_args& args, const sd4m::Problem& problem, cudaStream_t stream, unsigned char* ws) {
    using namespace sd4m::cuda_ksa;
    if (problem.dtype == SD4M_FLOAT32) return run<float, float>(args, problem, stream, ws);
    if (tensor_cores(problem)) return run<__half, __half>(args, problem, stream, ws);
    return run<__half, float>(args, problem, stream, ws);
}
}  // namespace

sd4m_status sd4m_cuda_check_device(int device) {
    using namespace sd4m::cuda_ksa;
    sd4m::clear_error();
    int previous = -1;
    cudaError_t error = cudaGetDevice(&previous);
    if (error == cudaSuccess && previous != device) error = cudaSetDevice(device);
    if (error != cudaSuccess) {
        (void)cudaGetLastError();
        return cuda_failure(error, "selecting the device");
    }
    // Loading each kernel's attributes fails when the build has no image for this architecture.
    cudaFuncAttributes attributes;
    const void* kernels[] = {
        reinterpret_cast<const void*>(&tile_kernel<__half, 0>), reinterpret_cast<const void*>(&tile_kernel<__half, 1>),
        reinterpret_cast<const void*>(&tile_kernel<float, 0>),  reinterpret_cast<const void*>(&tile_kernel<float, 1>),
        reinterpret_cast<const void*>(&finalize_kernel),
    };
    for (const void* kernel : kernels) {
        error = cudaFuncGetAttributes(&attributes, kernel);
        if (error != cudaSuccess) break;
    }
    (void)cudaGetLastError();
    if (previous >= 0 && previous != device) cudaSetDevice(previous);
    return error == cudaSuccess ? SD4M_OK : cuda_failure(error, "loading the kernels for this device");
}

size_t sd4m_ksa_cuda_workspace_bytes(const sd4m_ksa_args* args) {
    sd4m::Problem problem;
    if (sd4m::validate(args, &problem) != SD4M_OK || problem.empty()) return 0;
    return sd4m::cuda_ksa::make_layout(problem, tensor_cores(problem) ? 2 : 4).total;
}

sd4m_status sd4m_ksa_cuda(const sd4m_ksa_args* args, void* stream_handle, void* workspace, size_t workspace_bytes) {
    using namespace sd4m::cuda_ksa;
    sd4m::Problem problem;
    sd4m_status status = sd4m::validate(args, &problem);
    if (status != SD4M_OK || problem.empty()) return status;
    const Layout layout = make_layout(problem, tensor_cores(problem) ? 2 : 4);
    if (layout.tiles > 65535 || layout.cells_pad > INT_MAX || layout.queries_pad > INT_MAX) {
        sd4m::set_error("too many target cells or queries for the CUDA kernel's grid (at most 65535 * 128 cells)");
        return SD4M_ERR_INVALID_ARGUMENT;
    }
    cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
    if (workspace != nullptr) {
        if (workspace_bytes < layout.total || reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
            sd4m::set_error("the workspace must be 256-byte aligned and hold sd4m_ksa_cuda_workspace_bytes() bytes (" +
                            std::to_string(layout.total) + ")");
            return SD4M_ERR_INVALID_ARGUMENT;
        }
        return dispatch(*args, problem, stream, static_cast<unsigned char*>(workspace));
    }
    void* allocated = nullptr;
    if (cudaMallocAsync(&allocated, layout.total, stream) == cudaSuccess) {
        status = dispatch(*args, problem, stream, static_cast<unsigned char*>(allocated));
        cudaFreeAsync(allocated, stream);  // stream-ordered: after the kernels that use it
        return status;
    }
    (void)cudaGetLastError();  // no stream-ordered allocator here: plain cudaMalloc
    const cudaError_t error = cudaMalloc(&allocated, layout.total);
    if (error != cudaSuccess) {
        (void)cudaGetLastError();
        sd4m::set_error(std::string("cannot allocate the CUDA workspace: ") + cudaGetErrorString(error));
        return SD4M_ERR_OUT_OF_MEMORY;
    }
    status = dispatch(*args, problem, stream, static_cast<unsigned char*>(allocated));
    cudaStreamSynchronize(stream);  // cudaFree is not stream-ordered
    cudaFree(allocated);
    return status;
}

}  // extern "C"
