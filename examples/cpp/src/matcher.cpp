#include "matcher.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "error.hpp"
#include "sd4match/kernels.h"

#ifndef SD4MATCH_SDK_VERSION
#error "SD4MATCH_SDK_VERSION (the sd4match_sdk version this program reads engines of) must be defined by CMake"
#endif

namespace sd4match::engine {
namespace {

const std::string kReexport = "re-export it with the Python SDK (sd4match-export)";

std::string format_number(double v) {
    std::ostringstream s;
    s.precision(6);
    s << v;
    return s.str();
}

//! Checks that `graph` declares `name` with `dtype` and, where `dims` is not -1, these sizes.
void expect_tensor(const Manifest& m, const std::string& graph, bool input, const std::string& name,
                   const std::string& dtype, const std::vector<int64_t>& dims) {
    const GraphEntry& g = m.graph(graph);
    const TensorSpec* spec = input ? g.input(name) : g.output(name);
    const std::string where = std::string(input ? "input" : "output") + " '" + name + "' of the " + graph + " graph";
    if (spec == nullptr)
        throw engine_error("the manifest of '" + m.directory + "' lacks the " + where + "; " + kReexport);
    if (spec->dtype != dtype)
        throw engine_error("the " + where + " is " + spec->dtype + ", expected " + dtype + "; " + kReexport);
    bool same = spec->shape.size() == dims.size();
    for (size_t i = 0; same && i < dims.size(); ++i)
        same = dims[i] < 0 ? spec->shape[i] < 0 : spec->shape[i] == dims[i];
    if (!same) {
        std::string got;
        for (size_t i = 0; i < spec->shape.size(); ++i)
            got += (i ? ", " : "") + (spec->shape[i] < 0 ? spec->dynamic[i] : std::to_string(spec->shape[i]));
        throw engine_error("the " + where + " has shape (" + got +
                           "), which does not fit the manifest's image size, ensemble "
                           "and latent/feature shapes; " +
                           kReexport);
    }
}

//! Rows [begin, end) of a tensor along axis 0.
HostTensor slice_rows(const HostTensor& t, int64_t begin, int64_t end) {
    const int64_t row = t.shape.empty() || t.shape[0] == 0 ? 0 : t.count() / t.shape[0];
    std::vector<int64_t> shape = t.shape;
    shape[0] = end - begin;
    if (t.is_int64)
        return HostTensor::int64s(shape, std::vector<int64_t>(t.i64.begin() + begin * row, t.i64.begin() + end * row));
    return HostTensor::floats(shape, std::vector<float>(t.f32.begin() + begin * row, t.f32.begin() + end * row));
}

}  // namespace

std::vector<Point> check_points(const std::vector<std::array<double, 2>>& points, int width, int height,
                                const std::string& what) {
    std::vector<Point> out;
    std::vector<size_t> bad;
    for (size_t i = 0; i < points.size(); ++i) {
        const Point p{static_cast<float>(points[i][0]), static_cast<float>(points[i][1])};  // float32, as the SDK
        const bool finite = std::isfinite(p[0]) && std::isfinite(p[1]);
        const bool inside = p[0] >= 0 && p[0] < width && p[1] >= 0 && p[1] < height;
        if (!(finite && inside)) bad.push_back(i);
        out.push_back(p);
    }
    if (bad.empty()) return out;
    std::string indices, shown;
    for (size_t k = 0; k < bad.size() && k < 20; ++k) indices += (k ? ", " : "") + std::to_string(bad[k]);
    if (bad.size() > 20) indices += " ...";
    for (size_t k = 0; k < bad.size() && k < 5; ++k)
        shown += (k ? ", " : "") + std::to_string(bad[k]) + ": (" + format_number(points[bad[k]][0]) + ", " +
                 format_number(points[bad[k]][1]) + ")";
    throw input_error(std::to_string(bad.size()) + " " + what +
                      " point(s) are NaN/inf or outside the image (0 <= x < " + std::to_string(width) + ", 0 <= y < " +
                      std::to_string(height) + "): indices [" + indices + "] [" + shown + "]; drop or clamp them");
}

// Each scale factor is a double quotient rounded to float32, and each step a float32 product:
// the SDK multiplies float32 points by torch tensors made from the same Python floats.
Point pixels_to_grid(const Point& p, int width, int height, int frame, int grid_w, int grid_h) {
    const float fx = p[0] * static_cast<float>(static_cast<double>(frame) / width);
    const float fy = p[1] * static_cast<float>(static_cast<double>(frame) / height);
    return {fx * static_cast<float>(static_cast<double>(grid_w - 1) / (frame - 1)),
            fy * static_cast<float>(static_cast<double>(grid_h - 1) / (frame - 1))};
}

Point grid_to_pixels(const Point& p, int width, int height, int frame, int grid_w, int grid_h) {
    const float fx = p[0] * static_cast<float>(static_cast<double>(frame - 1) / (grid_w - 1));
    const float fy = p[1] * static_cast<float>(static_cast<double>(frame - 1) / (grid_h - 1));
    return {fx * static_cast<float>(static_cast<double>(width) / frame),
            fy * static_cast<float>(static_cast<double>(height) / frame)};
}

std::unique_ptr<Matcher> Matcher::open(const std::string& engine_dir, const MatcherOptions& options) {
    std::unique_ptr<Matcher> m(new Matcher());
    m->options_ = options;
    m->manifest_ = read_manifest(engine_dir, SD4MATCH_SDK_VERSION);
    const Manifest& man = m->manifest_;

    const std::string& mode = man.context_mode;
    if (mode != "fixed" && mode != "table" && mode != "input")
        throw engine_error("unknown context_mode '" + mode + "' in the manifest of '" + engine_dir + "'; " + kReexport);
    const int64_t S = man.image_size, E = man.ensemble;
    const auto& L = man.latent_shape;
    const auto& F = man.feature_shape;
    expect_tensor(man, "vae_encoder", true, "pixels", "float32", {-1, 3, S, S});
    expect_tensor(man, "vae_encoder", true, "eps_vae", "float32", {-1, L[0], L[1], L[2]});
    expect_tensor(man, "vae_encoder", false, "latents", "float32", {-1, L[0], L[1], L[2]});
    expect_tensor(man, "unet", true, "latents", "float32", {-1, L[0], L[1], L[2]});
    expect_tensor(man, "unet", true, "noise", "float32", {-1, E, L[0], L[1], L[2]});
    expect_tensor(man, "unet", false, "features", "float32", {-1, F[0], F[1], F[2]});
    if (mode == "table") {
        expect_tensor(man, "unet", true, "class_index", "int64", {-1});
        if (man.categories.empty())
            throw engine_error("the manifest of '" + engine_dir + "' has a context table but no categories; " +
                               kReexport);
    }

    // The runtime: TensorRT only when asked, or for "auto" when built with it and the engine has plans.
    bool has_plans = !man.graphs.empty();
    for (const auto& [name, g] : man.graphs) has_plans = has_plans && !g.plan.empty();
    std::string runtime = options.runtime;
    if (runtime == "auto") runtime = tensorrt_available() && has_plans ? "tensorrt" : "onnxruntime";
    if (runtime == "tensorrt") {
        m->runtime_ = make_tensorrt(man, options.cuda_device);
    } else if (runtime == "onnxruntime") {
        m->runtime_ = make_onnxruntime(options.threads);
    } else {
        throw usage_error("unknown runtime '" + options.runtime + "'; choose one of: auto, onnxruntime, tensorrt");
    }
    m->runtime_name_ = m->runtime_->name();

    // Check every file the runtime opens against the manifest before opening anything.
    std::vector<std::string> graphs{"vae_encoder", "unet"};
    if (mode == "input") graphs.push_back("prompt_net");
    std::vector<std::string> files;
    for (const std::string& g : graphs)
        for (const std::string& f : m->runtime_->files(man.graph(g))) files.push_back(f);
    for (const auto& [name, entry] : man.files)
        if (name.rfind("dino_processor/", 0) == 0 && mode == "input") files.push_back(name);
    verify_files(man, files);

    if (mode == "input") {
        const std::string config =
            (std::filesystem::path(engine_dir) / "dino_processor" / "preprocessor_config.json").string();
        if (man.files.count("dino_processor/preprocessor_config.json") == 0)
            throw engine_error("CPM engine '" + engine_dir + "' lacks dino_processor/preprocessor_config.json; " +
                               kReexport);
        m->dino_ = read_dino_config(config);
        const int64_t ch = m->dino_->crop_height, cw = m->dino_->crop_width;
        expect_tensor(man, "prompt_net", true, "dino_source", "float32", {-1, 3, ch, cw});
        expect_tensor(man, "prompt_net", true, "dino_target", "float32", {-1, 3, ch, cw});
        const TensorSpec* context = man.graph("prompt_net").output("context");
        if (context == nullptr || context->shape.size() != 3)
            throw engine_error("the prompt_net graph of '" + engine_dir +
                               "' lacks its (pairs, 77, D) 'context' output; " + kReexport);
        expect_tensor(man, "unet", true, "context", "float32", {-1, context->shape[1], context->shape[2]});
        m->prompt_net_ = m->runtime_->open(man, "prompt_net");
    }
    m->vae_ = m->runtime_->open(man, "vae_encoder");
    m->unet_ = m->runtime_->open(man, "unet");
    return m;
}

void Matcher::check_category(const std::optional<std::string>& category) const {
    if (manifest_.context_mode != "table") return;  // the prompt does not depend on the category
    const auto& cats = manifest_.categories;
    if (category && std::find(cats.begin(), cats.end(), *category) != cats.end()) return;
    std::string list;
    for (const auto& c : cats) list += (list.empty() ? "" : ", ") + c;
    if (!category && manifest_.prompt_kind != "class")
        throw usage_error("this engine's text prompt is filled per category: pass --category (one of: " + list + ")");
    throw usage_error(category ? "unknown category '" + *category + "'; this engine knows: " + list
                               : "this engine has a class prompt: pass --category (one of: " + list + ")");
}

NamedTensors Matcher::run_chunked(const std::string& graph, const NamedTensors& inputs,
                                  const std::vector<std::string>& outputs) {
    GraphRunner& runner = graph == "vae_encoder" ? *vae_ : graph == "unet" ? *unet_ : *prompt_net_;
    const int64_t total = inputs.front().second.shape[0], step = manifest_.max_batch;
    std::vector<HostTensor> merged(outputs.size());
    for (int64_t begin = 0; begin < total; begin += step) {
        const int64_t end = std::min(total, begin + step);
        NamedTensors chunk;
        for (const auto& [name, t] : inputs) chunk.emplace_back(name, slice_rows(t, begin, end));
        NamedTensors result = runner.run(chunk, outputs);
        for (size_t i = 0; i < outputs.size(); ++i) {
            HostTensor& part = result[i].second;
            if (begin == 0) {
                merged[i] = std::move(part);
            } else {
                merged[i].shape[0] += part.shape[0];
                merged[i].f32.insert(merged[i].f32.end(), part.f32.begin(), part.f32.end());
            }
        }
    }
    NamedTensors out;
    for (size_t i = 0; i < outputs.size(); ++i) out.emplace_back(outputs[i], std::move(merged[i]));
    return out;
}

HostTensor Matcher::pair_context(const Image& source, const Image& target) {
    const int64_t ch = dino_->crop_height, cw = dino_->crop_width;
    NamedTensors inputs{{"dino_source", HostTensor::floats({1, 3, ch, cw}, dino_pixels(source, *dino_))},
                        {"dino_target", HostTensor::floats({1, 3, ch, cw}, dino_pixels(target, *dino_))}};
    HostTensor context = std::move(run_chunked("prompt_net", inputs, {"context"})[0].second);
    // One context per pair, repeated for its source and target image.
    HostTensor both = context;
    both.shape[0] = 2;
    both.f32.insert(both.f32.end(), context.f32.begin(), context.f32.end());
    return both;
}

HostTensor Matcher::features(const Image& source, const Image& target, const std::optional<std::string>& category,
                             const PairNoise& noise) {
    check_category(category);
    const int64_t S = manifest_.image_size, E = manifest_.ensemble;
    const auto& L = manifest_.latent_shape;
    std::vector<float> pixels = sd_pixels(source, static_cast<int>(S));
    const std::vector<float> target_pixels = sd_pixels(target, static_cast<int>(S));
    pixels.insert(pixels.end(), target_pixels.begin(), target_pixels.end());
    std::vector<float> eps = noise.source.eps_vae;
    eps.insert(eps.end(), noise.target.eps_vae.begin(), noise.target.eps_vae.end());
    NamedTensors vae_inputs{{"pixels", HostTensor::floats({2, 3, S, S}, std::move(pixels))},
                            {"eps_vae", HostTensor::floats({2, L[0], L[1], L[2]}, std::move(eps))}};
    HostTensor latents = std::move(run_chunked("vae_encoder", vae_inputs, {"latents"})[0].second);

    std::vector<float> maps = noise.source.noise;
    maps.insert(maps.end(), noise.target.noise.begin(), noise.target.noise.end());
    NamedTensors unet_inputs{{"latents", std::move(latents)},
                             {"noise", HostTensor::floats({2, E, L[0], L[1], L[2]}, std::move(maps))}};
    if (manifest_.context_mode == "table") {
        const auto& cats = manifest_.categories;
        const int64_t index = std::find(cats.begin(), cats.end(), *category) - cats.begin();
        unet_inputs.emplace_back("class_index", HostTensor::int64s({2}, {index, index}));
    } else if (manifest_.context_mode == "input") {
        unet_inputs.emplace_back("context", pair_context(source, target));
    }
    return std::move(run_chunked("unet", unet_inputs, {"features"})[0].second);
}

MatchResult Matcher::match(const Image& source, const Image& target, const std::vector<Point>& points,
                           const std::optional<std::string>& category, const PairNoise& noise,
                           HostTensor* features_out) {
    MatchResult result;
    result.query = points;
    if (points.empty()) return result;  // as the SDK: no model run for no queries
    HostTensor feats = features(source, target, category, noise);
    if (features_out != nullptr) *features_out = feats;
    const int64_t C = feats.shape[1], G_h = feats.shape[2], G_w = feats.shape[3];
    const int frame = manifest_.image_size;
    const int64_t N = static_cast<int64_t>(points.size());

    std::vector<float> grid(2 * N), coords(2 * N), scores(N);
    for (int64_t i = 0; i < N; ++i) {
        const Point g =
            pixels_to_grid(points[i], source.width, source.height, frame, static_cast<int>(G_w), static_cast<int>(G_h));
        grid[2 * i] = g[0];
        grid[2 * i + 1] = g[1];
    }
    const int64_t map_shape[4] = {1, C, G_h, G_w};
    const int64_t point_shape[3] = {1, N, 2};
    const int64_t score_shape[2] = {1, N};
    sd4m_ksa_args args{};
    args.source = sd4m_contiguous_tensor(feats.f32.data(), SD4M_FLOAT32, 4, map_shape);
    args.target = sd4m_contiguous_tensor(feats.f32.data() + C * G_h * G_w, SD4M_FLOAT32, 4, map_shape);
    args.points = sd4m_contiguous_tensor(grid.data(), SD4M_FLOAT32, 3, point_shape);
    args.coords = sd4m_contiguous_tensor(coords.data(), SD4M_FLOAT32, 3, point_shape);
    args.scores = sd4m_contiguous_tensor(scores.data(), SD4M_FLOAT32, 2, score_shape);
    args.sigma = options_.sigma;
    args.beta = options_.beta;
    if (sd4m_ksa_cpu(&args, options_.threads) != SD4M_OK)
        throw runtime_error(std::string("the Kernel-Soft-Argmax kernel failed: ") + sd4m_last_error());

    for (int64_t i = 0; i < N; ++i) {
        result.points.push_back(grid_to_pixels({coords[2 * i], coords[2 * i + 1]}, target.width, target.height, frame,
                                               static_cast<int>(G_w), static_cast<int>(G_h)));
        result.scores.push_back(scores[i]);
    }
    return result;
}

}  // namespace sd4match::engine
