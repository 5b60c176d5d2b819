// Argument validation, error reporting and the entry points every build has (with or without CUDA).
#include <cmath>
#include <limits>
#include <sstream>

#include "internal.hpp"

namespace sd4m {
namespace {

thread_local std::string g_last_error;  // per thread: concurrent calls do not clobber each other

std::string shape_string(const sd4m_tensor& t) {
    std::ostringstream out;
    out << "(";
    for (int i = 0; i < t.ndim && i < 4; ++i) out << (i ? ", " : "") << t.shape[i];
    out << ")";
    return out.str();
}

const char* dtype_name(sd4m_dtype dtype) {
    switch (dtype) {
        case SD4M_FLOAT32: return "float32";
        case SD4M_FLOAT16: return "float16";
    }
    return "unknown";
}

sd4m_status invalid(const std::string& message) {
    set_error(message);
    return SD4M_ERR_INVALID_ARGUMENT;
}

//! Shape rank, non-negative sizes and strides; `name` goes into the message.
sd4m_status check_view(const sd4m_tensor& t, const char* name, int ndim) {
    if (t.ndim != ndim) {
        std::ostringstream out;
        out << name << " must have " << ndim << " dimensions; got " << t.ndim;
        return invalid(out.str());
    }
    for (int i = 0; i < ndim; ++i) {
        if (t.shape[i] < 0 || t.strides[i] < 0) {
            return invalid(std::string(name) + " has a negative size or stride; make it contiguous first");
        }
    }
    if (t.dtype != SD4M_FLOAT32 && t.dtype != SD4M_FLOAT16) {
        return invalid(std::string(name) + " has an unknown dtype code");
    }
    return SD4M_OK;
}

//! Outputs must not write one element twice: every dimension of size > 1 needs a stride > 0.
bool writes_overlap(const sd4m_tensor& t) {
    for (int i = 0; i < t.ndim; ++i) {
        if (t.shape[i] > 1 && t.strides[i] == 0) return true;
    }
    return false;
}

//! The two feature maps: 4-d views of one dtype, with the same batch and channel sizes and at
//! least one channel and one cell each.
sd4m_status check_maps(const sd4m_tensor& a, const sd4m_tensor& b) {
    sd4m_status status;
    if ((status = check_view(a, "source", 4)) != SD4M_OK) return status;
    if ((status = check_view(b, "target", 4)) != SD4M_OK) return status;
    if (a.dtype != b.dtype) {
        return invalid(std::string("source and target must share a dtype; got ") + dtype_name(a.dtype) + " and " +
                       dtype_name(b.dtype));
    }
    if (a.shape[0] != b.shape[0] || a.shape[1] != b.shape[1]) {
        return invalid("source " + shape_string(a) + " and target " + shape_string(b) +
                       " must have the same batch and channel sizes");
    }
    if (a.shape[1] < 1 || a.shape[2] < 1 || a.shape[3] < 1 || b.shape[2] < 1 || b.shape[3] < 1) {
        return invalid("feature maps need at least one channel and one cell; got source " + shape_string(a) +
                       " and target " + shape_string(b));
    }
    return SD4M_OK;
}

//! Sparse queries: float32 points of shape (B, N, 2); sets p->queries.
sd4m_status check_points(const sd4m_tensor& q, Problem* p) {
    const sd4m_status status = check_view(q, "points", 3);
    if (status != SD4M_OK) return status;
    if (q.dtype != SD4M_FLOAT32) return invalid("points must be float32");
    if (q.shape[0] != p->batch || q.shape[2] != 2) {
        return invalid("points must have shape (B, N, 2) with B = " + std::to_string(p->batch) + "; got " +
                       shape_string(q));
    }
    p->queries = q.shape[1];
    return SD4M_OK;
}

//! coords (B, N, 2) and scores (B, N): float32, and no element written twice.
sd4m_status check_outputs(const sd4m_tensor& c, const sd4m_tensor& s, const Problem& p) {
    sd4m_status status;
    if ((status = check_view(c, "coords", 3)) != SD4M_OK) return status;
    if ((status = check_view(s, "scores", 2)) != SD4M_OK) return status;
    if (c.dtype != SD4M_FLOAT32 || s.dtype != SD4M_FLOAT32) return invalid("coords and scores must be float32");
    if (c.shape[0] != p.batch || c.shape[1] != p.queries || c.shape[2] != 2) {
        return invalid("coords must have shape (" + std::to_string(p.batch) + ", " + std::to_string(p.queries) +
                       ", 2); got " + shape_string(c));
    }
    if (s.shape[0] != p.batch || s.shape[1] != p.queries) {
        return invalid("scores must have shape (" + std::to_string(p.batch) + ", " + std::to_string(p.queries) +
                       "); got " + shape_string(s));
    }
    if (writes_overlap(c) || writes_overlap(s)) return invalid("coords and scores must not have zero strides");
    return SD4M_OK;
}

//! sigma and beta (positive, finite) and the flags (known bits only), into p.
sd4m_status check_parameters(const sd4m_ksa_args& args, Problem* p) {
    if (!(std::isfinite(args.sigma) && args.sigma > 0.0f) || !(std::isfinite(args.beta) && args.beta > 0.0f)) {
        return invalid("sigma and beta must be positive and finite");
    }
    if (args.flags & ~int32_t(SD4M_KSA_FP32_MATH)) return invalid("unknown bits in flags");
    p->sigma = args.sigma;
    p->beta = args.beta;
    p->flags = args.flags;
    return SD4M_OK;
}

//! Every tensor the call reads or writes has data (a call without work needs none).
sd4m_status check_data(const sd4m_ksa_args& args, const Problem& p) {
    if (p.empty()) return SD4M_OK;
    if (args.source.data == nullptr || args.target.data == nullptr || args.coords.data == nullptr ||
        args.scores.data == nullptr || (!p.dense && args.points.data == nullptr)) {
        return invalid("source, target, points, coords and scores need data pointers");
    }
    return SD4M_OK;
}

}  // namespace

void set_error(const std::string& message) { g_last_error = message; }
void clear_error() { g_last_error.clear(); }

sd4m_status validate(const sd4m_ksa_args* args, Problem* problem) {
    clear_error();
    if (args == nullptr || problem == nullptr) return invalid("args must not be NULL");
    sd4m_status status;
    if ((status = check_maps(args->source, args->target)) != SD4M_OK) return status;
    const sd4m_tensor& a = args->source;
    const sd4m_tensor& b = args->target;
    Problem p;
    p.batch = a.shape[0];
    p.channels = a.shape[1];
    p.h0 = a.shape[2];
    p.w0 = a.shape[3];
    p.h1 = b.shape[2];
    p.w1 = b.shape[3];
    p.dtype = a.dtype;
    p.dense = args->points.ndim == 0;
    if (p.dense) {
        p.queries = p.cells0();
    } else if ((status = check_points(args->points, &p)) != SD4M_OK) {
        return status;
    }
    const int64_t int_max = std::numeric_limits<int32_t>::max();
    if (p.queries > int_max || p.cells1() > int_max || p.channels > int_max || p.batch > 65535) {
        return invalid("problem too large: N, H1*W1 and C must fit in int32 and B <= 65535");
    }
    if ((status = check_outputs(args->coords, args->scores, p)) != SD4M_OK) return status;
    if ((status = check_parameters(*args, &p)) != SD4M_OK) return status;
    if ((status = check_data(*args, p)) != SD4M_OK) return status;
    *problem = p;
    return SD4M_OK;
}

}  // namespace sd4m

extern "C" {

sd4m_tensor sd4m_contiguous_tensor(void* data, sd4m_dtype dtype, int32_t ndim, const int64_t* shape) {
    sd4m_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.ndim = ndim < 0 ? 0 : (ndim > 4 ? 4 : ndim);
    int64_t stride = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
        t.shape[i] = shape[i];
        t.strides[i] = stride;
        stride *= shape[i] > 0 ? shape[i] : 1;
    }
    return t;
}

sd4m_status sd4m_ksa_check(const sd4m_ksa_args* args) {
    sd4m::Problem problem;
    return sd4m::validate(args, &problem);
}

const char* sd4m_last_error(void) { return sd4m::g_last_error.c_str(); }

}  // extern "C"
