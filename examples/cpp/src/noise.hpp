// The noise one match consumes (docs/cpp.md, "Noise"): per image `eps_vae` (1, 4, h, h), the VAE
// posterior draw, and `noise` (E, 4, h, h), the diffusion noise maps; source before target.
//
// Either read from .npy files written by the Python SDK (`sd4match_sdk.noise.save_pair_noise`,
// or examples/cpp/write_noise.py), which reproduces a Python `Matcher.match(..., seed=s)` run
// exactly, or drawn here from a seed: a valid SD4Match run, but not the numbers of Python's
// torch generator.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace sd4match::engine {

struct ImageNoise {
    std::vector<float> eps_vae;  //!< (1, 4, h, h)
    std::vector<float> noise;    //!< (E, 4, h, h)
};

struct PairNoise {
    ImageNoise source, target;
};

//! File names inside a noise directory, in the order Python draws them.
constexpr const char* kNoiseFiles[4] = {"eps_vae_source.npy", "noise_source.npy", "eps_vae_target.npy",
                                        "noise_target.npy"};

//! Reads the four .npy files of `directory` and checks their shapes against the engine's
//! ensemble and latent shape. Throws Error (Input) naming the file and the expected shape.
PairNoise read_pair_noise(const std::string& directory, int ensemble, const std::array<int64_t, 3>& latent_shape);

//! Standard normal float32 draws from a 64-bit Mersenne Twister seeded with `seed` (Box-Muller,
//! so every compiler gives the same numbers), in Python's order: source eps_vae, source noise,
//! target eps_vae, target noise.
PairNoise draw_pair_noise(uint64_t seed, int ensemble, const std::array<int64_t, 3>& latent_shape);

}  // namespace sd4match::engine
