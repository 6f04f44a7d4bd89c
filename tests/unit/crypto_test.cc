// fs/crypto: blocks seal and open under the right key and position only.
#include <gtest/gtest.h>

#include <cstring>

#include "fs/crypto.h"

namespace cairn::fs {
namespace {

TEST(BlockCipher, SealedBlockOpensAtItsPositionWithItsKey) {
  BlockCipher c(std::string(32, 'k'));
  unsigned char plain[BLOCK], cipher[BLOCK], aux[AUX], back[BLOCK];
  for (size_t i = 0; i < BLOCK; i++) plain[i] = static_cast<unsigned char>(i * 7);
  c.seal(5, 9, plain, cipher, aux);
  EXPECT_NE(memcmp(plain, cipher, BLOCK), 0);
  ASSERT_TRUE(c.open(5, 9, cipher, aux, back));
  EXPECT_EQ(memcmp(plain, back, BLOCK), 0);
  EXPECT_FALSE(c.open(5, 10, cipher, aux, back));  // moved to another block
  EXPECT_FALSE(c.open(6, 9, cipher, aux, back));   // moved to another file
  cipher[100] ^= 1;
  EXPECT_FALSE(c.open(5, 9, cipher, aux, back));   // flipped bit
}

TEST(BlockCipher, WrongKeyFailsAndNoncesAreFresh) {
  BlockCipher a(std::string(32, 'a'));
  BlockCipher b(std::string(64, 'b'));  // 64 hex digits
  unsigned char plain[BLOCK] = {1, 2, 3}, c1[BLOCK], c2[BLOCK], aux1[AUX], aux2[AUX], back[BLOCK];
  a.seal(1, 1, plain, c1, aux1);
  a.seal(1, 1, plain, c2, aux2);
  EXPECT_NE(memcmp(aux1, aux2, 24), 0);  // a fresh nonce for every write
  EXPECT_NE(memcmp(c1, c2, BLOCK), 0);
  EXPECT_FALSE(b.open(1, 1, c1, aux1, back));
}

}  // namespace
}  // namespace cairn::fs
