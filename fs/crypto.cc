#include "fs/crypto.h"

#include <kj/debug.h>

#include <cctype>
#include <cstring>

namespace cairn::fs {

BlockCipher::BlockCipher(const std::string& keyBytes) {
  KJ_REQUIRE(sodium_init() >= 0, "libsodium failed to initialise");
  std::string hex;
  for (char c : keyBytes)
    if (!isspace(static_cast<unsigned char>(c))) hex.push_back(c);
  bool isHex = hex.size() == 64 &&
               hex.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
  if (isHex) {
    size_t len = 0;
    KJ_REQUIRE(sodium_hex2bin(master_.data(), master_.size(), hex.data(), hex.size(), nullptr,
                              &len, nullptr) == 0 && len == 32,
               "bad hex data key");
  } else {
    KJ_REQUIRE(keyBytes.size() == 32, "the data key file must hold 32 bytes or 64 hex digits",
               keyBytes.size());
    memcpy(master_.data(), keyBytes.data(), 32);
  }
}

BlockCipher::~BlockCipher() { sodium_memzero(master_.data(), master_.size()); }

Key BlockCipher::fileKey(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = keys_.find(ino);
  if (it != keys_.end()) return it->second;
  Key k;
  crypto_kdf_derive_from_key(k.data(), k.size(), ino, "cairnfil", master_.data());
  if (keys_.size() > 65536) keys_.clear();  // bounded cache
  keys_[ino] = k;
  return k;
}

namespace {
void associated(uint64_t ino, uint64_t blockNo, unsigned char ad[16]) {
  memcpy(ad, &ino, 8);
  memcpy(ad + 8, &blockNo, 8);
}
}  // namespace

void BlockCipher::seal(uint64_t ino, uint64_t blockNo, const unsigned char* plain,
                       unsigned char* cipher, unsigned char* aux) {
  Key k = fileKey(ino);
  unsigned char ad[16];
  associated(ino, blockNo, ad);
  unsigned char* nonce = aux;
  unsigned char* tag = aux + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  randombytes_buf(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  unsigned long long tagLen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt_detached(cipher, tag, &tagLen, plain, BLOCK, ad,
                                                      sizeof(ad), nullptr, nonce, k.data());
}

bool BlockCipher::open(uint64_t ino, uint64_t blockNo, const unsigned char* cipher,
                       const unsigned char* aux, unsigned char* plain) {
  Key k = fileKey(ino);
  unsigned char ad[16];
  associated(ino, blockNo, ad);
  const unsigned char* nonce = aux;
  const unsigned char* tag = aux + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(plain, nullptr, cipher, BLOCK, tag, ad,
                                                             sizeof(ad), nonce, k.data()) == 0;
}

}  // namespace cairn::fs
