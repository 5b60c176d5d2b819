// The CUDA headers, or the CPU emulation of the subset this project uses (kernels/emu), behind
// two macros that differ between them: dynamic shared memory and kernel launches.
#pragma once

#ifdef SD4M_CUDA_EMULATION
#include "cuda_emu.hpp"
#define SD4M_DYNAMIC_SMEM(name) unsigned char* name = ::sd4m_emu::dynamic_smem()
#define SD4M_LAUNCH(kernel, grid, block, smem, stream, ...) \
    ::sd4m_emu::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
#else
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <cuda_runtime.h>
#include <mma.h>
#define SD4M_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
// `kernel` must be a single token (a function pointer variable): template arguments hold commas.
#define SD4M_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
