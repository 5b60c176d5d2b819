// A minimal .npy reader/writer (NumPy format versions 1.0-3.0): little-endian float32 arrays in
// C order are read; other dtypes and Fortran order are refused with a message that says how to
// convert. The writer emits version 1.0 files of float32 or uint8 (the preprocessing tool).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sd4match::engine {

struct NpyArray {
    std::vector<int64_t> shape;
    std::vector<float> data;  //!< C order, prod(shape) values
};

//! Reads a little-endian float32 C-order .npy file. Throws Error (Input) naming the file and
//! the problem (missing, not .npy, dtype, order, truncated).
NpyArray read_npy_float32(const std::string& path);

//! Writes `data` (C order, `shape`) as a float32 .npy file. Throws Error (Input) on I/O failure.
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);
//! Writes `data` (C order, `shape`) as a uint8 .npy file.
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint8_t* data);

//! "(1, 4, 32, 32)" for messages.
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace sd4match::engine
