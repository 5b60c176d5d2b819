#include "preprocess.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

#include "error.hpp"

namespace sd4match::engine {
using nlohmann::json;

std::vector<float> sd_pixels(const Image& image, int size) {
    const Image resized = resize(image, size, size, ResampleFilter::Bilinear);
    const size_t plane = size_t(size) * size;
    std::vector<float> out(3 * plane);
    for (size_t i = 0; i < plane; ++i) {
        for (size_t c = 0; c < 3; ++c) {
            // float32 throughout, in the order Python computes it: x / 255, then (x - 0.5) / 0.5.
            const float unit = static_cast<float>(resized.rgb[3 * i + c]) / 255.0f;
            out[c * plane + i] = (unit - 0.5f) / 0.5f;
        }
    }
    return out;
}

DinoProcessorConfig read_dino_config(const std::string& path) {
    json data;
    try {
        std::ifstream in(path);
        if (!in) throw engine_error("cannot read the DINOv2 processor config '" + path + "'");
        data = json::parse(in);
    } catch (const json::exception& err) {
        throw engine_error("cannot parse the DINOv2 processor config '" + path + "' (" + err.what() + ")");
    }
    const auto unsupported = [&](const std::string& what) {
        return engine_error("the DINOv2 processor config '" + path + "' asks for " + what +
                            ", which this C++ program does not reproduce (it applies: resize of the shortest edge with "
                            "PIL bilinear or bicubic, centre crop, rescale, normalise)");
    };
    DinoProcessorConfig c;
    try {
        for (const char* flag : {"do_resize", "do_center_crop", "do_rescale", "do_normalize"})
            if (!data.value(flag, true)) throw unsupported(std::string(flag) + "=false");
        if (data.value("do_pad", false)) throw unsupported("do_pad=true");
        const json& size = data.at("size");
        if (!size.contains("shortest_edge") || size.contains("longest_edge") || size.contains("height"))
            throw unsupported("size " + size.dump());
        c.shortest_edge = size.at("shortest_edge").get<int>();
        c.crop_height = data.at("crop_size").at("height").get<int>();
        c.crop_width = data.at("crop_size").at("width").get<int>();
        const int resample = data.value("resample", 3);
        if (resample == 3)
            c.filter = ResampleFilter::Bicubic;
        else if (resample == 2)
            c.filter = ResampleFilter::Bilinear;
        else
            throw unsupported("PIL resample filter " + std::to_string(resample));
        c.rescale_factor = data.at("rescale_factor").get<double>();
        const auto mean = data.at("image_mean").get<std::vector<double>>();
        const auto std = data.at("image_std").get<std::vector<double>>();
        if (mean.size() != 3 || std.size() != 3) throw unsupported("image_mean/image_std without 3 entries");
        for (int i = 0; i < 3; ++i) {
            c.mean[i] = mean[i];
            c.std[i] = std[i];
        }
    } catch (const json::exception& err) {
        throw engine_error("the DINOv2 processor config '" + path + "' is incomplete (" + err.what() + ")");
    }
    if (c.shortest_edge <= 0 || c.crop_height <= 0 || c.crop_width <= 0)
        throw engine_error("the DINOv2 processor config '" + path + "' has non-positive sizes");
    return c;
}

std::array<int, 2> dino_resize_size(int height, int width, int shortest_edge) {
    // transformers: short side = size, long side = int(size * long / short) (true division, truncated).
    const bool portrait = width <= height;
    const int shorter = portrait ? width : height, longer = portrait ? height : width;
    const int new_long = static_cast<int>(static_cast<double>(int64_t{shortest_edge} * longer) / shorter);
    return portrait ? std::array<int, 2>{new_long, shortest_edge} : std::array<int, 2>{shortest_edge, new_long};
}

std::vector<float> dino_pixels(const Image& image, const DinoProcessorConfig& c) {
    const auto [h, w] = dino_resize_size(image.height, image.width, c.shortest_edge);
    const Image resized = resize(image, w, h, c.filter);
    // Centre crop with floor offsets; a side smaller than the crop is zero-padded (as transformers).
    const int top = (h - c.crop_height) >= 0 ? (h - c.crop_height) / 2 : -((c.crop_height - h + 1) / 2);
    const int left = (w - c.crop_width) >= 0 ? (w - c.crop_width) / 2 : -((c.crop_width - w + 1) / 2);
    const size_t plane = size_t(c.crop_height) * c.crop_width;
    std::vector<float> out(3 * plane);
    for (int y = 0; y < c.crop_height; ++y) {
        for (int x = 0; x < c.crop_width; ++x) {
            const int sy = y + top, sx = x + left;
            const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
            for (int ch = 0; ch < 3; ++ch) {
                const uint8_t v = inside ? resized.rgb[(size_t(sy) * w + sx) * 3 + ch] : 0;
                // transformers: (float64(x) * rescale_factor) -> float32, then (x - mean) / std in float32.
                const float scaled = static_cast<float>(static_cast<double>(v) * c.rescale_factor);
                out[ch * plane + size_t(y) * c.crop_width + x] =
                    (scaled - static_cast<float>(c.mean[ch])) / static_cast<float>(c.std[ch]);
            }
        }
    }
    return out;
}

}  // namespace sd4match::engine
