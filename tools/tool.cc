#include "tools/tool.h"

#include <kj/debug.h>
#include <sodium.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "rpc/runtime.h"

namespace cairn::tool {

namespace {
// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid.
size_t utf8SequenceAt(const std::string& s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; k++)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  if (n > 1) {
    // No overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629 section 4).
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) ||
        (c == 0xf4 && c1 >= 0x90))
      return 0;
  }
  return n;
}
}  // namespace

// A JSON string literal. File names are bytes, not necessarily UTF-8: a byte that does not start
// a valid UTF-8 sequence becomes U+FFFD so the output always parses.
std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); i++) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t n = utf8SequenceAt(s, i);
      if (n == 0) {
        out += "\\ufffd";
      } else {
        out.append(s, i, n);
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

std::string human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  char buf[32];
  snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

Tool::Tool(kj::AsyncIoContext& io, const std::string& secretFile, const std::string& metaAddrs)
    : io(io), secret(ClusterSecret::fromFile(secretFile)), addrs(splitList(metaAddrs)) {
  randombytes_buf(&clientId, sizeof(clientId));
  clientId |= 1;
  meta = std::make_unique<MetaClient>(io, secret, addrs, proto::Role::ADMIN, clientId,
                                      10 * kj::SECONDS);
}

kj::Own<capnp::MallocMessageBuilder> Tool::call(kj::Own<capnp::MallocMessageBuilder> req) {
  return meta->call(kj::mv(req)).wait(io.waitScope);
}

kj::Maybe<kj::Own<capnp::MallocMessageBuilder>> Tool::metaStatusOf(const std::string& addr) {
  MetaClient one(io, secret, {addr}, proto::Role::ADMIN, clientId, 2 * kj::SECONDS);
  auto req = newMetaRequest();
  req->getRoot<proto::MetaRequest>().getOp().setMetaStatus();
  try {
    return one.call(kj::mv(req)).wait(io.waitScope);
  } catch (kj::Exception& e) {
    std::string d = e.getDescription().cStr();
    if (d.find("authentication failed") != std::string::npos) throw;
    return nullptr;
  }
}


int fail(const std::string& msg, int code) {
  fprintf(stderr, "cairn: %s\n", msg.c_str());
  return code;
}

// Splits an absolute cluster path ("/a/b/c") into its names. "/" alone is the root (no names).
// Refuses relative paths, empty components ("//", a trailing "/"), "." and "..", and names over
// 255 bytes, all of which would otherwise name something other than what the user typed.
int splitClusterPath(const std::string& path, std::vector<std::string>& parts) {
  if (path.empty() || path[0] != '/')
    return fail(path + ": the path must be absolute (from the cluster's root, e.g. /dir/file)", 2);
  if (path.size() > 4096) return fail("the path is longer than 4096 bytes", 2);
  if (path == "/") return 0;
  size_t at = 1;
  while (true) {
    size_t slash = path.find('/', at);
    std::string part = path.substr(at, slash == std::string::npos ? std::string::npos : slash - at);
    if (part.empty()) return fail(path + ": the path has an empty component", 2);
    if (part == "." || part == "..")
      return fail(path + ": '.' and '..' are not allowed in the path", 2);
    if (part.size() > 255) return fail(path + ": a name is longer than 255 bytes", 2);
    if (part.find('\0') != std::string::npos) return fail("the path contains a NUL byte", 2);
    parts.push_back(part);
    if (slash == std::string::npos) return 0;
    at = slash + 1;
  }
}

double monotonicSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

ProgressBar::ProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(2) != 0) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::finish() {
  if (drawn_ && tty_) fprintf(stderr, "\n");
  drawn_ = false;
}

void ProgressBar::update(const std::string& phase, uint64_t done, uint64_t total, const char* unit) {
  if (!enabled_) return;
  double now = monotonicSeconds();
  if (phase != phase_) {
    finish();
    phase_ = phase;
    phaseStart_ = now;
    lastPrint_ = 0;
  }
  bool end = total != 0 && done >= total;
  if (!end && now - lastPrint_ < (tty_ ? 0.2 : 5.0)) return;
  lastPrint_ = now;
  double frac = total == 0 ? 0 : std::min(1.0, double(done) / double(total));
  double elapsed = now - phaseStart_;
  std::string eta = "";
  if (frac > 0.01 && !end) {
    char buf[32];
    snprintf(buf, sizeof(buf), " ETA %.0fs", elapsed / frac - elapsed);
    eta = buf;
  }
  double rate = elapsed > 0 ? double(done) / elapsed : 0;
  if (tty_) {
    int width = 30, fill = int(frac * width);
    fprintf(stderr, "\r%-10s [%s%s] %5.1f%% %llu/%llu%s %.0f/s%s   ", phase.c_str(),
            std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(), frac * 100,
            (unsigned long long)done, (unsigned long long)total, unit, rate, eta.c_str());
    drawn_ = true;
  } else {
    fprintf(stderr, "%s: %llu/%llu%s (%.1f%%, %.0f/s)%s\n", phase.c_str(),
            (unsigned long long)done, (unsigned long long)total, unit, frac * 100, rate,
            eta.c_str());
  }
  fflush(stderr);
}

}  // namespace cairn::tool
