// NumPy .npy reader and writer (format versions 1.0-3.0, little-endian, C order only) for the
// dtypes skv uses: float16 ('<f2'), float32 ('<f4'), uint8 ('|u1'), bool ('|b1'); bfloat16 is
// read/written as the ml_dtypes name 'bfloat16' ('<V2' descr is not accepted).
#pragma once
#include <string>

#include "skv/formats/file_io.hpp"
#include "skv/tensor.hpp"

namespace skv::npy {

class Reader {
 public:
  static Reader open(const std::string& path);
  static Reader from_bytes(std::span<const std::byte> bytes, const std::string& name);
  const std::string& path() const noexcept { return path_; }
  TensorView view() const noexcept { return view_; }

 private:
  std::string path_;
  std::shared_ptr<InputFile> file_;
  TensorView view_;
};

void write_file(const std::string& path, const TensorView& t, const OutputOptions& opts = {});

}  // namespace skv::npy
