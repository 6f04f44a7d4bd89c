// Client-side block encryption. The data key never leaves the client.
//
// A cluster seals every block with one of two suites, chosen by the first client to mount it
// (-o cipher=) and kept in the cluster's key check:
//
//   XChaCha20-Poly1305 (libsodium, any CPU)
//     file key = crypto_kdf_derive_from_key(32, subkey_id = inode, ctx = "cairnfil", data key)
//     block    = XChaCha20-Poly1305 (detached) with a fresh random 24-byte nonce per write
//   AES-256-GCM (libsodium, x86-64 with AES-NI and PCLMUL only; about 30% less CPU per block)
//     file key  = crypto_kdf_derive_from_key(32, subkey_id = inode, ctx = "cairnaes", data key)
//     block key = HChaCha20(file key, nonce[0..16]), as XChaCha20 derives its subkey
//     block     = AES-256-GCM (detached) under the block key, GCM nonce = nonce[16..24] || 0^32,
//                 with a fresh random 24-byte nonce per write. Every write has a key of its own
//                 (a 128-bit random input), so GCM's 96-bit nonces never limit how often a
//                 block is rewritten under one file key.
//
// Both: associated data = inode || absolute block number (both little-endian u64), so a block
// moved to another position or file fails authentication; aux = nonce (24) || tag (16), stored
// by chunk servers beside the ciphertext.
#pragma once

#include <sodium.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace cairn::fs {

constexpr size_t BLOCK = 4096;
constexpr size_t NONCE = 24;
constexpr size_t TAG = 16;
constexpr size_t AUX = NONCE + TAG;
static_assert(AUX == 40);
static_assert(NONCE == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES &&
              TAG == crypto_aead_xchacha20poly1305_ietf_ABYTES &&
              TAG == crypto_aead_aes256gcm_ABYTES);

using Key = std::array<unsigned char, 32>;

// The byte values are kept in every cluster's key check: never renumber.
enum class Suite : uint8_t { XChaCha20Poly1305 = 1, Aes256Gcm = 2 };

const char* suiteName(Suite s);
// "xchacha20poly1305" or "aes256gcm"; false for anything else.
bool parseSuite(const std::string& name, Suite* out);
// Whether this CPU can seal and open with the suite (libsodium's AES-256-GCM needs AES-NI and
// PCLMUL).
bool suiteAvailable(Suite s);
// AES-256-GCM where this CPU runs it, XChaCha20-Poly1305 elsewhere.
Suite fastestSuite();

class BlockCipher {
 public:
  // `keyBytes`: 32 raw bytes, or 64 hex digits (whitespace ignored).
  explicit BlockCipher(const std::string& keyBytes, Suite suite = Suite::XChaCha20Poly1305);
  ~BlockCipher();

  // The suite blocks are sealed and opened with; set before any block is (the mount sets the
  // cluster's from its key check). The suite must be available here.
  void setSuite(Suite s);
  Suite suite() const { return suite_; }

  // Seals BLOCK bytes of plaintext into `cipher` (BLOCK bytes) and `aux` (AUX bytes).
  void seal(uint64_t ino, uint64_t blockNo, const unsigned char* plain, unsigned char* cipher,
            unsigned char* aux);
  // Opens a block; false when it does not authenticate (wrong key, corruption, moved block).
  // `plain` may be `cipher` (opened in place).
  bool open(uint64_t ino, uint64_t blockNo, const unsigned char* cipher, const unsigned char* aux,
            unsigned char* plain);

 private:
  Key fileKey(uint64_t ino);

  Key master_;
  Suite suite_;
  uint64_t generation_;  // tells this cipher's keys (and suite) apart in per-thread caches
  std::mutex mutex_;     // guards keys_
  std::unordered_map<uint64_t, Key> keys_;
};

// The cluster's key check, kept by meta and set by the first client to mount: a block of known
// text sealed with the data key at (inode 0, block 0), then one byte naming the cluster's suite.
// A check of BLOCK + AUX bytes, without the byte, is from a cluster made before suites were
// chosen: XChaCha20-Poly1305.
std::vector<unsigned char> sealKeyCheck(BlockCipher& cipher);

enum class KeyCheck {
  Matches,           // the cipher now has the cluster's suite, and the data key is the cluster's
  WrongKey,          // the block did not open with this data key
  SuiteUnavailable,  // *suite is the cluster's, which this CPU cannot run
  Malformed,         // not a key check cairn wrote
};
KeyCheck openKeyCheck(BlockCipher& cipher, const unsigned char* check, size_t size, Suite* suite);

}  // namespace cairn::fs
