// ONNX Runtime through its C++ API. The API table is fetched explicitly (ORT_API_MANUAL_INIT)
// so that a library older than the headers gives a clear message instead of a crash.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <filesystem>
#include <mutex>

#include "error.hpp"
#include "runtime.hpp"

namespace sd4match::engine {
namespace {

void init_api() {
    static std::once_flag once;
    static const OrtApi* api = nullptr;
    std::call_once(once, [] {
        api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
        if (api != nullptr) Ort::InitApi(api);
    });
    if (api == nullptr)
        throw runtime_error(std::string("the ONNX Runtime library (") + OrtGetApiBase()->GetVersionString() +
                            ") does not provide API version " + std::to_string(ORT_API_VERSION) +
                            " that this program was compiled for; use an onnxruntime library of version 1." +
                            std::to_string(ORT_API_VERSION) + " or newer (examples/cpp/fetch_deps.sh)");
}

ONNXTensorElementDataType element_type(const std::string& numpy_dtype) {
    if (numpy_dtype == "float32") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (numpy_dtype == "int64") return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    if (numpy_dtype == "float16") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

class OnnxGraph final : public GraphRunner {
  public:
    OnnxGraph(std::shared_ptr<Ort::Env> env, const Ort::SessionOptions& options, const Manifest& manifest,
              const std::string& graph)
        : env_(std::move(env)), graph_(graph), session_(nullptr) {
        const GraphEntry& entry = manifest.graph(graph);
        const std::string path = (std::filesystem::path(manifest.directory) / entry.onnx).string();
        try {
            session_ = Ort::Session(*env_, path.c_str(), options);
        } catch (const Ort::Exception& err) {
            throw engine_error("ONNX Runtime cannot load '" + path + "': " + err.what());
        }
        Ort::AllocatorWithDefaultOptions allocator;
        std::vector<std::string> inputs, outputs;
        for (size_t i = 0; i < session_.GetInputCount(); ++i) {
            inputs.push_back(session_.GetInputNameAllocated(i, allocator).get());
            const Ort::TypeInfo type = session_.GetInputTypeInfo(i);  // owns what the view below reads
            const auto info = type.GetTensorTypeAndShapeInfo();
            const TensorSpec* spec = entry.input(inputs.back());
            if (spec != nullptr && info.GetElementType() != element_type(spec->dtype))
                throw engine_error("input '" + inputs.back() + "' of '" + path + "' is not of the manifest's dtype " +
                                   spec->dtype + "; the engine directory is inconsistent: re-export it");
        }
        for (size_t i = 0; i < session_.GetOutputCount(); ++i)
            outputs.push_back(session_.GetOutputNameAllocated(i, allocator).get());
        check_tensor_names(manifest, graph, "inputs", entry.inputs, inputs);
        check_tensor_names(manifest, graph, "outputs", entry.outputs, outputs);
    }

    NamedTensors run(const NamedTensors& inputs, const std::vector<std::string>& outputs) override {
        const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        std::vector<const char*> input_names, output_names;
        std::vector<Ort::Value> values;
        for (const auto& [name, tensor] : inputs) {
            input_names.push_back(name.c_str());
            // ONNX Runtime only reads inputs; the API takes non-const pointers.
            if (tensor.is_int64) {
                values.push_back(Ort::Value::CreateTensor<int64_t>(memory, const_cast<int64_t*>(tensor.i64.data()),
                                                                   tensor.i64.size(), tensor.shape.data(),
                                                                   tensor.shape.size()));
            } else {
                values.push_back(Ort::Value::CreateTensor<float>(memory, const_cast<float*>(tensor.f32.data()),
                                                                 tensor.f32.size(), tensor.shape.data(),
                                                                 tensor.shape.size()));
            }
        }
        for (const std::string& name : outputs) output_names.push_back(name.c_str());
        std::vector<Ort::Value> results;
        try {
            results = session_.Run(Ort::RunOptions{nullptr}, input_names.data(), values.data(), values.size(),
                                   output_names.data(), output_names.size());
        } catch (const Ort::Exception& err) {
            throw runtime_error("ONNX Runtime failed running the " + graph_ + " graph: " + err.what());
        }
        NamedTensors out;
        for (size_t i = 0; i < results.size(); ++i) {
            const auto info = results[i].GetTensorTypeAndShapeInfo();
            if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
                throw engine_error("output '" + outputs[i] + "' of the " + graph_ + " graph is not float32");
            const float* data = results[i].GetTensorData<float>();
            out.emplace_back(outputs[i], HostTensor::floats(info.GetShape(),
                                                            std::vector<float>(data, data + info.GetElementCount())));
        }
        return out;
    }

  private:
    std::shared_ptr<Ort::Env> env_;  // outlives the session
    std::string graph_;
    Ort::Session session_;
};

class OnnxRuntime final : public Runtime {
  public:
    explicit OnnxRuntime(int threads) {
        init_api();
        env_ = std::make_shared<Ort::Env>(ORT_LOGGING_LEVEL_ERROR, "sd4match");
        options_ = Ort::SessionOptions();
        if (threads > 0) options_.SetIntraOpNumThreads(threads);
        options_.SetInterOpNumThreads(1);
        options_.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);  // Python's default
    }
    std::string name() const override { return "onnxruntime"; }
    std::vector<std::string> files(const GraphEntry& graph) const override {
        std::vector<std::string> names{graph.onnx};
        if (!graph.onnx_data.empty()) names.push_back(graph.onnx_data);
        return names;
    }
    std::unique_ptr<GraphRunner> open(const Manifest& manifest, const std::string& graph) override {
        return std::make_unique<OnnxGraph>(env_, options_, manifest, graph);
    }

  private:
    std::shared_ptr<Ort::Env> env_;
    Ort::SessionOptions options_{nullptr};  // made after init_api()
};

}  // namespace

std::unique_ptr<Runtime> make_onnxruntime(int threads) {
    try {
        return std::make_unique<OnnxRuntime>(threads);
    } catch (const Ort::Exception& err) {
        throw runtime_error(std::string("ONNX Runtime could not start: ") + err.what());
    }
}

std::string onnxruntime_version() { return OrtGetApiBase()->GetVersionString(); }

}  // namespace sd4match::engine
