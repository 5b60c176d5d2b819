#include "noise.hpp"

#include <cmath>
#include <filesystem>
#include <random>

#include "error.hpp"
#include "npy.hpp"

namespace sd4match::engine {
namespace {

std::vector<float> read_checked(const std::string& directory, const char* name, const std::vector<int64_t>& expected) {
    const std::string path = (std::filesystem::path(directory) / name).string();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
        throw input_error("noise file '" + path +
                          "' not found; write the noise directory with "
                          "examples/cpp/write_noise.py --engine DIR --seed S --out " +
                          directory);
    NpyArray array = read_npy_float32(path);
    if (array.shape != expected)
        throw input_error("noise file '" + path + "' has shape " + shape_string(array.shape) + ", this engine needs " +
                          shape_string(expected) + " (ensemble and latent size come from the engine manifest)");
    for (float v : array.data)
        if (!std::isfinite(v)) throw input_error("noise file '" + path + "' holds NaN or infinite values");
    return std::move(array.data);
}

// Standard normal pairs by the Box-Muller transform on two uniforms in (0, 1].
void fill_normal(std::mt19937_64& rng, std::vector<float>& out) {
    const auto uniform = [&rng] { return (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53; };  // (0, 1]
    for (size_t i = 0; i < out.size(); i += 2) {
        const double radius = std::sqrt(-2.0 * std::log(uniform()));
        const double angle = 2.0 * M_PI * uniform();
        out[i] = static_cast<float>(radius * std::cos(angle));
        if (i + 1 < out.size()) out[i + 1] = static_cast<float>(radius * std::sin(angle));
    }
}

}  // namespace

PairNoise read_pair_noise(const std::string& directory, int ensemble, const std::array<int64_t, 3>& latent) {
    std::error_code ec;
    if (!std::filesystem::is_directory(directory, ec))
        throw input_error("noise directory '" + directory +
                          "' not found; write it with "
                          "examples/cpp/write_noise.py --engine DIR --seed S --out " +
                          directory);
    const std::vector<int64_t> eps_shape{1, latent[0], latent[1], latent[2]};
    const std::vector<int64_t> noise_shape{ensemble, latent[0], latent[1], latent[2]};
    PairNoise pair;
    pair.source.eps_vae = read_checked(directory, kNoiseFiles[0], eps_shape);
    pair.source.noise = read_checked(directory, kNoiseFiles[1], noise_shape);
    pair.target.eps_vae = read_checked(directory, kNoiseFiles[2], eps_shape);
    pair.target.noise = read_checked(directory, kNoiseFiles[3], noise_shape);
    return pair;
}

PairNoise draw_pair_noise(uint64_t seed, int ensemble, const std::array<int64_t, 3>& latent) {
    const size_t map = size_t(latent[0] * latent[1] * latent[2]);
    std::mt19937_64 rng(seed);
    PairNoise pair;
    for (ImageNoise* image : {&pair.source, &pair.target}) {
        image->eps_vae.resize(map);
        image->noise.resize(map * size_t(ensemble));
        fill_normal(rng, image->eps_vae);
        fill_normal(rng, image->noise);
    }
    return pair;
}

}  // namespace sd4match::engine
