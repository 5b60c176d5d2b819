/*
 * sd4match kernels: fused correlation + Kernel-Soft-Argmax (docs/design.md §5.3), C API.
 *
 * One operation. For every query point of a source feature map A (B, C, H0, W0):
 *   q  = bilinear sample of the raw A at the query (align-corners, zero padding, as grid_sample)
 *   q  = q / (||q|| + 1e-6);  every target cell t of B (B, C, H1, W1): t / (||t|| + 1e-6)
 *   S  = q . t over all H1*W1 cells (cosine similarity)
 *   m  = argmax S (the first maximum in row-major cell order)
 *   S' = S * exp(-||p - m||^2 / (2 sigma^2))        (p: integer cell centre (x, y))
 *   P  = softmax(S' / beta) over all cells
 *   coords = sum P * p  (x, y on B's grid)           score = max P (the peak probability)
 * Dense mode (points.ndim == 0): every cell of A is a query, in row-major order (N = H0*W0).
 *
 * Tensors are plain pointers with shapes and strides counted in elements (any layout, negative
 * strides excepted). Feature maps are float32 or float16 (both maps the same dtype); points and
 * outputs are float32. The CPU entry point takes host pointers; the CUDA entry point takes device
 * pointers and runs asynchronously on the given stream. Every function returns SD4M_OK or an
 * error code; sd4m_last_error() then describes the error (per thread).
 */
#ifndef SD4MATCH_KERNELS_H
#define SD4MATCH_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(SD4M_BUILDING_SHARED)
#define SD4M_API __declspec(dllexport)
#elif defined(_WIN32) && defined(SD4M_USING_SHARED)
#define SD4M_API __declspec(dllimport)
#elif defined(__GNUC__)
#define SD4M_API __attribute__((visibility("default")))
#else
#define SD4M_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SD4M_VERSION_MAJOR 1
#define SD4M_VERSION_MINOR 0
/** Added to the L2 norm before dividing (the official L2normalization). */
#define SD4M_L2_EPS 1e-6f

typedef enum sd4m_status {
    SD4M_OK = 0,
    SD4M_ERR_INVALID_ARGUMENT = 1, /* shapes, strides, dtypes or parameters do not fit */
    SD4M_ERR_UNSUPPORTED = 2,      /* valid, but this build cannot run it (e.g. no CUDA) */
    SD4M_ERR_CUDA = 3,             /* a CUDA runtime call or launch failed */
    SD4M_ERR_OUT_OF_MEMORY = 4,    /* host or device allocation failed */
    SD4M_ERR_INTERNAL = 5
} sd4m_status;

typedef enum sd4m_dtype { SD4M_FLOAT32 = 0, SD4M_FLOAT16 = 1 } sd4m_dtype;

/** Bits of sd4m_ksa_args.flags. */
enum {
    /** CUDA, float16 maps: correlate with fp32 FMA instead of the tensor cores (slower; sparse
     *  query samples are not rounded to float16). The CPU always computes in float32. */
    SD4M_KSA_FP32_MATH = 1
};

/** A strided view of up to 4 dimensions; strides are in elements, not bytes. */
typedef struct sd4m_tensor {
    void* data;
    sd4m_dtype dtype;
    int32_t ndim;
    int64_t shape[4];
    int64_t strides[4];
} sd4m_tensor;

/** Arguments of one Kernel-Soft-Argmax call. */
typedef struct sd4m_ksa_args {
    sd4m_tensor source; /* A: (B, C, H0, W0) raw source map, float32 or float16 */
    sd4m_tensor target; /* B: (B, C, H1, W1) raw target map, same dtype as source */
    sd4m_tensor points; /* (B, N, 2) float32 query (x, y) on A's grid; ndim == 0: dense mode */
    sd4m_tensor coords; /* out (B, N, 2) float32 expected (x, y) on B's grid */
    sd4m_tensor scores; /* out (B, N) float32 peak probability */
    float sigma;        /* Gaussian width in cells (7) */
    float beta;         /* softmax temperature (0.04) */
    int32_t flags;      /* SD4M_KSA_* bits; 0 for the defaults */
} sd4m_ksa_args;

/** A view of a contiguous (row-major) array; strides are filled in. */
SD4M_API sd4m_tensor sd4m_contiguous_tensor(void* data, sd4m_dtype dtype, int32_t ndim, const int64_t* shape);

/** Checks shapes, strides, dtypes and parameters without running anything. */
SD4M_API sd4m_status sd4m_ksa_check(const sd4m_ksa_args* args);

/**
 * Runs on the CPU (host pointers). num_threads <= 0 uses every hardware thread.
 * The call is synchronous and thread-safe (no global state).
 */
SD4M_API sd4m_status sd4m_ksa_cpu(const sd4m_ksa_args* args, int num_threads);

/** Non-zero when this library was built with the CUDA implementation. */
SD4M_API int sd4m_has_cuda(void);

/** Device scratch bytes that sd4m_ksa_cuda needs for these arguments (0 if none or invalid). */
SD4M_API size_t sd4m_ksa_cuda_workspace_bytes(const sd4m_ksa_args* args);

/**
 * Runs on the current CUDA device (device pointers), asynchronously on `stream`
 * (a cudaStream_t; NULL for the legacy default stream). `workspace` must hold
 * sd4m_ksa_cuda_workspace_bytes(args) bytes of device memory, 256-byte aligned; when it is NULL
 * the call allocates and frees its own scratch stream-ordered (cudaMallocAsync).
 * Returns SD4M_ERR_UNSUPPORTED when the library was built without CUDA.
 */
SD4M_API sd4m_status sd4m_ksa_cuda(const sd4m_ksa_args* args, void* stream, void* workspace, size_t workspace_bytes);

/**
 * Checks that sd4m_ksa_cuda can run on CUDA device `device`: the driver is recent enough and
 * this build holds machine code (or PTX) for the device's architecture. Returns SD4M_OK,
 * SD4M_ERR_CUDA (with the reason) or SD4M_ERR_UNSUPPORTED without CUDA. The caller's current
 * device is left unchanged.
 */
SD4M_API sd4m_status sd4m_cuda_check_device(int device);

/** Message of the last error raised on this thread ("" if none). */
SD4M_API const char* sd4m_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SD4MATCH_KERNELS_H */
