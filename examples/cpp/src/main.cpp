// sd4match_match: match keypoints of image A into image B through an exported engine directory.
//
//   sd4match_match --engine DIR --source A.png --target B.png --points "x,y;x,y"
//                  [--category C] [--noise-dir D | --seed S] [--threads N]
//                  [--runtime auto|onnxruntime|tensorrt] [--device N] [--features-out F.npy]
//
// Prints {"source", "target", "engine", "runtime", "noise", "query", "points", "scores"} as JSON
// on stdout. Errors go to stderr with exit status 2 (arguments, inputs, engine) or 1 (a runtime
// failure). docs/cpp.md describes the program, the noise files and what is verified.
#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>

#include "error.hpp"
#include "image.hpp"
#include "matcher.hpp"
#include "noise.hpp"
#include "npy.hpp"

using namespace sd4match::engine;

namespace {

const char* kUsage =
    "usage: sd4match_match --engine DIR --source A --target B --points \"x,y;x,y\"\n"
    "                      [--category C] [--noise-dir D | --seed S] [--threads N]\n"
    "                      [--runtime auto|onnxruntime|tensorrt] [--device N] [--features-out F.npy]\n"
    "\n"
    "  --engine DIR     engine directory written by sd4match-export (manifest.json + ONNX graphs)\n"
    "  --source A       image A (PNG or JPEG); --points are in its pixels\n"
    "  --target B       image B (PNG or JPEG); the matches are in its pixels\n"
    "  --points P       query points 'x,y;x,y' with 0 <= x < width, 0 <= y < height of A\n"
    "  --category C     category, for class prompts and {category} text prompts\n"
    "  --noise-dir D    read the noise from D (written by examples/cpp/write_noise.py): reproduces the\n"
    "                   Python Matcher's match(..., seed=S) exactly\n"
    "  --seed S         draw the noise here from seed S (a valid run, but not Python's numbers)\n"
    "                   without --noise-dir or --seed, the noise is seeded randomly\n"
    "  --threads N      CPU threads for ONNX Runtime and the matching kernel (default 0: all)\n"
    "  --runtime R      auto (TensorRT when built with it and the engine has plans), onnxruntime, tensorrt\n"
    "  --device N       CUDA device for TensorRT (default 0)\n"
    "  --features-out F also write the pair's raw features (2, C, G, G) as float32 .npy (for comparisons)\n";

struct Args {
    std::string engine, source, target, noise_dir, runtime = "auto", features_out;
    std::optional<std::string> points, category;
    std::optional<uint64_t> seed;
    int threads = 0, device = 0;
};

long long parse_int(const std::string& flag, const std::string& text, long long lo, long long hi) {
    long long v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
        throw usage_error(flag + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "], got '" + text + "'");
    return v;
}

Args parse_args(int argc, char** argv) {
    Args a;
    std::map<std::string, std::string*> strings{{"--engine", &a.engine},   {"--source", &a.source},
                                                {"--target", &a.target},   {"--noise-dir", &a.noise_dir},
                                                {"--runtime", &a.runtime}, {"--features-out", &a.features_out}};
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            std::cout << kUsage;
            std::exit(0);
        }
        if (i + 1 >= argc) throw usage_error("missing value after " + flag);
        const std::string value = argv[++i];
        if (auto it = strings.find(flag); it != strings.end()) {
            *it->second = value;
        } else if (flag == "--points") {
            a.points = value;  // may be empty: no queries, an empty result (as the Python CLI)
        } else if (flag == "--category") {
            a.category = value;
        } else if (flag == "--seed") {
            a.seed = static_cast<uint64_t>(parse_int(flag, value, 0, 0x7fffffffffffffffLL));
        } else if (flag == "--threads") {
            a.threads = static_cast<int>(parse_int(flag, value, 0, 1024));
        } else if (flag == "--device") {
            a.device = static_cast<int>(parse_int(flag, value, 0, 1024));
        } else {
            throw usage_error("unknown option " + flag);
        }
    }
    for (const char* required : {"--engine", "--source", "--target"})
        if (strings[required]->empty()) throw usage_error(std::string(required) + " is required");
    if (!a.points) throw usage_error("--points is required");
    if (!a.noise_dir.empty() && a.seed) throw usage_error("pass either --noise-dir or --seed, not both");
    return a;
}

//! "x,y;x,y" -> points, as the Python CLI's parse_points (spaces ignored, empty items skipped).
std::vector<std::array<double, 2>> parse_points(const std::string& text) {
    std::string compact;
    for (char c : text)
        if (c != ' ') compact.push_back(c);
    std::vector<std::array<double, 2>> points;
    size_t start = 0, index = 0;
    while (start <= compact.size()) {
        size_t end = compact.find(';', start);
        if (end == std::string::npos) end = compact.size();
        const std::string item = compact.substr(start, end - start);
        start = end + 1;
        if (item.empty()) continue;
        const size_t comma = item.find(',');
        std::array<double, 2> p{};
        bool ok = comma != std::string::npos && item.find(',', comma + 1) == std::string::npos;
        for (int k = 0; ok && k < 2; ++k) {
            const std::string number = k == 0 ? item.substr(0, comma) : item.substr(comma + 1);
            char* stop = nullptr;
            p[k] = std::strtod(number.c_str(), &stop);
            ok = !number.empty() && stop == number.c_str() + number.size();
        }
        if (!ok)
            throw usage_error("--points entry " + std::to_string(index) + " ('" + item +
                              "') is not 'x,y'; write e.g. --points '120,80;300,210'");
        points.push_back(p);
        ++index;
    }
    return points;
}

//! A float32 as the shortest decimal that reads back to it (JSON numbers are doubles).
double shortest(float v) {
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, v);
    return std::strtod(std::string(buffer, result.ptr).c_str(), nullptr);
}

nlohmann::ordered_json points_json(const std::vector<Point>& points) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const Point& p : points) out.push_back({shortest(p[0]), shortest(p[1])});
    return out;
}

int run(int argc, char** argv) {
    const Args args = parse_args(argc, argv);
    const auto raw_points = parse_points(*args.points);
    // Inputs first (cheap), then the engine (hashing, loading): fail fast on a typo.
    const Image source = read_image(args.source);
    const Image target = read_image(args.target);
    const std::vector<Point> points = check_points(raw_points, source.width, source.height);

    MatcherOptions options;
    options.runtime = args.runtime;
    options.threads = args.threads;
    options.cuda_device = args.device;
    std::unique_ptr<Matcher> matcher = Matcher::open(args.engine, options);
    const Manifest& m = matcher->manifest();
    matcher->check_category(args.category);

    PairNoise noise;
    std::string noise_origin;
    if (!args.noise_dir.empty()) {
        noise = read_pair_noise(args.noise_dir, m.ensemble, m.latent_shape);
        noise_origin = "npy:" + args.noise_dir;
    } else {
        const uint64_t seed =
            args.seed ? *args.seed : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
        noise = draw_pair_noise(seed, m.ensemble, m.latent_shape);
        noise_origin = "seed:" + std::to_string(seed) + " (mt19937_64, not torch's generator)";
    }

    HostTensor features;
    const MatchResult result = matcher->match(source, target, points, args.category, noise, &features);
    if (!args.features_out.empty() && !features.shape.empty())
        write_npy(args.features_out, features.shape, features.f32.data());
    nlohmann::ordered_json out;
    out["source"] = args.source;
    out["target"] = args.target;
    out["engine"] = args.engine;
    out["runtime"] = matcher->runtime_name();
    out["noise"] = noise_origin;
    out["query"] = points_json(result.query);
    out["points"] = points_json(result.points);
    out["scores"] = nlohmann::ordered_json::array();
    for (float s : result.scores) out["scores"].push_back(shortest(s));
    std::cout << out.dump(2) << std::endl;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const Error& err) {
        std::cerr << "sd4match_match: error: " << err.what() << "\n";
        if (err.kind() == ErrorKind::Usage) std::cerr << "run sd4match_match --help for the options\n";
        return err.kind() == ErrorKind::Runtime ? 1 : 2;
    } catch (const std::exception& err) {
        std::cerr << "sd4match_match: unexpected error: " << err.what() << "\n";
        return 1;
    }
}
