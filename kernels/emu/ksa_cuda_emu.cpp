// ksa_cuda.cu compiled as plain C++ against the CPU emulation of cuda_emu.hpp (SD4M_CUDA_EMULATION),
// for the test module _kernels_cuda_emu. Including the file, rather than compiling the .cu as C++,
// leaves the .cu's CUDA language untouched for the targets that build it with nvcc.
#include "../src/ksa_cuda.cu"
