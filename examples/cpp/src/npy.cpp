#include "npy.hpp"

#include <cstring>
#include <fstream>
#include <sstream>

#include "error.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader assumes a little-endian machine"
#endif

namespace sd4match::engine {
namespace {

const char kMagic[] = "\x93NUMPY";

// The value text of `key` in the header dict ("'descr': '<f4', ..."), up to the next top-level
// comma (a tuple counts as one value).
std::string header_value(const std::string& header, const std::string& key, const std::string& path) {
    const std::string quoted = "'" + key + "'";
    size_t at = header.find(quoted);
    if (at == std::string::npos)
        throw input_error("'" + path + "' is not a valid .npy file (no '" + key + "' in its header)");
    at = header.find(':', at + quoted.size());
    if (at == std::string::npos) throw input_error("'" + path + "' has a malformed .npy header");
    size_t begin = header.find_first_not_of(' ', at + 1);
    size_t end = begin;
    int depth = 0;
    for (; end < header.size(); ++end) {
        char c = header[end];
        if (c == '(') ++depth;
        if (c == ')') --depth;
        if ((c == ',' || c == '}') && depth == 0) break;
    }
    return header.substr(begin, end - begin);
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& path) {
    if (text.size() < 2 || text.front() != '(' || text.back() != ')')
        throw input_error("'" + path + "' has a malformed shape in its .npy header: " + text);
    std::vector<int64_t> shape;
    std::stringstream items(text.substr(1, text.size() - 2));
    std::string item;
    while (std::getline(items, item, ',')) {
        size_t b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
        if (b == std::string::npos) continue;  // "(5,)" has an empty last item
        const std::string digits = item.substr(b, e - b + 1);
        if (digits.find_first_not_of("0123456789") != std::string::npos)
            throw input_error("'" + path + "' has a malformed shape in its .npy header: " + text);
        shape.push_back(std::stoll(digits));
    }
    return shape;
}

template <typename T>
void write_npy_impl(const std::string& path, const std::vector<int64_t>& shape, const T* data, const char* descr) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    std::string header =
        std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
    // Pad with spaces so that the data starts at a multiple of 64 bytes, ending with '\n'.
    const size_t preamble = 10;
    size_t total = preamble + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    std::ofstream out(path, std::ios::binary);
    if (!out) throw input_error("cannot write '" + path + "'");
    const uint16_t length = static_cast<uint16_t>(header.size());
    out.write(kMagic, 6);
    out.put(1);
    out.put(0);
    out.put(static_cast<char>(length & 0xff));
    out.put(static_cast<char>(length >> 8));
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(T)));
    if (!out) throw input_error("write error on '" + path + "'");
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

NpyArray read_npy_float32(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw input_error("noise file '" + path + "' not found or unreadable");
    char magic[6] = {};
    in.read(magic, 6);
    if (!in || std::memcmp(magic, kMagic, 6) != 0) throw input_error("'" + path + "' is not a .npy file (bad magic)");
    const int major = in.get();
    in.get();  // minor
    uint32_t header_length = 0;
    if (major == 1) {
        unsigned char b[2];
        in.read(reinterpret_cast<char*>(b), 2);
        header_length = b[0] | (b[1] << 8);
    } else if (major == 2 || major == 3) {
        unsigned char b[4];
        in.read(reinterpret_cast<char*>(b), 4);
        header_length = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
    } else {
        throw input_error("'" + path + "' uses .npy format version " + std::to_string(major) +
                          ", which this reader does not know");
    }
    if (!in || header_length > (1u << 20)) throw input_error("'" + path + "' has a truncated or oversized .npy header");
    std::string header(header_length, '\0');
    in.read(header.data(), header_length);
    if (!in) throw input_error("'" + path + "' has a truncated .npy header");

    const std::string descr = header_value(header, "descr", path);
    if (descr != "'<f4'")
        throw input_error("'" + path + "' holds dtype " + descr +
                          "; only little-endian float32 ('<f4') is read: save it with "
                          "np.save(path, np.ascontiguousarray(array, dtype='<f4'))");
    if (header_value(header, "fortran_order", path) != "False")
        throw input_error("'" + path + "' is in Fortran order; save a C-order array (np.ascontiguousarray)");
    NpyArray array;
    array.shape = parse_shape(header_value(header, "shape", path), path);
    int64_t count = 1;
    for (int64_t d : array.shape) count *= d;
    array.data.resize(static_cast<size_t>(count));
    in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(count * sizeof(float)));
    if (in.gcount() != static_cast<std::streamsize>(count * sizeof(float)))
        throw input_error("'" + path + "' is truncated: its header promises " + shape_string(array.shape) +
                          " float32 values");
    return array;
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
    write_npy_impl(path, shape, data, "<f4");
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint8_t* data) {
    write_npy_impl(path, shape, data, "|u1");
}

}  // namespace sd4match::engine
