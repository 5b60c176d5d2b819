// Reading images as PIL does for the SDK: PNG (libpng) and JPEG (libjpeg) decoded to 8-bit RGB.
// Grayscale is replicated to RGB, alpha is dropped (not composited), palettes are expanded,
// 16-bit samples keep their high byte except 16-bit grayscale, which PIL clips to 255; the EXIF
// orientation is ignored (as PIL's Image.open). CMYK JPEGs are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sd4match::engine {

//! An 8-bit RGB image, rows top to bottom, pixels interleaved (H, W, 3).
struct Image {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;
};

//! Decodes a PNG or JPEG file (recognised by its signature, not its name). Throws Error (Input)
//! when the file is missing, not a PNG/JPEG, corrupt, CMYK, or too large.
Image read_image(const std::string& path);

}  // namespace sd4match::engine
