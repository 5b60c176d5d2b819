// C++ conveniences over the C API of sd4match/kernels.h: exceptions instead of status codes and
// helpers that build views of contiguous arrays. Header-only; link sd4match::kernels.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "sd4match/kernels.h"

namespace sd4match {

//! A failed kernel call: the status code and sd4m_last_error()'s message.
class KernelError : public std::runtime_error {
  public:
    KernelError(sd4m_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    sd4m_status status() const noexcept { return status_; }

  private:
    sd4m_status status_;
};

inline void check(sd4m_status status) {
    if (status != SD4M_OK) throw KernelError(status, sd4m_last_error());
}

//! A view of a contiguous (row-major) array of `dtype` with the given shape (up to 4 dims).
inline sd4m_tensor contiguous(void* data, sd4m_dtype dtype, std::initializer_list<int64_t> shape) {
    if (shape.size() > 4) throw std::invalid_argument("sd4m_tensor holds at most 4 dimensions");
    int64_t dims[4] = {0, 0, 0, 0};
    int i = 0;
    for (int64_t d : shape) dims[i++] = d;
    return sd4m_contiguous_tensor(data, dtype, static_cast<int32_t>(shape.size()), dims);
}
inline sd4m_tensor contiguous(const float* data, std::initializer_list<int64_t> shape) {
    return contiguous(const_cast<float*>(data), SD4M_FLOAT32, shape);
}

//! Arguments for sparse queries (`points` (B, N, 2)) or, with `points` == nullptr, dense mode.
inline sd4m_ksa_args ksa_args(const sd4m_tensor& source, const sd4m_tensor& target, const sd4m_tensor* points,
                              const sd4m_tensor& coords, const sd4m_tensor& scores, float sigma = 7.0f,
                              float beta = 0.04f) {
    sd4m_ksa_args args{};
    args.source = source;
    args.target = target;
    if (points) args.points = *points;  // else ndim == 0: dense
    args.coords = coords;
    args.scores = scores;
    args.sigma = sigma;
    args.beta = beta;
    return args;
}

//! Runs on the CPU; num_threads <= 0 uses every hardware thread. Throws KernelError.
inline void kernel_soft_argmax_cpu(const sd4m_ksa_args& args, int num_threads = 0) {
    check(sd4m_ksa_cpu(&args, num_threads));
}

//! Enqueues on `stream` (a cudaStream_t) with device pointers. Throws KernelError.
inline void kernel_soft_argmax_cuda(const sd4m_ksa_args& args, void* stream = nullptr, void* workspace = nullptr,
                                    size_t workspace_bytes = 0) {
    check(sd4m_ksa_cuda(&args, stream, workspace, workspace_bytes));
}

}  // namespace sd4match
