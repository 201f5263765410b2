// The section checksum (AVX2 XXH3 where the CPU has it) equals libxxhash's XXH3_64bits for
// every length class of the algorithm (0, 1-3, 4-8, 9-16, 17-128, 129-240, long, stripe and
// block boundaries) and any alignment.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <vector>

#include "../../../lib/src/hash.hpp"
#include "codec_test_util.hpp"

TEST(SectionHash, EqualsLibxxhash) {
  skv::test::Rng rng(17);
  std::vector<uint8_t> buf(300000);
  for (auto& b : buf) b = uint8_t(rng.next());
  for (size_t n : {0u, 1u, 3u, 4u, 8u, 9u, 16u, 17u, 128u, 129u, 240u, 241u, 1023u, 1024u, 1025u, 4096u, 65536u,
                   65600u, 299000u})
    for (size_t off : {0u, 1u, 7u, 64u}) {
      const uint8_t* p = buf.data() + off;
      EXPECT_EQ(skv::detail::xxh3_64(p, n), XXH3_64bits(p, n)) << "n " << n << " offset " << off;
    }
}
