// Built when TensorRT is absent (the default here): --runtime tensorrt explains how to get it.
#include "error.hpp"
#include "runtime.hpp"

namespace sd4match::engine {

bool tensorrt_available() { return false; }

std::unique_ptr<Runtime> make_tensorrt(const Manifest&, int) {
    throw usage_error(
        "this program was built without TensorRT; reconfigure with -DSD4MATCH_TENSORRT=ON on a machine with "
        "TensorRT 10 (NvInfer.h, libnvinfer) and the CUDA toolkit, or use --runtime onnxruntime");
}

}  // namespace sd4match::engine
