// manifest.json of an engine directory (docs/export.md, "manifest.json"): reading, the format
// and SDK-version checks, and the size + sha256 check of the files a runtime opens. The rules
// follow sd4match_sdk/export/manifest.py, so C++ refuses what Python refuses.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sd4match::engine {

//! The manifest schema this program reads ("format_version").
constexpr int kEngineFormatVersion = 1;
//! Marker of an engine manifest ("format").
constexpr const char* kEngineFormat = "sd4match-engine";

struct TensorSpec {
    std::string name;
    std::string dtype;                 //!< numpy name: float32, float16, int64
    std::vector<int64_t> shape;        //!< -1 for a dynamic axis
    std::vector<std::string> dynamic;  //!< the dynamic axis' name ("batch", "pairs"), "" for fixed axes
};

struct GraphEntry {
    std::string precision;
    std::string onnx;
    std::string onnx_data;  //!< "" when the weights are inside the .onnx file
    std::string plan;       //!< "" without TensorRT plans
    std::vector<TensorSpec> inputs;
    std::vector<TensorSpec> outputs;

    //! The input or output called `name`, or nullptr.
    const TensorSpec* input(const std::string& name) const;
    const TensorSpec* output(const std::string& name) const;
};

struct FileEntry {
    std::string sha256;
    uint64_t bytes = 0;
};

struct TensorRTInfo {
    std::string version;
    std::string compute_capability;  //!< "9.0"
};

struct Manifest {
    std::string directory;  //!< the engine directory it was read from
    std::string sdk_version, engine, precision, prompt_kind, context_mode;
    std::vector<std::string> categories;
    int image_size = 0, timestep = 0, ensemble = 0, max_batch = 0;
    std::array<int64_t, 3> latent_shape{};   //!< (4, h, h)
    std::array<int64_t, 3> feature_shape{};  //!< (C, G, G)
    std::map<std::string, GraphEntry> graphs;
    std::map<std::string, FileEntry> files;
    std::optional<TensorRTInfo> tensorrt;

    const GraphEntry& graph(const std::string& name) const;
    bool has_graph(const std::string& name) const { return graphs.count(name) != 0; }
    //! The files a runtime opens: "onnxruntime" -> every graph's .onnx (+ .onnx.data) and the
    //! dino_processor/ files; "tensorrt" -> the plans (+ dino_processor/).
    std::vector<std::string> runtime_files(const std::string& runtime) const;
};

//! Reads `engine_dir`/manifest.json and checks the format marker, the format version and that
//! the SDK that wrote it is compatible with `reader_sdk_version` (same rules as the Python SDK).
//! Throws Error (Engine) with a message that says what to rebuild.
Manifest read_manifest(const std::string& engine_dir, const std::string& reader_sdk_version);

//! Checks that each of `names` is listed in the manifest and exists with the listed size and
//! sha256. Throws Error (Engine) naming the file and what differs.
void verify_files(const Manifest& manifest, const std::vector<std::string>& names);

//! "1.2.3", "1.2.3.dev0", "2.0.0rc1", "1.2" -> {1, 2, 3}: leading digits only (as parse_version).
std::array<int, 3> parse_version(const std::string& version);
//! Throws Error (Engine) unless an engine written by SDK `written` can be read by `reader`.
void check_sdk_compatible(const std::string& written, const std::string& reader);

}  // namespace sd4match::engine
