// sd4match_preprocess: writes what the C++ preprocessing makes of an image, as .npy, so that
// tests (tests/cpp) can compare it with PIL and the Python SDK bit for bit.
//
//   sd4match_preprocess decode IMAGE OUT.npy                       (H, W, 3) uint8
//   sd4match_preprocess resize IMAGE W H bilinear|bicubic OUT.npy [pillow13|horizontal-first]
//                                                                  (H, W, 3) uint8, PIL Image.resize
//   sd4match_preprocess sd IMAGE S OUT.npy                         (1, 3, S, S) float32 `pixels`
//   sd4match_preprocess dino IMAGE CONFIG.json OUT.npy             (1, 3, h, w) float32 DINOv2 input
#include <iostream>
#include <string>

#include "error.hpp"
#include "image.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "resample.hpp"

using namespace sd4match::engine;

namespace {

const char* kUsage =
    "usage: sd4match_preprocess decode IMAGE OUT.npy\n"
    "       sd4match_preprocess resize IMAGE W H bilinear|bicubic OUT.npy [pillow13|horizontal-first]\n"
    "       sd4match_preprocess sd IMAGE S OUT.npy\n"
    "       sd4match_preprocess dino IMAGE PREPROCESSOR_CONFIG.json OUT.npy\n";

int to_int(const std::string& text) {
    try {
        size_t used = 0;
        const int v = std::stoi(text, &used);
        if (used == text.size() && v > 0) return v;
    } catch (const std::exception&) {
    }
    throw usage_error("expected a positive integer, got '" + text + "'");
}

void write_image(const std::string& path, const Image& image) {
    write_npy(path, {image.height, image.width, 3}, image.rgb.data());
}

int run(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "decode" && argc == 4) {
        write_image(argv[3], read_image(argv[2]));
    } else if (mode == "resize" && (argc == 7 || argc == 8)) {
        const std::string filter = argv[5], order = argc == 8 ? argv[7] : "pillow13";
        if (filter != "bilinear" && filter != "bicubic") throw usage_error("filter must be bilinear or bicubic");
        if (order != "pillow13" && order != "horizontal-first")
            throw usage_error("pass order must be pillow13 or horizontal-first");
        write_image(argv[6], resize(read_image(argv[2]), to_int(argv[3]), to_int(argv[4]),
                                    filter == "bicubic" ? ResampleFilter::Bicubic : ResampleFilter::Bilinear,
                                    order == "pillow13" ? PassOrder::Pillow13 : PassOrder::HorizontalFirst));
    } else if (mode == "sd" && argc == 5) {
        const int size = to_int(argv[3]);
        write_npy(argv[4], {1, 3, size, size}, sd_pixels(read_image(argv[2]), size).data());
    } else if (mode == "dino" && argc == 5) {
        const DinoProcessorConfig config = read_dino_config(argv[3]);
        write_npy(argv[4], {1, 3, config.crop_height, config.crop_width},
                  dino_pixels(read_image(argv[2]), config).data());
    } else {
        throw usage_error("bad arguments");
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const Error& err) {
        std::cerr << "sd4match_preprocess: error: " << err.what() << "\n";
        if (err.kind() == ErrorKind::Usage) std::cerr << kUsage;
        return 2;
    } catch (const std::exception& err) {
        std::cerr << "sd4match_preprocess: unexpected error: " << err.what() << "\n";
        return 1;
    }
}
