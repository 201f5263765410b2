// CPU restatement of formats/skv.md's LAYR section for the GPU tests: quantizers, key transforms
// and stream layout written straight from the spec, scalar and obvious. Once the `codec` branch
// is merged its writer/reader can replace this (layer_ref_test.cpp checks the quantizers here
// against skv::quant's reference on ordinary data already).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "skv/cuda/layer_plan.hpp"

namespace skv::cuda::ref {

// skv.md "Quantization", one group; false when the group cannot be quantized.
bool q8(const float* x, int n, int8_t* q, uint16_t* scale);
bool q4(const float* x, int n, uint8_t* packed, uint16_t* scale, uint16_t* minv);
// INT2 (format 1.1): as q4 with 3 steps; element 4i + j at bits 2j of byte i.
bool q2(const float* x, int n, uint8_t* packed, uint16_t* scale, uint16_t* minv);
float dq8(int8_t q, uint16_t scale, float centre);                  // fmaf(q, s, c)
float dq4(int q, uint16_t scale, uint16_t minv, const float* centre);  // fmaf(q, s, m) [+ c]

// The raw payload (directory, streams, zero padding) for host K/V in plan.geo's layout/dtype.
// `rope`: fill_rope_table() output, needed for prerope_centre. Returns false, with the first bad
// (kv, head, token) in *bad, when a quantized row holds a non-finite value.
struct BadRow { int kv = -1, head = -1, token = -1; };
bool encode_layer(const LayerPlan& plan, const void* k, const void* v, const uint8_t* k_tiers,
                  const uint8_t* v_tiers, const float* rope, std::vector<uint8_t>& payload,
                  BadRow* bad = nullptr);

// Decodes a raw payload into host K/V (plan.geo.layout, `out_dtype`) and the mask.
void decode_layer(const LayerPlan& plan, const uint8_t* payload, const float* rope, DType out_dtype,
                  void* k, void* v, uint8_t* mask);

}  // namespace skv::cuda::ref
