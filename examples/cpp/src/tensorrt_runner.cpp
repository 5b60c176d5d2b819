// TensorRT runtime (built with -DSD4MATCH_TENSORRT=ON/AUTO when NvInfer.h and libnvinfer are
// found). NOT VERIFIED: written against the documented TensorRT 10 C++ API (IRuntime,
// deserializeCudaEngine, IExecutionContext::setInputShape / setTensorAddress / enqueueV3) but
// never compiled or run in this project's CI, which has neither TensorRT nor a GPU.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "error.hpp"
#include "runtime.hpp"

namespace sd4match::engine {
namespace {

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

class Logger final : public nvinfer1::ILogger {
  public:
    void log(Severity severity, const char* message) noexcept override {
        if (severity <= Severity::kERROR) std::fprintf(stderr, "TensorRT: %s\n", message);
    }
};

//! The logger and runtime that every plan of an engine shares (the logger must outlive the runtime).
struct TrtShared {
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
};

struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { cuda_check(cudaMalloc(&ptr, bytes ? bytes : 1), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

size_t element_size(nvinfer1::DataType type) {
    switch (type) {
        case nvinfer1::DataType::kFLOAT:
            return 4;
        case nvinfer1::DataType::kINT64:
            return 8;
        case nvinfer1::DataType::kHALF:
            return 2;
        case nvinfer1::DataType::kINT32:
            return 4;
        default:
            throw engine_error("a TensorRT plan tensor has a data type this program does not handle");
    }
}

class TrtGraph final : public GraphRunner {
  public:
    TrtGraph(std::shared_ptr<TrtShared> runtime, const Manifest& manifest, const std::string& graph, int device)
        : runtime_(std::move(runtime)), graph_(graph), device_(device) {
        const std::string path = (std::filesystem::path(manifest.directory) / manifest.graph(graph).plan).string();
        std::ifstream in(path, std::ios::binary);
        const std::vector<char> plan((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        engine_.reset(runtime_->runtime->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_)
            throw engine_error("TensorRT could not deserialize '" + path +
                               "'; rebuild it with sd4match-export --engine trt");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw runtime_error("TensorRT could not create an execution context for '" + path + "'");
        std::vector<std::string> inputs, outputs;
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
            const char* name = engine_->getIOTensorName(i);
            (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs : outputs).push_back(name);
        }
        check_tensor_names(manifest, graph, "inputs", manifest.graph(graph).inputs, inputs);
        check_tensor_names(manifest, graph, "outputs", manifest.graph(graph).outputs, outputs);
        outputs_ = outputs;
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }
    ~TrtGraph() override { cudaStreamDestroy(stream_); }

    NamedTensors run(const NamedTensors& inputs, const std::vector<std::string>& wanted) override {
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        std::vector<std::unique_ptr<DeviceBuffer>> buffers;
        for (const auto& [name, tensor] : inputs) {
            const size_t bytes = tensor.count() * (tensor.is_int64 ? sizeof(int64_t) : sizeof(float));
            if (element_size(engine_->getTensorDataType(name.c_str())) != (tensor.is_int64 ? 8u : 4u))
                throw engine_error("input '" + name + "' of the " + graph_ +
                                   " plan has another data type than the manifest");
            buffers.push_back(std::make_unique<DeviceBuffer>(bytes));
            const void* host = tensor.is_int64 ? static_cast<const void*>(tensor.i64.data())
                                               : static_cast<const void*>(tensor.f32.data());
            cuda_check(cudaMemcpyAsync(buffers.back()->ptr, host, bytes, cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync");
            nvinfer1::Dims dims{};
            dims.nbDims = static_cast<int32_t>(tensor.shape.size());
            for (size_t d = 0; d < tensor.shape.size(); ++d) dims.d[d] = tensor.shape[d];
            if (!context_->setInputShape(name.c_str(), dims))
                throw runtime_error("TensorRT refused the shape of input '" + name + "' of the " + graph_ +
                                    " plan (outside its profile?)");
            context_->setTensorAddress(name.c_str(), buffers.back()->ptr);
        }
        std::vector<std::pair<std::string, DeviceBuffer*>> produced;
        std::vector<std::vector<int64_t>> shapes;
        for (const std::string& name : outputs_) {  // every output needs an address, wanted or not
            const nvinfer1::Dims dims = context_->getTensorShape(name.c_str());
            std::vector<int64_t> shape(dims.d, dims.d + dims.nbDims);
            int64_t count = 1;
            for (int64_t d : shape) count *= d;
            buffers.push_back(
                std::make_unique<DeviceBuffer>(count * element_size(engine_->getTensorDataType(name.c_str()))));
            context_->setTensorAddress(name.c_str(), buffers.back()->ptr);
            produced.emplace_back(name, buffers.back().get());
            shapes.push_back(shape);
        }
        if (!context_->enqueueV3(stream_))
            throw runtime_error("TensorRT execution of the " + graph_ + " plan failed (see the TensorRT log)");
        NamedTensors out;
        for (const std::string& name : wanted) {
            size_t i = 0;
            while (i < produced.size() && produced[i].first != name) ++i;
            if (i == produced.size()) throw engine_error("the " + graph_ + " plan has no output '" + name + "'");
            if (engine_->getTensorDataType(name.c_str()) != nvinfer1::DataType::kFLOAT)
                throw engine_error("output '" + name + "' of the " + graph_ + " plan is not float32");
            HostTensor t;
            t.shape = shapes[i];
            t.f32.resize(t.count());
            cuda_check(cudaMemcpyAsync(t.f32.data(), produced[i].second->ptr, t.f32.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_),
                       "cudaMemcpyAsync");
            out.emplace_back(name, std::move(t));
        }
        cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        return out;
    }

  private:
    std::shared_ptr<TrtShared> runtime_;  // outlives the engine and context (declared first)
    std::string graph_;
    int device_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    std::vector<std::string> outputs_;
    cudaStream_t stream_ = nullptr;
};

class TensorRT final : public Runtime {
  public:
    explicit TensorRT(int device) : device_(device), shared_(std::make_shared<TrtShared>()) {
        cuda_check(cudaSetDevice(device_), "cudaSetDevice");
        shared_->runtime.reset(nvinfer1::createInferRuntime(shared_->logger));
        if (!shared_->runtime) throw runtime_error("TensorRT could not create a runtime");
    }
    std::string name() const override { return "tensorrt"; }
    std::vector<std::string> files(const GraphEntry& graph) const override { return {graph.plan}; }
    std::unique_ptr<GraphRunner> open(const Manifest& manifest, const std::string& graph) override {
        return std::make_unique<TrtGraph>(shared_, manifest, graph, device_);
    }

  private:
    int device_;
    std::shared_ptr<TrtShared> shared_;
};

}  // namespace

bool tensorrt_available() { return true; }

std::unique_ptr<Runtime> make_tensorrt(const Manifest& manifest, int device) {
    const std::string rebuild =
        "rebuild the plans on this machine (sd4match-export --engine trt --plans-only --out DIR) or use --runtime "
        "onnxruntime";
    for (const auto& [name, graph] : manifest.graphs)
        if (graph.plan.empty())
            throw usage_error("'" + manifest.directory + "' holds no TensorRT plan for " + name + "; " + rebuild);
    if (!manifest.tensorrt)
        throw engine_error("the manifest lists TensorRT plans but no 'tensorrt' section; " + rebuild);
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const std::string capability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    if (manifest.tensorrt->compute_capability != capability)
        throw engine_error("the TensorRT plans were built for compute capability " +
                           manifest.tensorrt->compute_capability + "; CUDA device " + std::to_string(device) + " has " +
                           capability + ": " + rebuild);
    // The library reports major * 10000 + minor * 100 + patch; the manifest has Python's "10.3.0(.build)".
    const int32_t linked = getInferLibVersion();
    const auto parts = parse_version(manifest.tensorrt->version);
    if (parts[0] * 10000 + parts[1] * 100 + parts[2] != linked)
        throw engine_error("the TensorRT plans were built with TensorRT " + manifest.tensorrt->version +
                           "; this program uses TensorRT " + std::to_string(linked / 10000) + "." +
                           std::to_string(linked / 100 % 100) + "." + std::to_string(linked % 100) + ": " + rebuild);
    return std::make_unique<TensorRT>(device);
}

}  // namespace sd4match::engine
