#include "manifest.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "error.hpp"
#include "sha256.hpp"

namespace sd4match::engine {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kReexport = "re-export it with the Python SDK: sd4match-export --model ... --prompt ... --out DIR";

TensorSpec read_tensor(const json& j) {
    TensorSpec spec;
    spec.name = j.at("name").get<std::string>();
    spec.dtype = j.at("dtype").get<std::string>();
    for (const json& d : j.at("shape")) {
        if (d.is_string()) {
            spec.shape.push_back(-1);
            spec.dynamic.push_back(d.get<std::string>());
        } else {
            spec.shape.push_back(d.get<int64_t>());
            spec.dynamic.emplace_back();
        }
    }
    return spec;
}

std::string optional_string(const json& j, const char* key) {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? std::string() : it->get<std::string>();
}

std::array<int64_t, 3> read_shape3(const json& j, const char* key) {
    const json& a = j.at(key);
    if (!a.is_array() || a.size() != 3)
        throw engine_error(std::string("the engine manifest's '") + key + "' must have 3 entries; " + kReexport);
    return {a[0].get<int64_t>(), a[1].get<int64_t>(), a[2].get<int64_t>()};
}

const TensorSpec* find_spec(const std::vector<TensorSpec>& specs, const std::string& name) {
    for (const TensorSpec& s : specs)
        if (s.name == name) return &s;
    return nullptr;
}

}  // namespace

const TensorSpec* GraphEntry::input(const std::string& name) const { return find_spec(inputs, name); }
const TensorSpec* GraphEntry::output(const std::string& name) const { return find_spec(outputs, name); }

const GraphEntry& Manifest::graph(const std::string& name) const {
    auto it = graphs.find(name);
    if (it == graphs.end())
        throw engine_error("the engine manifest in '" + directory + "' has no '" + name + "' graph; " + kReexport);
    return it->second;
}

std::vector<std::string> Manifest::runtime_files(const std::string& runtime) const {
    std::vector<std::string> names;
    for (const auto& [name, g] : graphs) {
        if (runtime == "tensorrt") {
            if (!g.plan.empty()) names.push_back(g.plan);
        } else {
            names.push_back(g.onnx);
            if (!g.onnx_data.empty()) names.push_back(g.onnx_data);
        }
    }
    for (const auto& [name, entry] : files)
        if (name.rfind("dino_processor/", 0) == 0) names.push_back(name);
    return names;
}

std::array<int, 3> parse_version(const std::string& version) {
    std::array<int, 3> parts{0, 0, 0};
    size_t count = 0, pos = 0;
    while (count < 3 && pos <= version.size()) {
        size_t end = version.find('.', pos);
        const std::string piece = version.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        size_t digits = 0;
        while (digits < piece.size() && std::isdigit(static_cast<unsigned char>(piece[digits]))) ++digits;
        if (digits == 0) break;
        parts[count++] = std::stoi(piece.substr(0, digits));
        if (digits < piece.size() || end == std::string::npos) break;  // "0rc1": a suffix ends the numeric part
        pos = end + 1;
    }
    if (count == 0) throw engine_error("unreadable version '" + version + "' in the engine manifest; " + kReexport);
    return parts;
}

void check_sdk_compatible(const std::string& written, const std::string& reader) {
    const auto w = parse_version(written), r = parse_version(reader);
    if (w > r)
        throw engine_error("the engine was written by sd4match-sdk " + written +
                           ", newer than the SDK this program was built from (" + reader +
                           "); rebuild this program from sd4match-sdk " + written + " or newer, or " + kReexport);
    const bool same_series = w[0] == r[0] && (r[0] > 0 || w[1] == r[1]);
    if (!same_series)
        throw engine_error("the engine was written by sd4match-sdk " + written +
                           ", whose engine format this program (built from " + reader + ") does not read; " +
                           kReexport);
}

Manifest read_manifest(const std::string& engine_dir, const std::string& reader_sdk_version) {
    const fs::path path = fs::path(engine_dir) / "manifest.json";
    std::error_code ec;
    if (!fs::is_directory(engine_dir, ec))
        throw engine_error("engine directory '" + engine_dir + "' not found (export one with sd4match-export)");
    if (!fs::is_regular_file(path, ec))
        throw engine_error("'" + path.string() + "' not found: '" + engine_dir +
                           "' is not an engine directory (or the export did not finish)");
    json data;
    try {
        std::ifstream in(path);
        if (!in) throw engine_error("cannot read '" + path.string() + "'; " + kReexport);
        data = json::parse(in);
    } catch (const json::exception& err) {
        throw engine_error("cannot read '" + path.string() + "' (" + err.what() + "); " + kReexport);
    }
    const std::string marker = data.is_object() && data.contains("format") && data["format"].is_string()
                                   ? data["format"].get<std::string>()
                                   : std::string("<missing>");
    if (marker != kEngineFormat)
        throw engine_error("'" + path.string() + "' is not an sd4match engine manifest (format=" + marker + ")");
    const json version = data.value("format_version", json());
    if (!version.is_number_integer() || version.get<int>() != kEngineFormatVersion)
        throw engine_error("'" + path.string() + "' has engine format version " + version.dump() +
                           "; this program reads version " + std::to_string(kEngineFormatVersion) +
                           ". Use the SDK that wrote it, or " + kReexport);
    const json written = data.value("sdk_version", json());
    check_sdk_compatible(written.is_string() ? written.get<std::string>() : written.dump(), reader_sdk_version);

    Manifest m;
    m.directory = engine_dir;
    try {
        m.sdk_version = data.at("sdk_version").get<std::string>();
        m.engine = data.at("engine").get<std::string>();
        m.precision = data.at("precision").get<std::string>();
        m.prompt_kind = data.at("prompt_kind").get<std::string>();
        m.context_mode = data.at("context_mode").get<std::string>();
        m.categories = data.value("categories", std::vector<std::string>());
        m.image_size = data.at("image_size").get<int>();
        m.timestep = data.at("timestep").get<int>();
        m.ensemble = data.at("ensemble").get<int>();
        m.max_batch = data.at("max_batch").get<int>();
        m.latent_shape = read_shape3(data, "latent_shape");
        m.feature_shape = read_shape3(data, "feature_shape");
        for (const auto& [name, g] : data.at("graphs").items()) {
            GraphEntry entry;
            entry.precision = g.at("precision").get<std::string>();
            entry.onnx = g.at("onnx").get<std::string>();
            entry.onnx_data = optional_string(g, "onnx_data");
            entry.plan = optional_string(g, "plan");
            for (const json& t : g.at("inputs")) entry.inputs.push_back(read_tensor(t));
            for (const json& t : g.at("outputs")) entry.outputs.push_back(read_tensor(t));
            m.graphs.emplace(name, std::move(entry));
        }
        for (const auto& [name, f] : data.at("files").items())
            m.files.emplace(name, FileEntry{f.at("sha256").get<std::string>(), f.at("bytes").get<uint64_t>()});
        if (data.contains("tensorrt") && !data["tensorrt"].is_null()) {
            const json& t = data["tensorrt"];
            m.tensorrt =
                TensorRTInfo{t.at("version").get<std::string>(), t.at("compute_capability").get<std::string>()};
        }
    } catch (const json::exception& err) {
        throw engine_error("'" + path.string() + "' is incomplete or malformed (" + err.what() + "); " + kReexport);
    }
    if (m.image_size <= 0 || m.ensemble <= 0 || m.max_batch <= 0 || m.latent_shape[0] <= 0 || m.feature_shape[1] < 2)
        throw engine_error("'" + path.string() +
                           "' has invalid sizes (image_size, ensemble, max_batch, latent or feature shape); " +
                           kReexport);
    return m;
}

void verify_files(const Manifest& manifest, const std::vector<std::string>& names) {
    for (const std::string& name : names) {
        auto it = manifest.files.find(name);
        const fs::path path = fs::path(manifest.directory) / name;
        if (it == manifest.files.end())
            throw engine_error("'" + name + "' is used by the engine but not listed in its manifest; " + kReexport);
        std::error_code ec;
        if (!fs::is_regular_file(path, ec))
            throw engine_error("engine file '" + path.string() + "' is missing; copy the whole engine directory or " +
                               kReexport);
        const uint64_t size = fs::file_size(path, ec);
        std::string found;
        if (ec) {
            found = "its size cannot be read: " + ec.message();
        } else if (size != it->second.bytes) {
            found = std::to_string(size) + " bytes, the manifest says " + std::to_string(it->second.bytes);
        } else {
            const std::string digest = file_sha256(path.string());
            if (digest == it->second.sha256) continue;
            found = "sha256 " + digest + ", the manifest says " + it->second.sha256;
        }
        throw engine_error(
            "engine file '" + path.string() + "' differs from its manifest (" + found +
            "): it was modified, truncated or belongs to another export. Rebuild the engine directory: " + kReexport);
    }
}

}  // namespace sd4match::engine
