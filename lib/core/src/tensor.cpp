#include "skv/tensor.hpp"

#include <cstdlib>
#include <new>

#include "skv/error.hpp"

namespace skv {

int64_t checked_numel(const Shape& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(Errc::format, what, "negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > (int64_t(1) << 62) / d)
      fail(Errc::format, what, "shape " + shape_str(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

void Buffer::Free::operator()(std::byte* p) const noexcept { std::free(p); }

Buffer::Buffer(size_t nbytes) : size_(nbytes) {
  if (nbytes == 0) return;
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  ptr_.reset(static_cast<std::byte*>(p));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor::Tensor(DType t, Shape s) : dtype(t), shape(std::move(s)) {
  data = Buffer(size_t(checked_numel(shape, "tensor")) * dtype_size(t));
}

}  // namespace skv
