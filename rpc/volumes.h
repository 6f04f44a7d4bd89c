// Volumes: directories /volumes/NAME whose quota is their capacity. Used by `cairn volume` and by
// cairn-csi's controller, both talking to meta directly (no mount needed). Every operation is
// safe to repeat: create with the same capacity, delete of a missing volume and resize to the
// current size all succeed without changing anything.
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "rpc/cairn.capnp.h"

namespace cairn {

// Sends one meta request (root MetaRequest) and returns the reply (root MetaReply).
using MetaCall =
    std::function<kj::Own<capnp::MallocMessageBuilder>(kj::Own<capnp::MallocMessageBuilder>)>;

struct VolumeInfo {
  std::string name;
  uint64_t ino = 0;
  bool hasQuota = false;
  uint64_t limitBytes = 0, limitInodes = 0, usedBytes = 0, usedInodes = 0;
};

class Volumes {
 public:
  static constexpr const char* DIR = "volumes";      // below the cluster's root
  static constexpr const char* TRASH = ".trash";     // below /volumes
  static constexpr size_t MAX_NAME = 128;

  explicit Volumes(MetaCall call) : call_(std::move(call)) {}

  // Names: 1..128 of [A-Za-z0-9._-], not starting with '.' (so never "." or "..").
  static bool validName(const std::string& name);

  // errno-style results. create: EEXIST when the volume exists with another capacity.
  // `inodes` 0: no inode limit.
  int create(const std::string& name, uint64_t bytes, VolumeInfo& out, uint64_t inodes = 0);
  // Removes the volume and everything in it, or moves it into /volumes/.trash when `toTrash`.
  // A missing volume is not an error.
  int remove(const std::string& name, bool toTrash);
  int resize(const std::string& name, uint64_t bytes, VolumeInfo& out);
  int get(const std::string& name, VolumeInfo& out);  // ENOENT when missing
  int list(std::vector<VolumeInfo>& out);

  // Helpers on the namespace (inode numbers are the cluster's).
  int lookup(uint64_t parent, const std::string& name, uint64_t& ino, uint32_t* mode = nullptr);
  int resolve(const std::string& path, uint64_t& ino);  // "/a/b" from the root
  int quotaGet(uint64_t ino, VolumeInfo& out);
  int quotaSet(uint64_t ino, uint64_t bytes, uint64_t inodes, VolumeInfo* out);

 private:
  int volumesDir(bool create, uint64_t& ino);
  int mkdir(uint64_t parent, const std::string& name, uint64_t& ino);
  int removeTree(uint64_t dir);
  int unlinkName(uint64_t parent, const std::string& name, bool dir);

  MetaCall call_;
};

}  // namespace cairn
