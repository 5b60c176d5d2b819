#include "resample.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "error.hpp"

namespace sd4match::engine {
namespace {

//! Fixed-point fraction bits of the coefficients: 8 bits of result, 2 for overshoot and sign.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic(double x) {  // Keys' cubic convolution, a = -0.5
    constexpr double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

//! The taps of one output axis: for output i, `count[i]` input samples from `first[i]` with
//! integer weights `weights[i * taps + k]` that sum to ~2^kPrecisionBits.
struct Taps {
    int taps = 0;
    std::vector<int> first, count;
    std::vector<int32_t> weights;
};

Taps compute_taps(int in_size, int out_size, ResampleFilter filter) {
    double (*kernel)(double) = filter == ResampleFilter::Bicubic ? bicubic : bilinear;
    const double kernel_support = filter == ResampleFilter::Bicubic ? 2.0 : 1.0;
    // Downscaling widens the kernel by the scale factor (antialiasing); upscaling keeps it.
    const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
    const double filter_scale = std::max(scale, 1.0);
    const double support = kernel_support * filter_scale;
    Taps t;
    t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
    t.first.resize(out_size);
    t.count.resize(out_size);
    t.weights.assign(size_t(out_size) * t.taps, 0);
    std::vector<double> w(t.taps);
    for (int i = 0; i < out_size; ++i) {
        const double center = (i + 0.5) * scale;
        const double inv = 1.0 / filter_scale;
        // Rounded bounds (C truncation of x + 0.5), clamped to the image.
        const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
        const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
        const int n = hi - lo;
        double total = 0.0;
        for (int k = 0; k < n; ++k) {
            w[k] = kernel((k + lo - center + 0.5) * inv);
            total += w[k];
        }
        for (int k = 0; k < n; ++k) {
            const double normalised = total != 0.0 ? w[k] / total : w[k];
            // Round half away from zero into fixed point.
            const double fixed = normalised * (1 << kPrecisionBits);
            t.weights[size_t(i) * t.taps + k] = static_cast<int32_t>(normalised < 0 ? fixed - 0.5 : fixed + 0.5);
        }
        t.first[i] = lo;
        t.count[i] = n;
    }
    return t;
}

inline uint8_t clip8(int32_t acc) {
    const int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor, as the reference table lookup
    return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

//! Horizontal pass over input rows [row0, row0 + rows) into a (rows, out_w, 3) image.
std::vector<uint8_t> horizontal(const std::vector<uint8_t>& in, int in_w, int row0, int rows, const Taps& t) {
    const int out_w = static_cast<int>(t.first.size());
    std::vector<uint8_t> out(size_t(rows) * out_w * 3);
    for (int y = 0; y < rows; ++y) {
        const uint8_t* src = in.data() + size_t(row0 + y) * in_w * 3;
        uint8_t* dst = out.data() + size_t(y) * out_w * 3;
        for (int x = 0; x < out_w; ++x) {
            const int32_t* k = t.weights.data() + size_t(x) * t.taps;
            const uint8_t* p = src + size_t(t.first[x]) * 3;
            int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
            for (int j = 0; j < t.count[x]; ++j) {
                s0 += p[3 * j + 0] * k[j];
                s1 += p[3 * j + 1] * k[j];
                s2 += p[3 * j + 2] * k[j];
            }
            dst[3 * x + 0] = clip8(s0);
            dst[3 * x + 1] = clip8(s1);
            dst[3 * x + 2] = clip8(s2);
        }
    }
    return out;
}

//! Vertical pass: output row y reads input rows first[y] - row0 ... of `in` (width w).
std::vector<uint8_t> vertical(const std::vector<uint8_t>& in, int w, int row0, const Taps& t) {
    const int out_h = static_cast<int>(t.first.size());
    std::vector<uint8_t> out(size_t(out_h) * w * 3);
    for (int y = 0; y < out_h; ++y) {
        const int32_t* k = t.weights.data() + size_t(y) * t.taps;
        const uint8_t* src = in.data() + size_t(t.first[y] - row0) * w * 3;
        uint8_t* dst = out.data() + size_t(y) * w * 3;
        for (int x = 0; x < w; ++x) {
            int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
            for (int j = 0; j < t.count[y]; ++j) {
                const uint8_t* p = src + size_t(j) * w * 3 + size_t(x) * 3;
                s0 += p[0] * k[j];
                s1 += p[1] * k[j];
                s2 += p[2] * k[j];
            }
            dst[3 * x + 0] = clip8(s0);
            dst[3 * x + 1] = clip8(s1);
            dst[3 * x + 2] = clip8(s2);
        }
    }
    return out;
}

}  // namespace

Image resize(const Image& image, int width, int height, ResampleFilter filter, PassOrder order) {
    if (width <= 0 || height <= 0)
        throw input_error("cannot resize an image to " + std::to_string(width) + "x" + std::to_string(height));
    if (image.width <= 0 || image.height <= 0) throw input_error("cannot resize an empty image");
    if (width == image.width && height == image.height) return image;  // PIL returns a copy
    const Taps tx = compute_taps(image.width, width, filter);
    const Taps ty = compute_taps(image.height, height, filter);
    Image out;
    out.width = width;
    out.height = height;
    const bool need_horizontal = width != image.width, need_vertical = height != image.height;
    const bool vertical_first = order == PassOrder::Pillow13 && height < image.height &&
                                int64_t{image.height} - height > 2 * (int64_t{image.width} - width);
    if (need_horizontal && need_vertical && vertical_first) {
        const std::vector<uint8_t> rows = vertical(image.rgb, image.width, 0, ty);
        out.rgb = horizontal(rows, image.width, 0, height, tx);
    } else if (need_horizontal && need_vertical) {
        // Only the source rows that the vertical pass reads go through the horizontal pass.
        const int row0 = ty.first.front();
        const int row_end = ty.first.back() + ty.count.back();
        const std::vector<uint8_t> band = horizontal(image.rgb, image.width, row0, row_end - row0, tx);
        out.rgb = vertical(band, width, row0, ty);
    } else if (need_horizontal) {
        out.rgb = horizontal(image.rgb, image.width, 0, image.height, tx);
    } else {
        out.rgb = vertical(image.rgb, width, 0, ty);
    }
    return out;
}

}  // namespace sd4match::engine
