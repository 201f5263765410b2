// Branch-free checks of decoded parameters (formats/skv.md, "Conformance"): what the reader runs
// over every scale, (scale, min) pair and key centre of a layer before dequantizing it. Written
// as max-reductions so they vectorise; an AVX2 build is picked at run time where the CPU has it.
#pragma once
#include <cstdint>

namespace skv::detail {

// Every f16 of p[0, n) is finite and without the sign bit (bits 0x0000..0x7bff): a scale.
bool scales_ok(const uint16_t* p, uint64_t n);
// Every (scale, min) f16 pair of p[0, n) (one u32 each, scale in the low half): the scale as
// above, the minimum finite (any sign).
bool scale_min_pairs_ok(const uint32_t* p, uint64_t n);
// Every f32 of p[0, n) (as bits) is finite: a key centre.
bool f32_finite(const uint32_t* p, uint64_t n);

}  // namespace skv::detail
