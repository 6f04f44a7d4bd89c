// Client-side block encryption. The data key never leaves the client.
//
//   file key  = crypto_kdf_derive_from_key(32, subkey_id = inode, ctx = "cairnfil", data key)
//   block     = XChaCha20-Poly1305 (detached) with a fresh random 24-byte nonce per write,
//               associated data = inode || absolute block number (both little-endian u64),
//               so a block moved to another position or file fails authentication.
//   aux       = nonce (24) || tag (16), stored by chunk servers beside the ciphertext.
#pragma once

#include <sodium.h>

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace cairn::fs {

constexpr size_t BLOCK = 4096;
constexpr size_t AUX = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES +
                       crypto_aead_xchacha20poly1305_ietf_ABYTES;
static_assert(AUX == 40);

using Key = std::array<unsigned char, 32>;

class BlockCipher {
 public:
  // `keyBytes`: 32 raw bytes, or 64 hex digits (whitespace ignored).
  explicit BlockCipher(const std::string& keyBytes);
  ~BlockCipher();

  // Seals BLOCK bytes of plaintext into `cipher` (BLOCK bytes) and `aux` (AUX bytes).
  void seal(uint64_t ino, uint64_t blockNo, const unsigned char* plain, unsigned char* cipher,
            unsigned char* aux);
  // Opens a block; false when it does not authenticate (wrong key, corruption, moved block).
  bool open(uint64_t ino, uint64_t blockNo, const unsigned char* cipher, const unsigned char* aux,
            unsigned char* plain);

 private:
  Key fileKey(uint64_t ino);

  Key master_;
  std::mutex mutex_;  // guards keys_
  std::unordered_map<uint64_t, Key> keys_;
};

}  // namespace cairn::fs
