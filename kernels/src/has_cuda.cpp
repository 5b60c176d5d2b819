// sd4m_has_cuda() and, in a build without the CUDA implementation, the CUDA entry points that say
// so. The only code that depends on SD4M_WITH_CUDA outside ksa_cuda.cu: it is compiled into each
// library variant on its own, so common.cpp and ksa_cpu.cpp are compiled once for all of them.
#include "internal.hpp"

extern "C" {

int sd4m_has_cuda(void) {
#ifdef SD4M_WITH_CUDA
    return 1;
#else
    return 0;
#endif
}

#ifndef SD4M_WITH_CUDA
size_t sd4m_ksa_cuda_workspace_bytes(const sd4m_ksa_args*) { return 0; }

sd4m_status sd4m_ksa_cuda(const sd4m_ksa_args*, void*, void*, size_t) {
    sd4m::set_error("this build of the sd4match kernels has no CUDA implementation");
    return SD4M_ERR_UNSUPPORTED;
}

sd4m_status sd4m_cuda_check_device(int) {
    sd4m::set_error("this build of the sd4match kernels has no CUDA implementation");
    return SD4M_ERR_UNSUPPORTED;
}
#endif

}  // extern "C"
