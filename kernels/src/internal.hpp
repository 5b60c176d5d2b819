// Internal helpers shared by the CPU and CUDA implementations (not installed).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "sd4match/kernels.h"

namespace sd4m {

//! Records the message returned by sd4m_last_error() on this thread.
void set_error(const std::string& message);
void clear_error();

//! Sizes of one validated call; every count fits in int32 (checked), offsets need int64.
struct Problem {
    int64_t batch = 0;     // B
    int64_t channels = 0;  // C
    int64_t h0 = 0, w0 = 0;
    int64_t h1 = 0, w1 = 0;
    int64_t queries = 0;   // N (H0*W0 in dense mode)
    bool dense = false;
    sd4m_dtype dtype = SD4M_FLOAT32;
    float sigma = 7.0f;
    float beta = 0.04f;
    int32_t flags = 0;

    int64_t cells0() const { return h0 * w0; }
    int64_t cells1() const { return h1 * w1; }
    bool empty() const { return batch == 0 || queries == 0; }
};

//! Validates every field of `args`; on failure sets the error message and returns its status.
sd4m_status validate(const sd4m_ksa_args* args, Problem* problem);

//! Offset (in elements) of cell `j` (row-major y*w + x) of a 4-d map with the given strides.
inline int64_t cell_offset(int64_t j, int64_t w, int64_t stride_h, int64_t stride_w) {
    return (j / w) * stride_h + (j % w) * stride_w;
}

//! IEEE binary16 bits -> float (exact, including subnormals, infinities and NaN).
inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: mantissa * 2^-24 is exact in float
            float value = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
            std::memcpy(&bits, &value, sizeof bits);
            bits |= sign;
        }
    } else if (exponent == 31) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

//! float -> IEEE binary16 bits, round to nearest even (overflow gives infinity).
inline uint16_t float_to_half_bits(float value) {
    uint32_t x;
    std::memcpy(&x, &value, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t magnitude = x & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {  // inf or NaN (keep NaN quiet)
        return static_cast<uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
    }
    if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (magnitude < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
        float abs_value;
        std::memcpy(&abs_value, &magnitude, sizeof abs_value);
        // abs_value * 2^24 is exact; adding and subtracting 2^23 rounds it to an integer (ties to even).
        const float scaled = abs_value * 16777216.0f;
        const float rounded = (scaled + 8388608.0f) - 8388608.0f;
        return static_cast<uint16_t>(sign | static_cast<uint32_t>(rounded));
    }
    const uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);  // ties to even at bit 13
    return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

}  // namespace sd4m
