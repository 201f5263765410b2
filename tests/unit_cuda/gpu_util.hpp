// GPU test plumbing: the skip rule (no device -> GTEST_SKIP with the reason) and a device buffer.
#pragma once
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "skv/cuda/check.hpp"
#include "skv/cuda/codec.hpp"

namespace skv::cuda::test {

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n) { SKV_CUDA_CHECK(cudaMalloc(&p_, n ? n : 1)); }
  ~DevBuf() { (void)cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T = void> T* get() const { return static_cast<T*>(p_); }
  void upload(const void* src, size_t n) { SKV_CUDA_CHECK(cudaMemcpy(p_, src, n, cudaMemcpyHostToDevice)); }
  template <class V> void upload(const V& v) { upload(v.data(), v.size() * sizeof(v[0])); }
  std::vector<uint8_t> download(size_t n) const {
    std::vector<uint8_t> out(n);
    SKV_CUDA_CHECK(cudaMemcpy(out.data(), p_, n, cudaMemcpyDeviceToHost));
    return out;
  }
  // Fills with a byte pattern so untouched output is visible.
  void poison(int byte = 0xcd) { SKV_CUDA_CHECK(cudaMemset(p_, byte, n_)); }

 private:
  void* p_ = nullptr;
  size_t n_;
};

}  // namespace skv::cuda::test
