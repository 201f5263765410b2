// One checked-call macro for every CUDA runtime call: a failure throws
// skv::Error(Errc::cuda, "<call> failed at <file>:<line>: <cudaGetErrorString>").
#pragma once
#include <cuda_runtime_api.h>

namespace skv::cuda::detail {
void check(cudaError_t err, const char* call, const char* file, int line);
}  // namespace skv::cuda::detail

#define SKV_CUDA_CHECK(call) ::skv::cuda::detail::check((call), #call, __FILE__, __LINE__)
