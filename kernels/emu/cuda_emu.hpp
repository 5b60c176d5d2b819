// A CPU emulation of the CUDA subset used by ksa_cuda.cu, for tests on machines without a GPU.
//
// Every thread of a block is a real std::thread; __syncthreads is a std::barrier of the block,
// warp shuffles exchange values through per-warp slots between two warp barriers, so missing or
// misplaced barriers deadlock or give wrong answers here as on a GPU. Blocks run one after
// another. Dynamic shared memory is a fresh buffer of exactly the requested size per launch,
// filled with NaN-like garbage before every block; launches check the 48 KB default limit
// (cudaFuncSetAttribute raises it, up to the 227 KB of sm_90). WMMA fragments hold the whole
// 16x16 matrix in every lane (each lane computes the full product); loads and stores check the
// pointer and leading-dimension alignment rules of the real API. cp.async copies at once but checks
// its 16-byte alignment. What this cannot show: speed, register limits, memory-model effects
// between warps without a barrier, and fragment layouts of the hardware.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "internal.hpp"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3_emu {
    unsigned x, y, z;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

struct __half {
    uint16_t bits;
};
inline __half __float2half_rn(float f) { return __half{sd4m::float_to_half_bits(f)}; }
inline float __half2float(__half h) { return sd4m::half_bits_to_float(h.bits); }

typedef void* cudaStream_t;
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorLaunchFailure = 719,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace sd4m_emu {

constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kMaxSmemOptIn = 227 * 1024;

struct BlockState {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<uint64_t> slots;
};

struct ThreadContext {
    uint3_emu thread_idx, block_idx;
    dim3 block_dim, grid_dim;
    unsigned linear;
    BlockState* state;
    unsigned char* smem;
};

inline thread_local ThreadContext* ctx = nullptr;
inline thread_local cudaError_t last_error = cudaSuccess;

inline std::mutex& attribute_mutex() {
    static std::mutex m;
    return m;
}
inline std::map<const void*, size_t>& smem_limits() {
    static std::map<const void*, size_t> limits;
    return limits;
}

inline unsigned char* dynamic_smem() { return ctx->smem; }

[[noreturn]] inline void fail(const std::string& what) {
    std::fprintf(stderr, "cuda emulation: %s\n", what.c_str());
    std::abort();  // a device-side fault: stop loudly
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
    const unsigned threads = block.x * block.y * block.z;
    size_t limit = kDefaultSmem;
    {
        std::lock_guard<std::mutex> lock(attribute_mutex());
        auto it = smem_limits().find(reinterpret_cast<const void*>(kernel));
        if (it != smem_limits().end()) limit = it->second;
    }
    if (threads == 0 || threads > 1024 || threads % 32 != 0 || smem > limit || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
        last_error = cudaErrorInvalidValue;  // as the runtime reports a bad launch configuration
        return;
    }
    // Exactly the requested bytes (rounded to the 128-byte alignment), so overruns hit the heap
    // end (address sanitizer builds catch them).
    std::unique_ptr<unsigned char, void (*)(void*)> shared(
        static_cast<unsigned char*>(std::aligned_alloc(128, (smem + 127) / 128 * 128 + (smem ? 0 : 128))), std::free);
    unsigned char* base = shared.get();
    BlockState state;
    state.slots.assign(threads, 0);
    std::barrier<> epoch(threads);
    const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
    auto worker = [&](unsigned linear) {
        ThreadContext c;
        c.thread_idx = {linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y)};
        c.block_dim = block;
        c.grid_dim = grid;
        c.linear = linear;
        c.state = &state;
        c.smem = base;
        ctx = &c;
        for (uint64_t i = 0; i < blocks; ++i) {
            if (linear == 0) {  // fresh barriers (exited threads drop out of them) and garbage smem
                state.block.reset(new std::barrier<>(threads));
                state.warps.clear();
                for (unsigned w = 0; w < threads / 32; ++w) state.warps.emplace_back(new std::barrier<>(32));
                std::memset(base, 0xff, smem);  // 0xffffffff is a NaN: reading unwritten smem shows
            }
            epoch.arrive_and_wait();
            c.block_idx = {unsigned(i % grid.x), unsigned((i / grid.x) % grid.y), unsigned(i / (uint64_t(grid.x) * grid.y))};
            kernel(args...);
            state.block->arrive_and_drop();
            state.warps[linear / 32]->arrive_and_drop();
            epoch.arrive_and_wait();
        }
        ctx = nullptr;
    };
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (auto& t : pool) t.join();
}

}  // namespace sd4m_emu

#define threadIdx (::sd4m_emu::ctx->thread_idx)
#define blockIdx (::sd4m_emu::ctx->block_idx)
#define blockDim (::sd4m_emu::ctx->block_dim)
#define gridDim (::sd4m_emu::ctx->grid_dim)

inline void __syncthreads() { ::sd4m_emu::ctx->state->block->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::sd4m_emu::ctx->state->warps[::sd4m_emu::ctx->linear / 32]->arrive_and_wait(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    static_assert(sizeof(T) <= 8, "emulated shuffles move up to 8 bytes");
    if (mask != 0xffffffffu || width != 32) ::sd4m_emu::fail("only full-warp shuffles are emulated");
    auto* c = ::sd4m_emu::ctx;
    const unsigned warp = c->linear / 32, lane = c->linear % 32;
    uint64_t* slots = c->state->slots.data() + warp * 32;
    std::memcpy(&slots[lane], &value, sizeof(T));
    c->state->warps[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &slots[lane ^ unsigned(lane_mask)], sizeof(T));
    c->state->warps[warp]->arrive_and_wait();
    return out;
}

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes) {
    if (bytes != 4 && bytes != 8 && bytes != 16) ::sd4m_emu::fail("cp.async copies 4, 8 or 16 bytes");
    if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes) {
        ::sd4m_emu::fail("misaligned cp.async");
    }
    std::memcpy(dst, src, bytes);
}
inline void __pipeline_commit() {}
inline void __pipeline_wait_prior(size_t) {}

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[rows * cols];  // the logical matrix, row-major (every lane holds all of it)
};

template <typename T>
inline void check_matrix_pointer(const T* p, unsigned ldm) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0) ::sd4m_emu::fail("wmma pointer not 256-bit aligned");
    if ((ldm * sizeof(T)) % 16 != 0) ::sd4m_emu::fail("wmma ldm not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    check_matrix_pointer(p, ldm);
    typedef fragment<Use, M, N, K, T, Layout> F;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.x[r * F::cols + c] = std::is_same<Layout, row_major>::value ? p[r * ldm + c] : p[c * ldm + r];
}

inline float as_float(float v) { return v; }
inline float as_float(__half v) { return __half2float(v); }

template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    float out[M * N];
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float acc = c.x[m * N + n];
            for (int k = 0; k < K; ++k) acc += as_float(a.x[m * K + k]) * as_float(b.x[k * N + n]);
            out[m * N + n] = acc;
        }
    std::memcpy(d.x, out, sizeof out);
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
    check_matrix_pointer(p, ldm);
    __syncwarp();  // warp-collective: lane 0 writes once everyone has finished reading
    if (::sd4m_emu::ctx->linear % 32 == 0) {
        for (int r = 0; r < M; ++r)
            for (int c = 0; c < N; ++c) {
                if (layout == mem_row_major)
                    p[r * ldm + c] = f.x[r * N + c];
                else
                    p[c * ldm + r] = f.x[r * N + c];
            }
    }
    __syncwarp();
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, T value) {
    for (int i = 0; i < fragment<Use, M, N, K, T, Layout>::num_elements; ++i) f.x[i] = value;
}

}  // namespace wmma
}  // namespace nvcuda

// Runtime API: host memory stands in for device memory; launches are synchronous.
inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument (emulated)";
        case cudaErrorMemoryAllocation: return "out of memory (emulated)";
        default: return "unknown error (emulated)";
    }
}
inline cudaError_t cudaGetLastError() {
    const cudaError_t e = ::sd4m_emu::last_error;
    ::sd4m_emu::last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFree(void* p) {
    std::free(p);
    return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
struct cudaFuncAttributes {
    int maxThreadsPerBlock;
};
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void*) {
    a->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}
template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > ::sd4m_emu::kMaxSmemOptIn) {
        return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> lock(::sd4m_emu::attribute_mutex());
    ::sd4m_emu::smem_limits()[reinterpret_cast<const void*>(kernel)] = size_t(value);
    return cudaSuccess;
}
