// Pillow's resampling (Image.resize with BILINEAR or BICUBIC, no box, no reducing_gap) for 8-bit
// RGB images, reproduced to the bit: separable filters whose support grows with the downscale
// factor (antialiasing), coefficients in 8-bit fixed point with PRECISION_BITS = 32 - 8 - 2,
// and two passes that each round and clip to uint8: a horizontal pass over the source rows the
// vertical pass needs, then the vertical pass. Pillow 13 (python-pillow/Pillow#9549) runs the
// vertical pass first when the height shrinks by more than twice as many pixels as the width;
// the result then differs by +-1 in some pixels, so both orders are reproduced.
// tests/cpp checks this against the installed PIL.
#pragma once

#include "image.hpp"

namespace sd4match::engine {

enum class ResampleFilter {
    Bilinear,  //!< PIL.Image.BILINEAR (2): triangle, support 1
    Bicubic,   //!< PIL.Image.BICUBIC (3): Keys cubic with a = -0.5, support 2
};

//! Which pass runs first when both axes change.
enum class PassOrder {
    Pillow13,         //!< vertical first when H - h > 2 (W - w) and h < H, else horizontal (Pillow >= 13)
    HorizontalFirst,  //!< always horizontal first (Pillow <= 12)
};

//! `image` resized to `width` x `height` as PIL's `Image.resize((width, height), filter)`.
//! Returns a copy when the size is unchanged (as PIL). Throws Error (Input) for empty sizes.
Image resize(const Image& image, int width, int height, ResampleFilter filter, PassOrder order = PassOrder::Pillow13);

}  // namespace sd4match::engine
