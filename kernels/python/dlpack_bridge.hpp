// DLPack capsules -> sd4m_tensor views, for the pybind11 modules.
//
// The structs below follow the DLPack ABI (dmlc/dlpack, v0.8 legacy "dltensor" and v1.x
// "dltensor_versioned" capsules); only the fields this module reads are named. The capsules are
// borrowed: the Python caller keeps them (and so the tensors) alive for the whole call, and their
// own destructors release the producer's memory, so no capsule is renamed here.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "sd4match/kernels.h"

namespace sd4m_py {

namespace py = pybind11;

enum : int32_t { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13 };
enum : uint8_t { kDLFloat = 2 };

struct DLDevice {
    int32_t device_type;
    int32_t device_id;
};
struct DLDataType {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
};
struct DLTensor {
    void* data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t* shape;
    int64_t* strides;  // may be NULL: compact row-major
    uint64_t byte_offset;
};
struct DLManagedTensor {
    DLTensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
    uint32_t major;
    uint32_t minor;
};
struct DLManagedTensorVersioned {
    DLPackVersion version;
    void* manager_ctx;
    void (*deleter)(DLManagedTensorVersioned*);
    uint64_t flags;  // bit 0: read-only
    DLTensor dl_tensor;
};
constexpr uint64_t kDLPackFlagReadOnly = 1;

//! A borrowed tensor: its view plus where it lives.
struct Borrowed {
    sd4m_tensor view;
    int32_t device_type;
    int32_t device_id;
};

inline Borrowed borrow(const py::object& capsule, const char* name, bool writable) {
    PyObject* obj = capsule.ptr();
    const DLTensor* t = nullptr;
    if (PyCapsule_IsValid(obj, "dltensor")) {
        t = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(obj, "dltensor"))->dl_tensor;
    } else if (PyCapsule_IsValid(obj, "dltensor_versioned")) {
        auto* managed = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(obj, "dltensor_versioned"));
        if (managed->version.major != 1) throw py::value_error(std::string(name) + ": unsupported DLPack major version");
        if (writable && (managed->flags & kDLPackFlagReadOnly)) throw py::value_error(std::string(name) + " is read-only");
        t = &managed->dl_tensor;
    } else {
        throw py::type_error(std::string(name) + " must be an unused DLPack capsule (tensor.__dlpack__())");
    }
    if (t->ndim < 1 || t->ndim > 4) throw py::value_error(std::string(name) + " must have 1 to 4 dimensions");
    if (t->dtype.code != kDLFloat || t->dtype.lanes != 1 || (t->dtype.bits != 32 && t->dtype.bits != 16)) {
        throw py::type_error(std::string(name) + " must be float32 or float16");
    }
    Borrowed out{};
    out.view.data = static_cast<char*>(t->data) + t->byte_offset;
    out.view.dtype = t->dtype.bits == 32 ? SD4M_FLOAT32 : SD4M_FLOAT16;
    out.view.ndim = t->ndim;
    int64_t stride = 1;
    for (int i = t->ndim - 1; i >= 0; --i) {
        out.view.shape[i] = t->shape[i];
        out.view.strides[i] = t->strides ? t->strides[i] : stride;
        stride *= t->shape[i];
    }
    out.device_type = t->device.device_type;
    out.device_id = t->device.device_id;
    return out;
}

//! Fills the arguments; every tensor must live on `device_type` (and one device id).
inline sd4m_ksa_args make_args(const py::object& source, const py::object& target, const py::object& points,
                               const py::object& coords, const py::object& scores, float sigma, float beta,
                               int32_t device_type, int32_t* device_id) {
    sd4m_ksa_args args{};
    const Borrowed parts[5] = {
        borrow(source, "source", false),
        borrow(target, "target", false),
        points.is_none() ? Borrowed{} : borrow(points, "points", false),
        borrow(coords, "coords", true),
        borrow(scores, "scores", true),
    };
    int32_t id = parts[0].device_id;
    for (int i = 0; i < 5; ++i) {
        if (i == 2 && points.is_none()) continue;
        const bool same_kind = parts[i].device_type == device_type ||
                               (device_type == kDLCUDA && parts[i].device_type == kDLCUDAManaged);
        if (!same_kind || parts[i].device_id != id) {
            throw py::value_error("all tensors must live on the same device of the kind this module runs on");
        }
    }
    args.source = parts[0].view;
    args.target = parts[1].view;
    args.points = parts[2].view;  // ndim == 0 for dense mode
    args.coords = parts[3].view;
    args.scores = parts[4].view;
    args.sigma = sigma;
    args.beta = beta;
    if (device_id) *device_id = id;
    return args;
}

inline void raise_status(sd4m_status status) {
    if (status == SD4M_OK) return;
    const std::string message = sd4m_last_error();
    if (status == SD4M_ERR_INVALID_ARGUMENT) throw py::value_error(message);
    if (status == SD4M_ERR_OUT_OF_MEMORY) throw std::bad_alloc();
    throw std::runtime_error(message);
}

}  // namespace sd4m_py
