#include "image.hpp"

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
#include <jerror.h>  // JWRN_JPEG_EOF
#include <png.h>
// clang-format on

#include <csetjmp>
#include <cstring>
#include <memory>

#include "error.hpp"

namespace sd4match::engine {
namespace {

using File = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

//! PIL refuses images over twice its MAX_IMAGE_PIXELS (a decompression-bomb guard); so do we.
constexpr int64_t kMaxPixels = 2 * int64_t{89478485};

void check_size(int64_t width, int64_t height, const std::string& path) {
    if (width <= 0 || height <= 0) throw input_error("image '" + path + "' has no pixels");
    if (width * height > kMaxPixels)
        throw input_error("image '" + path + "' has " + std::to_string(width) + "x" + std::to_string(height) +
                          " pixels, more than " + std::to_string(kMaxPixels) + "; downscale it first");
}

// ------------------------------------------------------------------ PNG
// libpng reports errors by longjmp. Everything that changes after setjmp lives in this struct,
// which the caller owns, so its values stay well defined after the jump.
struct PngState {
    Image* image;
    std::vector<png_bytep> rows;
    std::vector<uint8_t> scratch;
    char message[256];
};

void png_on_error(png_structp png, png_const_charp message) {
    auto* state = static_cast<PngState*>(png_get_error_ptr(png));
    std::snprintf(state->message, sizeof state->message, "%s", message);
    png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // PIL decodes through warnings too

bool decode_png(std::FILE* file, PngState* state) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state, png_on_error, png_on_warning);
    if (png == nullptr) {
        std::snprintf(state->message, sizeof state->message, "libpng could not start");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (info == nullptr || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
        return false;
    }
    png_init_io(png, file);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, info);
    const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (int64_t(width) * int64_t(height) > kMaxPixels || width == 0 || height == 0) {
        std::snprintf(state->message, sizeof state->message, "%ux%u pixels is empty or larger than %lld", width, height,
                      static_cast<long long>(kMaxPixels));
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    // PIL opens 16-bit grayscale as mode "I;16", whose conversion to RGB clips values to 255;
    // every other 16-bit PNG keeps the high byte of each sample ("RGB;16B", "LA;16B", ...).
    const bool gray16 = color == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (depth == 16 && !gray16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    // PIL's convert("RGB") drops alpha, also the alpha that a tRNS chunk expands into.
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    if (!gray16 && (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const size_t row_bytes = size_t(width) * (gray16 ? 2 : 3);
    if (png_get_rowbytes(png, info) != row_bytes) {
        std::snprintf(state->message, sizeof state->message, "unexpected row layout after conversion to RGB");
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    Image& image = *state->image;
    image.width = static_cast<int>(width);
    image.height = static_cast<int>(height);
    image.rgb.resize(size_t(width) * height * 3);
    // 16-bit gray is read into a scratch buffer first, then clipped and replicated.
    std::vector<uint8_t>& target = gray16 ? state->scratch : image.rgb;
    target.resize(row_bytes * height);
    state->rows.resize(height);
    for (png_uint_32 y = 0; y < height; ++y) state->rows[y] = target.data() + size_t(y) * row_bytes;
    png_read_image(png, state->rows.data());
    png_destroy_read_struct(&png, &info, nullptr);
    if (gray16) {
        for (size_t i = 0; i < size_t(width) * height; ++i) {
            const unsigned v = (unsigned(state->scratch[2 * i]) << 8) | state->scratch[2 * i + 1];  // big-endian
            image.rgb[3 * i] = image.rgb[3 * i + 1] = image.rgb[3 * i + 2] = static_cast<uint8_t>(v > 255 ? 255 : v);
        }
    }
    return true;
}

// ------------------------------------------------------------------ JPEG
struct JpegError {
    jpeg_error_mgr base;  // first member: libjpeg hands us a pointer to it
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    err->base.format_message(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

// Warnings (e.g. extraneous bytes) are ignored, as PIL decodes through them; but a file that ends
// early is an error, as in PIL ("image file is truncated"), not a grey-filled picture.
void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

struct JpegState {
    Image* image;
    jpeg_decompress_struct cinfo;
    JpegError err;
    std::vector<uint8_t> row;
    bool gray;
};

bool decode_jpeg(std::FILE* file, JpegState* state) {
    jpeg_decompress_struct& cinfo = state->cinfo;
    cinfo.err = jpeg_std_error(&state->err.base);
    state->err.base.error_exit = jpeg_on_error;
    state->err.base.emit_message = jpeg_on_message;
    state->err.message[0] = '\0';
    if (setjmp(state->err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, file);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        std::snprintf(state->err.message, sizeof state->err.message,
                      "CMYK JPEGs are not supported; convert it to RGB first");
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    state->gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    cinfo.out_color_space = state->gray ? JCS_GRAYSCALE : JCS_RGB;  // libjpeg defaults: ISLOW DCT, fancy upsampling
    jpeg_start_decompress(&cinfo);
    const int64_t width = cinfo.output_width, height = cinfo.output_height;
    if (width * height > kMaxPixels) {
        std::snprintf(state->err.message, sizeof state->err.message, "%lldx%lld pixels is larger than %lld",
                      static_cast<long long>(width), static_cast<long long>(height),
                      static_cast<long long>(kMaxPixels));
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    Image& image = *state->image;
    image.width = static_cast<int>(width);
    image.height = static_cast<int>(height);
    image.rgb.resize(size_t(width * height * 3));
    state->row.resize(size_t(width) * cinfo.output_components);
    while (cinfo.output_scanline < cinfo.output_height) {
        const size_t y = cinfo.output_scanline;
        JSAMPROW row = state->row.data();
        jpeg_read_scanlines(&cinfo, &row, 1);
        uint8_t* out = image.rgb.data() + y * size_t(width) * 3;
        if (state->gray) {
            for (int64_t x = 0; x < width; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = state->row[x];
        } else {
            std::memcpy(out, state->row.data(), size_t(width) * 3);
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return true;
}

}  // namespace

Image read_image(const std::string& path) {
    File file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) throw input_error("image file not found or unreadable: '" + path + "'; check the path");
    unsigned char magic[8] = {};
    const size_t got = std::fread(magic, 1, sizeof magic, file.get());
    std::rewind(file.get());
    Image image;
    if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
        PngState state{&image, {}, {}, {}};
        if (!decode_png(file.get(), &state))
            throw input_error("cannot decode PNG image '" + path + "' (" + state.message +
                              "); use a valid PNG or JPEG file");
    } else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
        auto state = std::make_unique<JpegState>();
        state->image = &image;
        if (!decode_jpeg(file.get(), state.get()))
            throw input_error("cannot decode JPEG image '" + path + "' (" + state->err.message +
                              "); use a valid PNG or JPEG file");
    } else {
        throw input_error("cannot decode image '" + path + "': it is not a PNG or JPEG file; use a PNG or JPEG file");
    }
    check_size(image.width, image.height, path);
    return image;
}

}  // namespace sd4match::engine
