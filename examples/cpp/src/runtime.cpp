#include "runtime.hpp"

#include <algorithm>

#include "error.hpp"

namespace sd4match::engine {

int64_t HostTensor::count() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

HostTensor HostTensor::floats(std::vector<int64_t> shape, std::vector<float> values) {
    HostTensor t;
    t.shape = std::move(shape);
    t.f32 = std::move(values);
    if (static_cast<int64_t>(t.f32.size()) != t.count())
        throw runtime_error("internal error: tensor size does not match its shape");
    return t;
}

HostTensor HostTensor::int64s(std::vector<int64_t> shape, std::vector<int64_t> values) {
    HostTensor t;
    t.shape = std::move(shape);
    t.i64 = std::move(values);
    t.is_int64 = true;
    if (static_cast<int64_t>(t.i64.size()) != t.count())
        throw runtime_error("internal error: tensor size does not match its shape");
    return t;
}

void check_tensor_names(const Manifest& manifest, const std::string& graph, const char* what,
                        const std::vector<TensorSpec>& specs, const std::vector<std::string>& actual) {
    std::vector<std::string> expected;
    for (const TensorSpec& s : specs) expected.push_back(s.name);
    auto sorted = [](std::vector<std::string> v) {
        std::sort(v.begin(), v.end());
        return v;
    };
    if (sorted(expected) == sorted(actual)) return;
    auto join = [](const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
        return s;
    };
    throw engine_error("the " + graph + " graph of '" + manifest.directory + "' has " + what + " (" + join(actual) +
                       ") but its manifest lists (" + join(expected) +
                       "); the engine directory is inconsistent: re-export it");
}

}  // namespace sd4match::engine
