#include "fs/crypto.h"

#include <kj/debug.h>

#include <pthread.h>

#include <cctype>
#include <cstring>

namespace cairn::fs {

namespace {

std::atomic<uint64_t> nextGeneration{1};

// Nonces come from a ChaCha20 keystream per thread under a key from the OS's generator, not
// from randombytes_buf() per block: that is a getrandom() system call each time, a quarter of
// the CPU of sealing a block (0.3 s per GiB written). A fork gives the child new keys, so
// parent and child never draw the same nonces.
std::atomic<uint64_t> forks{0};

class NonceSource {
 public:
  NonceSource() {
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { forks++; }); });
  }
  ~NonceSource() {
    sodium_memzero(key_, sizeof(key_));
    sodium_memzero(buf_, sizeof(buf_));
  }
  void draw(unsigned char* out, size_t n) {
    if (seededAt_ != forks.load(std::memory_order_relaxed) + 1) {
      randombytes_buf(key_, sizeof(key_));
      counter_ = 0;
      used_ = sizeof(buf_);
      seededAt_ = forks.load(std::memory_order_relaxed) + 1;
    }
    if (used_ + n > sizeof(buf_)) {
      unsigned char nonce[crypto_stream_chacha20_NONCEBYTES];
      memcpy(nonce, &counter_, sizeof(nonce));
      counter_++;
      crypto_stream_chacha20(buf_, sizeof(buf_), nonce, key_);
      used_ = 0;
    }
    memcpy(out, buf_ + used_, n);
    sodium_memzero(buf_ + used_, n);  // each nonce is handed out once
    used_ += n;
  }

 private:
  unsigned char key_[crypto_stream_chacha20_KEYBYTES];
  unsigned char buf_[4096];
  size_t used_ = sizeof(buf_);
  uint64_t counter_ = 0;
  uint64_t seededAt_ = 0;  // forks + 1 when seeded; 0: never
};
static_assert(crypto_stream_chacha20_NONCEBYTES == sizeof(uint64_t));

constexpr char KEY_CHECK_TEXT[] = "cairn data key check v1";

void associated(uint64_t ino, uint64_t blockNo, unsigned char ad[16]) {
  memcpy(ad, &ino, 8);
  memcpy(ad + 8, &blockNo, 8);
}

// The AES-256-GCM suite's per-write key and GCM nonce, from the file key and the 24-byte nonce.
struct AesBlockKey {
  unsigned char key[32];
  unsigned char nonce[crypto_aead_aes256gcm_NPUBBYTES];
  AesBlockKey(const Key& fileKey, const unsigned char* nonce24) {
    crypto_core_hchacha20(key, nonce24, fileKey.data(), nullptr);
    memcpy(nonce, nonce24 + 16, 8);
    memset(nonce + 8, 0, sizeof(nonce) - 8);
  }
  ~AesBlockKey() { sodium_memzero(key, sizeof(key)); }
};
static_assert(crypto_aead_aes256gcm_NPUBBYTES == 12);

}  // namespace

const char* suiteName(Suite s) {
  return s == Suite::Aes256Gcm ? "aes256gcm" : "xchacha20poly1305";
}

bool parseSuite(const std::string& name, Suite* out) {
  if (name == "aes256gcm") *out = Suite::Aes256Gcm;
  else if (name == "xchacha20poly1305") *out = Suite::XChaCha20Poly1305;
  else return false;
  return true;
}

bool suiteAvailable(Suite s) {
  // libsodium learns the CPU's features in sodium_init() (idempotent, thread-safe).
  return s == Suite::XChaCha20Poly1305 ||
         (sodium_init() >= 0 && crypto_aead_aes256gcm_is_available() == 1);
}

Suite fastestSuite() {
  return suiteAvailable(Suite::Aes256Gcm) ? Suite::Aes256Gcm : Suite::XChaCha20Poly1305;
}

BlockCipher::BlockCipher(const std::string& keyBytes, Suite suite)
    : suite_(suite), generation_(nextGeneration++) {
  KJ_REQUIRE(sodium_init() >= 0, "libsodium failed to initialise");
  KJ_REQUIRE(suiteAvailable(suite), "this CPU cannot run the cipher", suiteName(suite));
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

BlockCipher::~BlockCipher() {
  sodium_memzero(master_.data(), master_.size());
  for (auto& [ino, k] : keys_) sodium_memzero(k.data(), k.size());
}

void BlockCipher::setSuite(Suite s) {
  KJ_REQUIRE(suiteAvailable(s), "this CPU cannot run the cipher", suiteName(s));
  std::lock_guard<std::mutex> lock(mutex_);
  suite_ = s;
  generation_ = nextGeneration++;
  keys_.clear();
}

Key BlockCipher::fileKey(uint64_t ino) {
  // A read or write opens or seals many blocks of one file in a row on each thread: the last
  // key is kept per thread, out of the way of the lock.
  thread_local uint64_t lastGeneration = 0, lastIno = 0;
  thread_local Key lastKey;
  if (lastGeneration == generation_ && lastIno == ino) return lastKey;
  Key k;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = keys_.find(ino);
    if (it != keys_.end()) {
      k = it->second;
    } else {
      crypto_kdf_derive_from_key(k.data(), k.size(), ino,
                                 suite_ == Suite::Aes256Gcm ? "cairnaes" : "cairnfil",
                                 master_.data());
      if (keys_.size() > 65536) keys_.clear();  // bounded cache
      keys_[ino] = k;
    }
  }
  lastGeneration = generation_;
  lastIno = ino;
  lastKey = k;
  return k;
}

void BlockCipher::seal(uint64_t ino, uint64_t blockNo, const unsigned char* plain,
                       unsigned char* cipher, unsigned char* aux) {
  Key k = fileKey(ino);
  unsigned char ad[16];
  associated(ino, blockNo, ad);
  unsigned char* nonce = aux;
  unsigned char* tag = aux + NONCE;
  thread_local NonceSource nonces;
  nonces.draw(nonce, NONCE);
  unsigned long long tagLen = 0;
  if (suite_ == Suite::Aes256Gcm) {
    AesBlockKey bk(k, nonce);
    crypto_aead_aes256gcm_encrypt_detached(cipher, tag, &tagLen, plain, BLOCK, ad, sizeof(ad),
                                           nullptr, bk.nonce, bk.key);
  } else {
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached(cipher, tag, &tagLen, plain, BLOCK, ad,
                                                        sizeof(ad), nullptr, nonce, k.data());
  }
}

bool BlockCipher::open(uint64_t ino, uint64_t blockNo, const unsigned char* cipher,
                       const unsigned char* aux, unsigned char* plain) {
  Key k = fileKey(ino);
  unsigned char ad[16];
  associated(ino, blockNo, ad);
  const unsigned char* nonce = aux;
  const unsigned char* tag = aux + NONCE;
  int rc;
  if (suite_ == Suite::Aes256Gcm) {
    AesBlockKey bk(k, nonce);
    rc = crypto_aead_aes256gcm_decrypt_detached(plain, nullptr, cipher, BLOCK, tag, ad,
                                                sizeof(ad), bk.nonce, bk.key);
  } else {
    rc = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(plain, nullptr, cipher, BLOCK, tag,
                                                             ad, sizeof(ad), nonce, k.data());
  }
  return rc == 0;
}

namespace {
// What the key check seals: its text, zero-padded to a block.
struct KeyCheckPlain {
  unsigned char bytes[BLOCK] = {0};
  KeyCheckPlain() { memcpy(bytes, KEY_CHECK_TEXT, sizeof(KEY_CHECK_TEXT)); }
};
}  // namespace

std::vector<unsigned char> sealKeyCheck(BlockCipher& cipher) {
  KeyCheckPlain plain;
  std::vector<unsigned char> out(BLOCK + AUX + 1);
  cipher.seal(0, 0, plain.bytes, out.data(), out.data() + BLOCK);
  out[BLOCK + AUX] = static_cast<unsigned char>(cipher.suite());
  return out;
}

KeyCheck openKeyCheck(BlockCipher& cipher, const unsigned char* check, size_t size,
                      Suite* suite) {
  if (size == BLOCK + AUX) {
    *suite = Suite::XChaCha20Poly1305;
  } else if (size == BLOCK + AUX + 1 &&
             (check[BLOCK + AUX] == static_cast<unsigned char>(Suite::XChaCha20Poly1305) ||
              check[BLOCK + AUX] == static_cast<unsigned char>(Suite::Aes256Gcm))) {
    *suite = static_cast<Suite>(check[BLOCK + AUX]);
  } else {
    return KeyCheck::Malformed;
  }
  if (!suiteAvailable(*suite)) return KeyCheck::SuiteUnavailable;
  cipher.setSuite(*suite);
  KeyCheckPlain plain;
  unsigned char opened[BLOCK];
  if (!cipher.open(0, 0, check, check + BLOCK, opened) || memcmp(opened, plain.bytes, BLOCK) != 0)
    return KeyCheck::WrongKey;
  return KeyCheck::Matches;
}

}  // namespace cairn::fs
