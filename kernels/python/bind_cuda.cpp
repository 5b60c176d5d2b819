// pybind11 module sd4match_sdk._kernels_cuda: the CUDA Kernel-Soft-Argmax over DLPack capsules.
//
// Built with SD4M_CUDA_EMULATION (tests only) the same source becomes `_kernels_cuda_emu`, which
// takes CPU tensors and runs ksa_cuda.cu on the CPU emulation of kernels/emu.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "dlpack_bridge.hpp"
#include "sd4match/kernels.h"

#ifndef SD4M_PACKAGE_VERSION  // kernels/CMakeLists.txt defines it from -DSD4MATCH_VERSION
#error "SD4M_PACKAGE_VERSION (the Python package's version) is not defined: build with kernels/CMakeLists.txt"
#endif

#ifndef SD4M_PY_MODULE_NAME
#define SD4M_PY_MODULE_NAME _kernels_cuda
#endif

#ifdef SD4M_CUDA_EMULATION
namespace {
constexpr int32_t kDevice = sd4m_py::kDLCPU;
struct DeviceGuard {  // the emulation has one "device": host memory
    explicit DeviceGuard(int) {}
};
}  // namespace
#else
#include <cuda_runtime.h>
namespace {
constexpr int32_t kDevice = sd4m_py::kDLCUDA;
//! Makes `device` current for the call and restores the caller's device afterwards.
struct DeviceGuard {
    int previous = -1;
    explicit DeviceGuard(int device) {
        if (cudaGetDevice(&previous) != cudaSuccess) {
            (void)cudaGetLastError();
            throw std::runtime_error("no usable CUDA device (cudaGetDevice failed)");
        }
        if (previous != device && cudaSetDevice(device) != cudaSuccess) {
            (void)cudaGetLastError();
            throw std::runtime_error("cannot switch to the tensors' CUDA device");
        }
    }
    ~DeviceGuard() {
        int current = -1;
        if (previous >= 0 && cudaGetDevice(&current) == cudaSuccess && current != previous) cudaSetDevice(previous);
    }
};
}  // namespace
#endif

namespace py = pybind11;

PYBIND11_MODULE(SD4M_PY_MODULE_NAME, m) {
    m.doc() = "Fused correlation + Kernel-Soft-Argmax on CUDA devices (see docs/kernels.md)";
    m.attr("__version__") = SD4M_PACKAGE_VERSION;  // the Python package's
    m.attr("VERSION") = py::make_tuple(SD4M_VERSION_MAJOR, SD4M_VERSION_MINOR);
    m.attr("FP32_MATH") = int(SD4M_KSA_FP32_MATH);
#ifdef SD4M_CUDA_EMULATION
    m.attr("EMULATED") = true;
#else
    m.attr("EMULATED") = false;
#endif
    m.def(
        "check_device",
        [](int device) {
            sd4m_status status;
            {
                py::gil_scoped_release release;
                status = sd4m_cuda_check_device(device);
            }
            return py::make_tuple(status == SD4M_OK, std::string(status == SD4M_OK ? "" : sd4m_last_error()));
        },
        py::arg("device"), "(ok, reason): can the kernel run on this CUDA device (driver, kernel image)?");
    m.def(
        "workspace_bytes",
        [](const py::object& source, const py::object& target, const py::object& points, const py::object& coords,
           const py::object& scores, float sigma, float beta, int32_t flags) {
            sd4m_ksa_args args =
                sd4m_py::make_args(source, target, points, coords, scores, sigma, beta, kDevice, nullptr);
            args.flags = flags;
            const sd4m_status status = sd4m_ksa_check(&args);
            sd4m_py::raise_status(status);
            return sd4m_ksa_cuda_workspace_bytes(&args);
        },
        py::arg("source"), py::arg("target"), py::arg("points"), py::arg("coords"), py::arg("scores"),
        py::arg("sigma"), py::arg("beta"), py::arg("flags") = 0,
        "Device scratch bytes that kernel_soft_argmax needs for these tensors.");
    m.def(
        "kernel_soft_argmax",
        [](const py::object& source, const py::object& target, const py::object& points, const py::object& coords,
           const py::object& scores, float sigma, float beta, std::uintptr_t stream, std::uintptr_t workspace,
           std::size_t workspace_bytes, int32_t flags) {
            int32_t device = 0;
            sd4m_ksa_args args =
                sd4m_py::make_args(source, target, points, coords, scores, sigma, beta, kDevice, &device);
            args.flags = flags;
            sd4m_status status;
            {
                py::gil_scoped_release release;
                DeviceGuard guard(device);
                status = sd4m_ksa_cuda(&args, reinterpret_cast<void*>(stream), reinterpret_cast<void*>(workspace),
                                       workspace_bytes);
            }
            sd4m_py::raise_status(status);
        },
        py::arg("source"), py::arg("target"), py::arg("points"), py::arg("coords"), py::arg("scores"),
        py::arg("sigma"), py::arg("beta"), py::arg("stream") = 0, py::arg("workspace") = 0,
        py::arg("workspace_bytes") = 0, py::arg("flags") = 0,
        "Enqueues the kernel on `stream` (a cudaStream_t as int; 0 = legacy default). workspace=0 lets the call "
        "allocate its scratch (stream-ordered).");
}
