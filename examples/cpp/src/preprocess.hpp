// Graph inputs from images, as the Python SDK computes them (docs/export.md, "Preprocessing"):
// the SD `pixels` (PIL bilinear resize to S x S, then (x / 255 - 0.5) / 0.5) and, for CPM
// engines, the DINOv2 input (the processor config saved in the engine: shortest edge with PIL
// bicubic, centre crop, x * rescale_factor, (x - mean) / std). Both are float32, CHW.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "image.hpp"
#include "resample.hpp"

namespace sd4match::engine {

//! (3, size, size) float32 in [-1, 1], channel-major: the `pixels` input of one image.
std::vector<float> sd_pixels(const Image& image, int size);

//! The parts of a DINOv2 image-processor config (preprocessor_config.json) this program applies.
struct DinoProcessorConfig {
    int shortest_edge = 256;
    int crop_height = 224, crop_width = 224;
    ResampleFilter filter = ResampleFilter::Bicubic;
    double rescale_factor = 1.0 / 255.0;
    std::array<double, 3> mean{0.485, 0.456, 0.406};
    std::array<double, 3> std{0.229, 0.224, 0.225};
};

//! Reads and checks `path` (dino_processor/preprocessor_config.json). Throws Error (Engine) for
//! a configuration this program does not reproduce (other resize rules, disabled steps).
DinoProcessorConfig read_dino_config(const std::string& path);

//! The shortest-edge resize: (height, width) as transformers' get_resize_output_image_size.
std::array<int, 2> dino_resize_size(int height, int width, int shortest_edge);

//! (3, crop_height, crop_width) float32: one image's `dino_source` / `dino_target` input.
std::vector<float> dino_pixels(const Image& image, const DinoProcessorConfig& config);

}  // namespace sd4match::engine
