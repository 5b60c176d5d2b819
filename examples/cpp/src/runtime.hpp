// Graph runtimes: one GraphRunner per graph of the engine, host tensors in and out. ONNX Runtime
// (C++ API) always; TensorRT when this program was built with it (SD4MATCH_TENSORRT).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "manifest.hpp"

namespace sd4match::engine {

//! A C-contiguous host tensor of float32 or int64 values.
struct HostTensor {
    std::vector<int64_t> shape;
    std::vector<float> f32;    //!< the values when !is_int64
    std::vector<int64_t> i64;  //!< the values when is_int64
    bool is_int64 = false;

    int64_t count() const;
    static HostTensor floats(std::vector<int64_t> shape, std::vector<float> values);
    static HostTensor int64s(std::vector<int64_t> shape, std::vector<int64_t> values);
};

using NamedTensors = std::vector<std::pair<std::string, HostTensor>>;

//! Runs one graph. Inputs are matched by name; the outputs come back in the order asked for.
class GraphRunner {
  public:
    virtual ~GraphRunner() = default;
    virtual NamedTensors run(const NamedTensors& inputs, const std::vector<std::string>& outputs) = 0;
};

//! Opens the graphs of an engine with one runtime.
class Runtime {
  public:
    virtual ~Runtime() = default;
    virtual std::string name() const = 0;
    //! The files this runtime opens for `graph` (checked against the manifest before opening).
    virtual std::vector<std::string> files(const GraphEntry& graph) const = 0;
    //! Opens `graph` of `manifest`; throws Error (Engine) when the file's tensors differ from the manifest.
    virtual std::unique_ptr<GraphRunner> open(const Manifest& manifest, const std::string& graph) = 0;
};

//! ONNX Runtime on the CPU with `threads` intra-op threads (0: ONNX Runtime's default).
std::unique_ptr<Runtime> make_onnxruntime(int threads);
//! "1.32.0": the ONNX Runtime library loaded at run time.
std::string onnxruntime_version();

//! True when this program was built with the TensorRT runtime.
bool tensorrt_available();
//! TensorRT on CUDA device `device`; throws Error (Usage) when not built with TensorRT, and
//! Error (Engine) when the manifest's plans were built for another TensorRT or GPU.
std::unique_ptr<Runtime> make_tensorrt(const Manifest& manifest, int device);

//! Checks that `actual` names (a graph file's inputs or outputs) equal the manifest's `specs`.
void check_tensor_names(const Manifest& manifest, const std::string& graph, const char* what,
                        const std::vector<TensorSpec>& specs, const std::vector<std::string>& actual);

}  // namespace sd4match::engine
