// Keypoint matching through an engine directory, as sd4match_sdk's Matcher does for engines:
// images -> `pixels` (+ DINOv2 inputs for CPM) -> vae_encoder -> unet (raw `features`) ->
// Kernel-Soft-Argmax of the kernel library (sd4m_ksa_cpu), with the coordinate maps of
// sd4match_sdk/ops/geometry.py computed in the same float32 steps.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "image.hpp"
#include "manifest.hpp"
#include "noise.hpp"
#include "preprocess.hpp"
#include "runtime.hpp"

namespace sd4match::engine {

using Point = std::array<float, 2>;  //!< (x, y)

struct MatcherOptions {
    std::string runtime = "auto";  //!< "auto" (TensorRT when built and the engine has plans), "onnxruntime", "tensorrt"
    int threads = 0;               //!< ONNX Runtime intra-op and kernel threads; 0: all
    int cuda_device = 0;           //!< TensorRT device
    float sigma = 7.0f;            //!< Kernel-Soft-Argmax Gaussian width in cells
    float beta = 0.04f;            //!< softmax temperature
};

struct MatchResult {
    std::vector<Point> query;   //!< the query points, source pixels
    std::vector<Point> points;  //!< their matches, target pixels
    std::vector<float> scores;  //!< peak probability of each match
};

//! Float32 query points from (x, y) doubles, checked against a W x H image: throws Error (Input)
//! naming the indices of NaN/infinite points and points outside 0 <= x < W, 0 <= y < H.
std::vector<Point> check_points(const std::vector<std::array<double, 2>>& points, int width, int height,
                                const std::string& what = "source");

//! Pixels -> S x S frame -> feature grid (align corners), and back, in float32 as the SDK.
Point pixels_to_grid(const Point& p, int width, int height, int frame, int grid_w, int grid_h);
Point grid_to_pixels(const Point& p, int width, int height, int frame, int grid_w, int grid_h);

class Matcher {
  public:
    //! Reads and checks the manifest, verifies the files the runtime opens (size + sha256), and
    //! opens the graphs. Throws Error (Engine) for a bad engine directory, (Usage) for options.
    static std::unique_ptr<Matcher> open(const std::string& engine_dir, const MatcherOptions& options);

    const Manifest& manifest() const { return manifest_; }
    const std::string& runtime_name() const { return runtime_name_; }

    //! Throws Error (Usage) when the engine needs a category that is missing or unknown.
    void check_category(const std::optional<std::string>& category) const;

    //! Raw features of the pair, (2, C, G, G): source then target.
    HostTensor features(const Image& source, const Image& target, const std::optional<std::string>& category,
                        const PairNoise& noise);

    //! Matches `points` (source pixels, already checked) into the target. `features_out`, when
    //! given, receives the raw features of the pair (not computed when there are no points).
    MatchResult match(const Image& source, const Image& target, const std::vector<Point>& points,
                      const std::optional<std::string>& category, const PairNoise& noise,
                      HostTensor* features_out = nullptr);

  private:
    Matcher() = default;
    NamedTensors run_chunked(const std::string& graph, const NamedTensors& inputs,
                             const std::vector<std::string>& outputs);
    HostTensor pair_context(const Image& source, const Image& target);

    Manifest manifest_;
    std::unique_ptr<Runtime> runtime_;
    std::string runtime_name_;
    std::unique_ptr<GraphRunner> vae_, unet_, prompt_net_;
    std::optional<DinoProcessorConfig> dino_;
    MatcherOptions options_;
};

}  // namespace sd4match::engine
