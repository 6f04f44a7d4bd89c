// What every `cairn` subcommand shares: the connection to meta, output helpers and path rules.
#pragma once

#include <kj/async-io.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rpc/auth.h"
#include "rpc/cairn.capnp.h"
#include "rpc/meta_client.h"

namespace cairn::tool {

// A JSON string literal; bytes that are not UTF-8 become U+FFFD so the output always parses.
std::string jsonString(const std::string& s);
// 1536 -> "1.5 KiB".
std::string human(uint64_t bytes);
// Prints "cairn: MSG" to stderr and returns `code`.
int fail(const std::string& msg, int code);
// Splits an absolute cluster path into its names (see tool.cc for what it refuses).
int splitClusterPath(const std::string& path, std::vector<std::string>& parts);

struct Tool {
  kj::AsyncIoContext& io;
  ClusterSecret secret;
  std::vector<std::string> addrs;
  std::unique_ptr<MetaClient> meta;
  uint64_t clientId;

  Tool(kj::AsyncIoContext& io, const std::string& secretFile, const std::string& metaAddrs);
  kj::Own<capnp::MallocMessageBuilder> call(kj::Own<capnp::MallocMessageBuilder> req);
  // Asks one meta server about itself (not redirected to the leader).
  kj::Maybe<kj::Own<capnp::MallocMessageBuilder>> metaStatusOf(const std::string& addr);
};

// Progress on stderr: a bar redrawn in place on a terminal, a line every few seconds otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled);
  ~ProgressBar();
  void update(const std::string& phase, uint64_t done, uint64_t total, const char* unit = "");
  void finish();

 private:
  bool enabled_, tty_;
  std::string phase_;
  double phaseStart_ = 0, lastPrint_ = 0;
  bool drawn_ = false;
};

double monotonicSeconds();

}  // namespace cairn::tool
