// pybind11 module sd4match_sdk._kernels: the CPU Kernel-Soft-Argmax over DLPack capsules.
#include <pybind11/pybind11.h>

#include "dlpack_bridge.hpp"
#include "sd4match/kernels.h"

#ifndef SD4M_PACKAGE_VERSION  // kernels/CMakeLists.txt defines it from -DSD4MATCH_VERSION
#error "SD4M_PACKAGE_VERSION (the Python package's version) is not defined: build with kernels/CMakeLists.txt"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_kernels, m) {
    m.doc() = "Fused correlation + Kernel-Soft-Argmax on the CPU (see docs/kernels.md)";
    m.attr("__version__") = SD4M_PACKAGE_VERSION;  // the Python package's
    m.attr("VERSION") = py::make_tuple(SD4M_VERSION_MAJOR, SD4M_VERSION_MINOR);
    m.def(
        "kernel_soft_argmax",
        [](const py::object& source, const py::object& target, const py::object& points, const py::object& coords,
           const py::object& scores, float sigma, float beta, int num_threads) {
            const sd4m_ksa_args args = sd4m_py::make_args(source, target, points, coords, scores, sigma, beta,
                                                          sd4m_py::kDLCPU, nullptr);
            sd4m_status status;
            {
                py::gil_scoped_release release;
                status = sd4m_ksa_cpu(&args, num_threads);
            }
            sd4m_py::raise_status(status);
        },
        py::arg("source"), py::arg("target"), py::arg("points"), py::arg("coords"), py::arg("scores"),
        py::arg("sigma"), py::arg("beta"), py::arg("num_threads") = 0,
        "Writes coords (B,N,2) and scores (B,N) for CPU tensors passed as DLPack capsules; points=None is dense.");
}
