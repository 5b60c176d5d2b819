// C++ smoke test of the installed API: a hand-computed answer, then sparse and dense queries on a
// random problem against a naive double-precision evaluation of the operation (sd4match/kernels.h),
// then an error reported as an exception.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "sd4match/kernels.hpp"

namespace {

int failures = 0;

void expect_near(double got, double want, double tol, const char* what) {
    if (!(std::fabs(got - want) <= tol)) {
        std::printf("FAIL %s: got %.8f, want %.8f\n", what, got, want);
        ++failures;
    }
}

//! Naive Kernel-Soft-Argmax in double for one (C, H0, W0) / (C, H1, W1) pair and one query.
void naive(const std::vector<float>& a, const std::vector<float>& b, int C, int H0, int W0, int H1, int W1, double x,
           double y, double sigma, double beta, double* out_x, double* out_y, double* out_score) {
    std::vector<double> q(C, 0.0);
    const double fx = std::floor(x), fy = std::floor(y);
    for (int corner = 0; corner < 4; ++corner) {
        const double cx = fx + (corner & 1), cy = fy + (corner >> 1);
        const double w = (1 - std::fabs(x - cx)) * (1 - std::fabs(y - cy));
        if (cx < 0 || cy < 0 || cx > W0 - 1 || cy > H0 - 1) continue;
        for (int c = 0; c < C; ++c) q[c] += w * a[(c * H0 + int(cy)) * W0 + int(cx)];
    }
    double qn = 0;
    for (double v : q) qn += v * v;
    qn = std::sqrt(qn) + 1e-6;
    const int M = H1 * W1;
    std::vector<double> s(M);
    int peak = 0;
    for (int j = 0; j < M; ++j) {
        double dot = 0, tn = 0;
        for (int c = 0; c < C; ++c) {
            dot += q[c] * b[c * M + j];
            tn += double(b[c * M + j]) * b[c * M + j];
        }
        s[j] = dot / qn / (std::sqrt(tn) + 1e-6);
        if (s[j] > s[peak]) peak = j;
    }
    double top = -1e300;
    for (int j = 0; j < M; ++j) {
        const double dx = j % W1 - peak % W1, dy = j / W1 - peak / W1;
        s[j] = s[j] * std::exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) / beta;
        top = std::max(top, s[j]);
    }
    double z = 0, sx = 0, sy = 0;
    for (int j = 0; j < M; ++j) {
        const double e = std::exp(s[j] - top);
        z += e;
        sx += e * (j % W1);
        sy += e * (j / W1);
    }
    *out_x = sx / z;
    *out_y = sy / z;
    *out_score = 1 / z;
}

//! Target cells (1,0), (0,1), (-1,0) along x and every source cell (3, 0): cosines 1, 0, -1.
void known_answer() {
    using namespace sd4match;
    const float target[] = {1, 0, -1, 0, 1, 0};       // (1, 2, 1, 3)
    const float source[] = {3, 3, 3, 3, 0, 0, 0, 0};  // (1, 2, 2, 2)
    const float points[] = {0.5f, 0.5f};
    float coords[2], score;
    const sd4m_tensor pts = contiguous(points, {1, 1, 2});
    const auto args = ksa_args(contiguous(source, {1, 2, 2, 2}), contiguous(target, {1, 2, 1, 3}), &pts,
                               contiguous(coords, {1, 1, 2}), contiguous(&score, {1, 1}), 1.5f, 0.5f);
    kernel_soft_argmax_cpu(args, 1);
    const double g2 = std::exp(-4.0 / 4.5);      // Gaussian at dx = 2 (sigma 1.5)
    const double l[3] = {2.0, 0.0, -g2 * 2.0};  // / beta = 0.5
    double z = 0, sx = 0;
    for (int j = 0; j < 3; ++j) {
        z += std::exp(l[j] - 2.0);
        sx += std::exp(l[j] - 2.0) * j;
    }
    expect_near(coords[0], sx / z, 1e-5, "known answer x");
    expect_near(coords[1], 0.0, 1e-6, "known answer y");
    expect_near(score, 1 / z, 1e-6, "known answer score");
}

//! A random problem, sparse (with a corner query) and dense, against the naive double evaluation.
void random_problem() {
    using namespace sd4match;
    const int B = 2, C = 37, H0 = 7, W0 = 9, H1 = 6, W1 = 11, N = 23;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<float> a(B * C * H0 * W0), b(B * C * H1 * W1), p(B * N * 2);
    for (float& v : a) v = normal(rng);
    for (float& v : b) v = normal(rng);
    for (int i = 0; i < B * N; ++i) {
        p[2 * i] = uniform(rng) * (W0 - 1);
        p[2 * i + 1] = uniform(rng) * (H0 - 1);
    }
    p[0] = 0;
    p[1] = 0;  // a corner
    for (int dense = 0; dense < 2; ++dense) {
        const int n = dense ? H0 * W0 : N;
        std::vector<float> coords(B * n * 2), scores(B * n);
        const sd4m_tensor pts = contiguous(p.data(), {B, N, 2});
        const auto args = ksa_args(contiguous(a.data(), {B, C, H0, W0}), contiguous(b.data(), {B, C, H1, W1}),
                                   dense ? nullptr : &pts, contiguous(coords.data(), {B, n, 2}),
                                   contiguous(scores.data(), {B, n}));
        kernel_soft_argmax_cpu(args);
        for (int bi = 0; bi < B; ++bi) {
            std::vector<float> a1(a.begin() + bi * C * H0 * W0, a.begin() + (bi + 1) * C * H0 * W0);
            std::vector<float> b1(b.begin() + bi * C * H1 * W1, b.begin() + (bi + 1) * C * H1 * W1);
            for (int i = 0; i < n; ++i) {
                const double x = dense ? i % W0 : p[(bi * N + i) * 2];
                const double y = dense ? i / W0 : p[(bi * N + i) * 2 + 1];
                double ex, ey, es;
                naive(a1, b1, C, H0, W0, H1, W1, x, y, 7.0, 0.04, &ex, &ey, &es);
                expect_near(coords[(bi * n + i) * 2], ex, 1e-4, dense ? "dense x" : "sparse x");
                expect_near(coords[(bi * n + i) * 2 + 1], ey, 1e-4, dense ? "dense y" : "sparse y");
                expect_near(scores[bi * n + i], es, 1e-4, dense ? "dense score" : "sparse score");
            }
        }
    }
}

//! Errors come back as KernelError with the status.
void errors_are_exceptions() {
    using namespace sd4match;
    float dummy[4] = {0};
    const auto args = ksa_args(contiguous(dummy, {1, 1, 2, 2}), contiguous(dummy, {1, 2, 1, 2}), nullptr,
                               contiguous(dummy, {1, 4, 2}), contiguous(dummy, {1, 4}));
    try {
        kernel_soft_argmax_cpu(args);
        std::printf("FAIL: mismatched channels were accepted\n");
        ++failures;
    } catch (const KernelError& e) {
        if (e.status() != SD4M_ERR_INVALID_ARGUMENT) ++failures;
    }
}

}  // namespace

int main() {
    known_answer();
    random_problem();
    errors_are_exceptions();
    std::printf("%s (cuda implementation built: %d)\n", failures ? "FAILED" : "OK", sd4m_has_cuda());
    return failures ? 1 : 0;
}
