// The checks of `cairn fsck` that need only the metadata: run on a consistent copy of a meta
// server's store (MetaRequest.metaDump), never on the live one. Every check streams over the
// tables; memory stays bounded however many files there are (link counts are taken over windows
// of inode numbers, one pass over the entries per window).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "meta/store.h"
#include "rpc/cairn.capnp.h"

namespace cairn::meta::fsck {

// One problem. `kind` is a stable name (it is the JSON key scripts match on).
struct Finding {
  std::string kind;
  std::string detail;        // what is wrong, for people
  uint64_t ino = 0;          // the inode concerned (0: none)
  uint64_t parent = 0;       // an entry: its directory and name
  std::string name;
  uint64_t chunk = 0;        // a chunk: its id and position
  uint64_t index = 0;
  uint32_t server = 0;       // a copy: the chunk server holding it (or that should)
  uint64_t expect = 0;       // a value found, and the value it should have
  uint64_t value = 0;
  bool fixable = false;      // --repair knows a safe fix
  std::string path;          // filled in by resolvePaths
  std::string fix;           // what --repair did (or why it did not)
};

struct Options {
  // Inode numbers per link-count window; memory for the counts is 8 bytes per number.
  uint64_t window = 1u << 21;
  std::function<void(const char* phase, uint64_t done, uint64_t total)> progress;
};

class Checker {
 public:
  Checker(Store& store, std::function<void(Finding)> sink, Options options = {});

  // Every namespace check: entries, link counts, orphans, directory tree, chunk records.
  void checkNamespace(Txn& t);
  // Fills in `path` of each finding that names an inode or an entry. Bounded by the number of
  // findings: one pass over the entries, then a walk up the directory tree per finding.
  void resolvePaths(Txn& t, std::vector<Finding>& findings);

  uint64_t inodesSeen() const { return inodesSeen_; }
  uint64_t entriesSeen() const { return entriesSeen_; }
  uint64_t chunksSeen() const { return chunksSeen_; }

 private:
  void checkInodes(Txn& t);
  void checkEntriesAndLinks(Txn& t);
  void checkCookies(Txn& t);
  void checkTree(Txn& t);
  void checkChunks(Txn& t);
  std::string dirPath(Txn& t, uint64_t dir, int depth = 0);
  void report(Finding f);
  void tick(const char* phase, uint64_t done, uint64_t total);

  Store& store_;
  std::function<void(Finding)> sink_;
  Options options_;
  uint64_t inodesSeen_ = 0, entriesSeen_ = 0, chunksSeen_ = 0;
  uint64_t chunkSize_ = 0;
  std::unordered_map<uint64_t, std::string> dirPaths_;
};

// The repair of a namespace finding, as the command cairn fsck --repair sends (false: its kind
// has no namespace repair). Meta checks the premise (`expect`) again when it applies it.
bool fixOp(const Finding& f, proto::MetaRequest::FsckFixOp::Builder out);

// Entries in a table (for progress totals).
uint64_t tableEntries(Txn& t, MDB_dbi dbi);

}  // namespace cairn::meta::fsck
