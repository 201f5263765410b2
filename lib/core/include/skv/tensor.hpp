// Plain tensor structs: a non-owning view (over an mmap'd dump or a buffer) and an owning tensor.
// Shapes are row-major (C order), like safetensors and .npy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "skv/dtype.hpp"

namespace skv {

using Shape = std::vector<int64_t>;

// Product of dims; throws Errc::format (naming `what`) on a negative dim or overflow past 2^62.
int64_t checked_numel(const Shape& shape, const std::string& what);
std::string shape_str(const Shape& shape);  // "[3, 512, 64]"

// 64-byte aligned, uninitialised (decode output is written once; zero-filling first would cost a
// full extra pass over memory).
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t nbytes);
  std::byte* data() noexcept { return ptr_.get(); }
  const std::byte* data() const noexcept { return ptr_.get(); }
  size_t size() const noexcept { return size_; }
  std::span<std::byte> span() noexcept { return {data(), size_}; }
  std::span<const std::byte> span() const noexcept { return {data(), size_}; }

 private:
  struct Free { void operator()(std::byte* p) const noexcept; };
  std::unique_ptr<std::byte[], Free> ptr_;
  size_t size_ = 0;
};

struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  std::span<const std::byte> bytes;  // exactly numel * dtype_size bytes

  int64_t numel() const;
  template <class T> const T* as() const { return reinterpret_cast<const T*>(bytes.data()); }
};

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  Buffer data;

  Tensor() = default;
  Tensor(DType t, Shape s);  // allocates, uninitialised
  TensorView view() const { return {dtype, shape, data.span()}; }
  template <class T> T* as() { return reinterpret_cast<T*>(data.data()); }
  template <class T> const T* as() const { return reinterpret_cast<const T*>(data.data()); }
};

// A named view, as stored in a dump file.
struct NamedTensor {
  std::string name;
  TensorView view;
};

}  // namespace skv
