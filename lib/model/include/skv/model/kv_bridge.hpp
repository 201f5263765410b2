// Moving caches between the runner and skv's KV layout model (skv/kvcache.hpp): after a dump has
// been encoded and decoded by skv, its layers (F16/BF16/F32, HTD or THD) and token masks replace
// the runner's, so the model can be scored on what the codec kept.
#pragma once
#include "skv/kvcache.hpp"
#include "skv/model/kv_cache.hpp"

namespace skv::model {

// Overwrites every layer of dst with src's K/V (converted to float) and sets each layer's mask
// from src's (all present where src has none). Throws Errc::invalid_argument naming src.source
// when the shapes differ.
void assign_from(KvCacheObject& dst, const KvCache& src);

}  // namespace skv::model
