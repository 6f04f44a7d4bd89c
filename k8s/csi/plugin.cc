#include "k8s/csi/plugin.h"

#include <fcntl.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

namespace cairn::csi {

namespace v1 = ::csi::v1;
using grpc::Status;
using grpc::StatusCode;

namespace {

constexpr const char* DRIVER_NAME = "csi.cairn.io";
constexpr const char* DRIVER_VERSION = "0.1.0";
constexpr uint64_t DEFAULT_BYTES = 1ull << 30;
constexpr const char* ON_DELETE_XATTR = "user.cairn.csi.on-delete";

Status invalid(const std::string& what) { return Status(StatusCode::INVALID_ARGUMENT, what); }

Status fromErrno(int err, const std::string& what) {
  std::string msg = what + ": " + strerror(err);
  switch (err) {
    case 0: return Status::OK;
    case EINVAL: return Status(StatusCode::INVALID_ARGUMENT, msg);
    case ENOENT: return Status(StatusCode::NOT_FOUND, msg);
    case EEXIST: return Status(StatusCode::ALREADY_EXISTS, msg);
    case EDQUOT:
    case ENOSPC: return Status(StatusCode::RESOURCE_EXHAUSTED, msg);
    case EAGAIN:
    case ENOTCONN:
    case ETIMEDOUT: return Status(StatusCode::UNAVAILABLE, msg);
    default: return Status(StatusCode::INTERNAL, msg);
  }
}

// Runs `fn`, turning a cluster that cannot be reached into UNAVAILABLE instead of a crash.
template <typename F>
Status guarded(const char* method, F&& fn) {
  try {
    Status s = fn();
    if (!s.ok()) spdlog::warn("{}: {} ({})", method, s.error_message(), int(s.error_code()));
    return s;
  } catch (kj::Exception& e) {
    spdlog::error("{}: {}", method, e.getDescription().cStr());
    return Status(StatusCode::UNAVAILABLE, std::string("cairn cluster: ") + e.getDescription().cStr());
  } catch (std::exception& e) {
    spdlog::error("{}: {}", method, e.what());
    return Status(StatusCode::INTERNAL, e.what());
  }
}

// The file system type mounted at exactly `path` (the top one), from /proc/self/mountinfo.
std::optional<std::string> mountedType(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<std::string> found;
  auto unescape = [](const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
      if (s[i] == '\\' && i + 3 < s.size() + 0 && isdigit(s[i + 1])) {
        out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
        i += 3;
      } else {
        out.push_back(s[i]);
      }
    }
    return out;
  };
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt;
    f >> id >> parent >> dev >> root >> mnt;
    if (unescape(mnt) != path) continue;
    std::string tok;
    while (f >> tok && tok != "-") {
    }
    std::string type;
    f >> type;
    found = type;
  }
  return found;
}

bool isMountPoint(const std::string& path) { return mountedType(path).has_value(); }

void detachAll(const std::string& path) {
  for (int i = 0; i < 8 && isMountPoint(path); i++) {
    if (umount2(path.c_str(), MNT_DETACH) != 0) {
      spdlog::warn("umount {}: {}", path, strerror(errno));
      break;
    }
  }
}

int statvfsErr(const std::string& path, struct statvfs* st) {
  struct statvfs tmp;
  return statvfs(path.c_str(), st ? st : &tmp) == 0 ? 0 : errno;
}

// statvfs with a time limit: a live FUSE daemon whose cluster is unreachable makes calls wait
// (they fail with ENOTCONN at once only when the daemon is gone). ETIMEDOUT after `ms`; the
// waiting thread is left to finish on its own.
int statvfsWithin(const std::string& path, int ms) {
  struct State {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    int err = 0;
  };
  auto state = std::make_shared<State>();
  std::thread([state, path]() {
    int e = statvfsErr(path, nullptr);
    std::lock_guard<std::mutex> lock(state->m);
    state->done = true;
    state->err = e;
    state->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(state->m);
  if (!state->cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return state->done; }))
    return ETIMEDOUT;
  return state->err;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s.push_back(d[p[i] >> 4]);
    s.push_back(d[p[i] & 15]);
  }
  return s;
}

bool capabilityIsBlock(const v1::VolumeCapability& c) { return c.has_block(); }

}  // namespace

// ---- input rules ----

bool validVolumeId(const std::string& id) {
  return id.find('\0') == std::string::npos && Volumes::validName(id);
}

bool validTargetPath(const std::string& path, const std::string& base) {
  if (path.empty() || path.size() > 4096 || path[0] != '/') return false;
  if (path.find('\0') != std::string::npos) return false;
  size_t at = 1;
  while (at <= path.size()) {
    size_t slash = path.find('/', at);
    if (slash == std::string::npos) slash = path.size();
    std::string part = path.substr(at, slash - at);
    if (part.empty() || part == "." || part == "..") return false;
    at = slash + 1;
  }
  std::string prefix = base;
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  return path.size() > prefix.size() + 1 && path.compare(0, prefix.size(), prefix) == 0 &&
         path[prefix.size()] == '/';
}

bool parseMountFlags(const google::protobuf::RepeatedPtrField<std::string>& flags,
                     unsigned long& out, std::string& bad) {
  static const std::map<std::string, unsigned long> known = {
      {"ro", MS_RDONLY},         {"rw", 0},
      {"noexec", MS_NOEXEC},     {"exec", 0},
      {"nosuid", MS_NOSUID},     {"suid", 0},
      {"nodev", MS_NODEV},       {"dev", 0},
      {"noatime", MS_NOATIME},   {"nodiratime", MS_NODIRATIME},
      {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME},
      {"defaults", 0},
  };
  out = 0;
  for (auto& f : flags) {
    auto it = known.find(f);
    if (it == known.end()) {
      bad = f;
      return false;
    }
    out |= it->second;
  }
  return true;
}

// ---- meta ----

MetaLink::MetaLink(const Config& config)
    : config_(config), volumes_([this](kj::Own<capnp::MallocMessageBuilder> m) {
        return call(kj::mv(m));
      }) {
  randombytes_buf(&clientId_, sizeof(clientId_));
  clientId_ |= 1;
  secret_ = kj::heap<ClusterSecret>(ClusterSecret::fromFile(config.secretFile));
  loop_.run([this]() {
    meta_ = kj::heap<MetaClient>(loop_.io(), *secret_, config_.metaAddrs, proto::Role::ADMIN,
                                 clientId_, 20 * kj::SECONDS);
  });
}

MetaLink::~MetaLink() {
  loop_.run([this]() { meta_ = nullptr; });
}

kj::Own<capnp::MallocMessageBuilder> MetaLink::call(kj::Own<capnp::MallocMessageBuilder> req) {
  return loop_.run([this, &req]() { return meta_->call(kj::mv(req)); });
}

bool MetaLink::reachable() {
  try {
    return loop_.run([this]() -> kj::Promise<bool> {
      auto one = kj::heap<MetaClient>(loop_.io(), *secret_, config_.metaAddrs, proto::Role::ADMIN,
                                      clientId_, 3 * kj::SECONDS);
      auto req = newMetaRequest();
      req->getRoot<proto::MetaRequest>().getOp().setClusterInfo();
      auto p = one->call(kj::mv(req));
      return p
          .then([](kj::Own<capnp::MallocMessageBuilder> r) {
                  return r->getRoot<proto::MetaReply>().getErr() == 0;
                },
                [](kj::Exception&&) { return false; })
          .attach(kj::mv(one));
    });
  } catch (kj::Exception&) {
    return false;
  }
}

// ---- node mounts ----

NodeMounts::NodeMounts(const Config& config) : config_(config) {
  std::filesystem::create_directories(config_.stateDir);
}

NodeMounts::~NodeMounts() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

std::string NodeMounts::volumePath(const std::string& id) const {
  return config_.nodeMount + "/" + Volumes::DIR + "/" + id;
}

int NodeMounts::check() {
  auto type = mountedType(config_.nodeMount);
  if (!type || *type != "fuse.cairn") return ENOENT;
  return statvfsWithin(config_.nodeMount, 2000);
}

bool NodeMounts::healthy() { return check() == 0; }

bool NodeMounts::mountNode(std::string& error) {
  detachAll(config_.nodeMount);  // a dead mount ("transport endpoint is not connected") goes
  std::error_code ec;
  std::filesystem::create_directories(config_.nodeMount, ec);
  std::string bin = config_.mountBinary;
  if (bin.empty()) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    std::string dir = n > 0 ? std::filesystem::path(std::string(self, n)).parent_path().string() : "";
    bin = !dir.empty() && access((dir + "/mount.cairn").c_str(), X_OK) == 0 ? dir + "/mount.cairn"
                                                                             : "/sbin/mount.cairn";
  }
  std::string source;
  for (auto& a : config_.metaAddrs) source += (source.empty() ? "" : ",") + a;
  source += ":/";
  std::string opts = "secretfile=" + config_.secretFile + ",keyfile=" + config_.keyFile +
                     ",log=" + config_.stateDir + "/mount.log";
  spdlog::info("mounting the node mount: {} {} {}", bin, source, config_.nodeMount);
  pid_t pid = fork();
  if (pid < 0) {
    error = std::string("fork: ") + strerror(errno);
    return false;
  }
  if (pid == 0) {
    // mount.cairn daemonizes once the mount answers; its daemon is not our child, so it lives
    // on when this plugin stops or is upgraded.
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
    }
    execl(bin.c_str(), bin.c_str(), source.c_str(), config_.nodeMount.c_str(), "-o", opts.c_str(),
          (char*)nullptr);
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    error = "mount.cairn failed (status " + std::to_string(status) + "), see " + config_.stateDir +
            "/mount.log";
    return false;
  }
  if (!healthy()) {
    error = "the node mount does not answer after mounting";
    return false;
  }
  return true;
}

bool NodeMounts::ensure() {
  std::lock_guard<std::mutex> lock(mutex_);
  int state = check();
  if (state == 0) return true;
  if (state == ETIMEDOUT) {
    // The mount process lives but its calls wait (the cluster is unreachable): mounting again
    // would not help, and the targets bound to it recover with the cluster.
    spdlog::warn("node mount {} is slow to answer (cluster unreachable?)", config_.nodeMount);
    return false;
  }
  spdlog::error("node mount {} is missing or broken: {}", config_.nodeMount, strerror(state));
  if (!config_.remount) return false;
  std::string error;
  if (!mountNode(error)) {
    spdlog::error("mounting {} again: {}", config_.nodeMount, error);
    return false;
  }
  spdlog::info("node mount {} is back; binding every published volume again", config_.nodeMount);
  rebind(/*brokenOnly=*/false);
  return true;
}

void NodeMounts::startWatcher() {
  watcher_ = std::thread([this]() {
    while (!stop_) {
      for (int i = 0; i < config_.healthSeconds * 10 && !stop_; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (stop_) break;
      if (!ensure()) continue;
      // The node mount may have been mounted again by someone else (the mount container):
      // targets still bound to the old one fail with ENOTCONN; bind them again.
      std::lock_guard<std::mutex> lock(mutex_);
      rebind(/*brokenOnly=*/true);
    }
  });
}

int NodeMounts::bind(const std::string& source, const std::string& target, unsigned long flags,
                     std::string& error) {
  if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    int e = errno;
    error = "bind " + source + " on " + target + ": " + strerror(e);
    return e;
  }
  if (flags != 0 &&
      mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | flags, nullptr) != 0) {
    int e = errno;
    error = "applying mount flags on " + target + ": " + strerror(e);
    umount2(target.c_str(), MNT_DETACH);
    return e;
  }
  return 0;
}

std::string NodeMounts::recordPath(const std::string& target) const {
  unsigned char h[16];
  crypto_generichash(h, sizeof(h), reinterpret_cast<const unsigned char*>(target.data()),
                     target.size(), nullptr, 0);
  return config_.stateDir + "/" + hex(h, sizeof(h)) + ".rec";
}

void NodeMounts::record(const std::string& id, const std::string& target, unsigned long flags) {
  std::string path = recordPath(target);
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << id << "\n" << target << "\n" << flags << "\n";
  }
  std::filesystem::rename(path + ".tmp", path);
}

void NodeMounts::forget(const std::string& target) {
  std::error_code ec;
  std::filesystem::remove(recordPath(target), ec);
}

void NodeMounts::rebind(bool brokenOnly) {
  // One pass over the records of published targets (validated again: they are files on disk).
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(config_.stateDir, ec)) {
    if (e.path().extension() != ".rec") continue;
    std::ifstream in(e.path());
    std::string id, target;
    unsigned long flags = 0;
    if (!std::getline(in, id) || !std::getline(in, target) || !(in >> flags)) continue;
    if (!validVolumeId(id) || !validTargetPath(target, config_.kubeletDir)) continue;
    if (brokenOnly) {
      if (isMountPoint(target) && statvfsErr(target, nullptr) == 0) continue;
      spdlog::warn("published target {} of volume {} is broken: binding it again", target, id);
    }
    detachAll(target);
    std::string error;
    if (bind(volumePath(id), target, flags, error) != 0) {
      spdlog::error("binding {} again: {}", target, error);
    } else {
      spdlog::info("bound volume {} on {} again", id, target);
    }
  }
}

int NodeMounts::publish(const std::string& id, const std::string& target, unsigned long flags,
                        std::string& error) {
  if (!ensure()) {
    error = "the node's cairn mount " + config_.nodeMount + " is not available";
    return EAGAIN;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  std::string source = volumePath(id);
  struct stat src;
  if (stat(source.c_str(), &src) != 0 || !S_ISDIR(src.st_mode)) {
    error = "volume " + id + " does not exist";
    return ENOENT;
  }
  if (isMountPoint(target)) {
    struct stat tgt;
    struct statvfs vfs;
    if (stat(target.c_str(), &tgt) == 0 && statvfsErr(target, &vfs) == 0) {
      bool same = tgt.st_dev == src.st_dev && tgt.st_ino == src.st_ino;
      bool ro = (vfs.f_flag & ST_RDONLY) != 0;
      if (same && ro == ((flags & MS_RDONLY) != 0)) {
        record(id, target, flags);
        return 0;  // already published like this
      }
      error = "target " + target + " is already published with another volume or mode";
      return EEXIST;
    }
    detachAll(target);  // a broken bind left behind
  }
  std::error_code ec;
  std::filesystem::create_directories(target, ec);
  if (ec) {
    error = "creating " + target + ": " + ec.message();
    return ec.value();
  }
  if (int e = bind(source, target, flags, error)) return e;
  record(id, target, flags);
  spdlog::info("published volume {} on {}{}", id, target, (flags & MS_RDONLY) ? " (read-only)" : "");
  return 0;
}

int NodeMounts::unpublish(const std::string& target, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  detachAll(target);  // MNT_DETACH: also safe when the mount behind it is dead
  if (rmdir(target.c_str()) != 0 && errno != ENOENT) {
    int e = errno;
    if (e != ENOTEMPTY && e != ENOTDIR) {
      error = "removing " + target + ": " + strerror(e);
      return e;
    }
    spdlog::warn("left {} in place: {}", target, strerror(e));
  }
  forget(target);
  spdlog::info("unpublished {}", target);
  return 0;
}

// ---- identity ----

Status IdentityService::GetPluginInfo(grpc::ServerContext*, const v1::GetPluginInfoRequest*,
                                      v1::GetPluginInfoResponse* out) {
  out->set_name(DRIVER_NAME);
  out->set_vendor_version(DRIVER_VERSION);
  return Status::OK;
}

Status IdentityService::GetPluginCapabilities(grpc::ServerContext*,
                                              const v1::GetPluginCapabilitiesRequest*,
                                              v1::GetPluginCapabilitiesResponse* out) {
  out->add_capabilities()->mutable_service()->set_type(
      v1::PluginCapability::Service::CONTROLLER_SERVICE);
  out->add_capabilities()->mutable_volume_expansion()->set_type(
      v1::PluginCapability::VolumeExpansion::ONLINE);
  return Status::OK;
}

Status IdentityService::Probe(grpc::ServerContext*, const v1::ProbeRequest*,
                              v1::ProbeResponse* out) {
  bool ready = true;
  if (meta_ && !meta_->reachable()) {
    spdlog::warn("probe: meta unreachable");
    ready = false;
  }
  if (node_ && !node_->healthy()) {
    spdlog::warn("probe: the node mount {} is not healthy", config_.nodeMount);
    ready = false;
  }
  out->mutable_ready()->set_value(ready);
  return Status::OK;
}

// ---- controller ----

Status ControllerService::CreateVolume(grpc::ServerContext*, const v1::CreateVolumeRequest* req,
                                       v1::CreateVolumeResponse* out) {
  return guarded("CreateVolume", [&]() -> Status {
    const std::string& name = req->name();
    if (name.empty()) return invalid("name is required");
    if (!validVolumeId(name))
      return invalid("name must be 1-128 of A-Z a-z 0-9 . _ - and not start with '.'");
    if (req->volume_capabilities_size() == 0) return invalid("volume_capabilities are required");
    for (auto& c : req->volume_capabilities()) {
      if (capabilityIsBlock(c)) return invalid("block volumes are not supported");
      if (!c.has_mount()) return invalid("an access type (mount) is required");
    }
    if (req->has_volume_content_source())
      return invalid("creating a volume from a snapshot or a volume is not supported");
    bool trash = false;
    uint64_t inodes = 0;
    for (auto& [k, v] : req->parameters()) {
      if (k == "onDelete") {
        if (v != "delete" && v != "trash") return invalid("onDelete must be delete or trash");
        trash = v == "trash";
      } else if (k == "inodeLimit") {
        if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos)
          return invalid("inodeLimit must be a number");
        inodes = std::stoull(v);
      } else if (k.rfind("csi.storage.k8s.io/", 0) != 0) {
        return invalid("unknown parameter " + k + " (known: onDelete, inodeLimit)");
      }
    }
    int64_t required = req->capacity_range().required_bytes();
    int64_t limit = req->capacity_range().limit_bytes();
    if (required < 0 || limit < 0) return invalid("negative capacity");
    if (limit != 0 && limit < required) return invalid("limit_bytes below required_bytes");
    uint64_t bytes = required > 0 ? uint64_t(required) : limit > 0 ? uint64_t(limit) : DEFAULT_BYTES;
    std::lock_guard<std::mutex> lock(mutex_);
    VolumeInfo v;
    int e = meta_.volumes().create(name, bytes, v, inodes);
    if (e == EEXIST)
      return Status(StatusCode::ALREADY_EXISTS,
                    "volume " + name + " exists with another capacity or inode limit");
    if (e != 0) return fromErrno(e, "creating volume " + name);
    if (trash) {
      auto m = newMetaRequest();
      auto x = m->getRoot<proto::MetaRequest>().getOp().initSetxattr();
      x.setIno(v.ino);
      x.setName(ON_DELETE_XATTR);
      x.setValue(kj::StringPtr("trash").asBytes());
      auto r = meta_.call(kj::mv(m));
      if (int xe = r->getRoot<proto::MetaReply>().getErr())
        return fromErrno(xe, "marking volume " + name);
    }
    spdlog::info("CreateVolume {}: {} bytes{}", name, bytes, trash ? ", kept in trash on delete" : "");
    auto* vol = out->mutable_volume();
    vol->set_volume_id(name);
    vol->set_capacity_bytes(int64_t(v.limitBytes ? v.limitBytes : bytes));
    return Status::OK;
  });
}

Status ControllerService::DeleteVolume(grpc::ServerContext*, const v1::DeleteVolumeRequest* req,
                                       v1::DeleteVolumeResponse*) {
  return guarded("DeleteVolume", [&]() -> Status {
    const std::string& id = req->volume_id();
    if (id.empty()) return invalid("volume_id is required");
    if (!validVolumeId(id)) return Status::OK;  // no such volume can exist: nothing to delete
    std::lock_guard<std::mutex> lock(mutex_);
    VolumeInfo v;
    int e = meta_.volumes().get(id, v);
    if (e == ENOENT) return Status::OK;
    if (e != 0) return fromErrno(e, "looking up volume " + id);
    bool trash = false;
    {
      auto m = newMetaRequest();
      auto x = m->getRoot<proto::MetaRequest>().getOp().initGetxattr();
      x.setIno(v.ino);
      x.setName(ON_DELETE_XATTR);
      auto r = meta_.call(kj::mv(m));
      auto reply = r->getRoot<proto::MetaReply>();
      if (reply.getErr() == 0 && reply.isValue()) {
        auto val = reply.getValue();
        trash = std::string(reinterpret_cast<const char*>(val.begin()), val.size()) == "trash";
      }
    }
    e = meta_.volumes().remove(id, trash);
    if (e != 0) return fromErrno(e, "deleting volume " + id);
    spdlog::info("DeleteVolume {}{}", id, trash ? ": moved to /volumes/.trash" : "");
    return Status::OK;
  });
}

Status ControllerService::ControllerExpandVolume(grpc::ServerContext*,
                                                 const v1::ControllerExpandVolumeRequest* req,
                                                 v1::ControllerExpandVolumeResponse* out) {
  return guarded("ControllerExpandVolume", [&]() -> Status {
    const std::string& id = req->volume_id();
    if (id.empty()) return invalid("volume_id is required");
    if (!validVolumeId(id)) return Status(StatusCode::NOT_FOUND, "no volume " + id);
    if (!req->has_capacity_range()) return invalid("capacity_range is required");
    int64_t required = req->capacity_range().required_bytes();
    int64_t limit = req->capacity_range().limit_bytes();
    if (required < 0 || limit < 0 || (limit != 0 && limit < required))
      return invalid("bad capacity_range");
    uint64_t bytes = required > 0 ? uint64_t(required) : uint64_t(limit);
    if (bytes == 0) return invalid("capacity_range asks for nothing");
    std::lock_guard<std::mutex> lock(mutex_);
    VolumeInfo v;
    int e = meta_.volumes().get(id, v);
    if (e != 0) return fromErrno(e, "volume " + id);
    if (!v.hasQuota || v.limitBytes < bytes) {
      e = meta_.volumes().resize(id, bytes, v);
      if (e != 0) return fromErrno(e, "resizing volume " + id);
      spdlog::info("ControllerExpandVolume {}: {} bytes", id, bytes);
    }
    out->set_capacity_bytes(int64_t(v.limitBytes));
    out->set_node_expansion_required(false);  // the quota is the size: nothing to do on nodes
    return Status::OK;
  });
}

Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*, const v1::ValidateVolumeCapabilitiesRequest* req,
    v1::ValidateVolumeCapabilitiesResponse* out) {
  return guarded("ValidateVolumeCapabilities", [&]() -> Status {
    const std::string& id = req->volume_id();
    if (id.empty()) return invalid("volume_id is required");
    if (req->volume_capabilities_size() == 0) return invalid("volume_capabilities are required");
    if (!validVolumeId(id)) return Status(StatusCode::NOT_FOUND, "no volume " + id);
    VolumeInfo v;
    int e = meta_.volumes().get(id, v);
    if (e != 0) return fromErrno(e, "volume " + id);
    for (auto& c : req->volume_capabilities()) {
      if (capabilityIsBlock(c)) {
        out->set_message("block access is not supported; cairn volumes are file systems");
        return Status::OK;
      }
      if (!c.has_mount()) {
        out->set_message("an access type (mount) is required");
        return Status::OK;
      }
    }
    auto* confirmed = out->mutable_confirmed();
    *confirmed->mutable_volume_capabilities() = req->volume_capabilities();
    *confirmed->mutable_volume_context() = req->volume_context();
    *confirmed->mutable_parameters() = req->parameters();
    return Status::OK;
  });
}

Status ControllerService::ControllerGetCapabilities(grpc::ServerContext*,
                                                    const v1::ControllerGetCapabilitiesRequest*,
                                                    v1::ControllerGetCapabilitiesResponse* out) {
  for (auto t : {v1::ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME,
                 v1::ControllerServiceCapability::RPC::EXPAND_VOLUME}) {
    out->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return Status::OK;
}

// ---- node ----

namespace {
// The checks every call on a published target starts with.
std::optional<Status> checkIdAndPath(const std::string& id, const std::string& path,
                                     const char* pathField, const std::string& kubeletDir) {
  if (id.empty()) return invalid("volume_id is required");
  if (path.empty()) return invalid(std::string(pathField) + " is required");
  if (!validVolumeId(id)) return Status(StatusCode::NOT_FOUND, "no volume " + id);
  if (!validTargetPath(path, kubeletDir))
    return invalid(std::string(pathField) + " must be a normalised absolute path below " +
                   kubeletDir);
  return std::nullopt;
}
}  // namespace

Status NodeService::NodePublishVolume(grpc::ServerContext*,
                                      const v1::NodePublishVolumeRequest* req,
                                      v1::NodePublishVolumeResponse*) {
  return guarded("NodePublishVolume", [&]() -> Status {
    const std::string& id = req->volume_id();
    const std::string& target = req->target_path();
    if (!id.empty() && !target.empty() && !req->has_volume_capability())
      return invalid("volume_capability is required");
    if (auto bad = checkIdAndPath(id, target, "target_path", config_.kubeletDir)) return *bad;
    auto& cap = req->volume_capability();
    if (capabilityIsBlock(cap)) return invalid("block volumes are not supported");
    if (!cap.has_mount()) return invalid("an access type (mount) is required");
    unsigned long flags = 0;
    std::string bad;
    if (!parseMountFlags(cap.mount().mount_flags(), flags, bad))
      return invalid("unsupported mount flag '" + bad + "'");
    auto mode = cap.access_mode().mode();
    if (req->readonly() || mode == v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY ||
        mode == v1::VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY)
      flags |= MS_RDONLY;
    std::string error;
    int e = mounts_.publish(id, target, flags, error);
    if (e != 0) return fromErrno(e, error);
    return Status::OK;
  });
}

Status NodeService::NodeUnpublishVolume(grpc::ServerContext*,
                                        const v1::NodeUnpublishVolumeRequest* req,
                                        v1::NodeUnpublishVolumeResponse*) {
  return guarded("NodeUnpublishVolume", [&]() -> Status {
    const std::string& target = req->target_path();
    if (auto bad = checkIdAndPath(req->volume_id(), target, "target_path", config_.kubeletDir))
      return *bad;
    std::string error;
    int e = mounts_.unpublish(target, error);
    if (e != 0) return fromErrno(e, error);
    return Status::OK;
  });
}

Status NodeService::NodeGetVolumeStats(grpc::ServerContext*,
                                       const v1::NodeGetVolumeStatsRequest* req,
                                       v1::NodeGetVolumeStatsResponse* out) {
  return guarded("NodeGetVolumeStats", [&]() -> Status {
    const std::string& path = req->volume_path();
    if (auto bad = checkIdAndPath(req->volume_id(), path, "volume_path", config_.kubeletDir))
      return *bad;
    struct statvfs st;
    int e = statvfsErr(path, &st);
    if (e == ENOENT) return Status(StatusCode::NOT_FOUND, "volume_path " + path + " does not exist");
    auto* cond = out->mutable_volume_condition();
    if (e != 0) {
      // A target whose mount died: report it as abnormal rather than fail the call.
      cond->set_abnormal(true);
      cond->set_message(path + ": " + strerror(e));
      return Status::OK;
    }
    if (!isMountPoint(path)) {
      cond->set_abnormal(true);
      cond->set_message(path + " is not mounted");
      return Status::OK;
    }
    cond->set_abnormal(false);
    cond->set_message("mounted");
    uint64_t total = uint64_t(st.f_blocks) * st.f_frsize;
    uint64_t avail = uint64_t(st.f_bavail) * st.f_frsize;
    uint64_t free = uint64_t(st.f_bfree) * st.f_frsize;
    auto* b = out->add_usage();
    b->set_unit(v1::VolumeUsage::BYTES);
    b->set_total(int64_t(total));
    b->set_available(int64_t(avail));
    b->set_used(int64_t(total - free));
    auto* i = out->add_usage();
    i->set_unit(v1::VolumeUsage::INODES);
    i->set_total(int64_t(st.f_files));
    i->set_available(int64_t(st.f_favail));
    i->set_used(int64_t(st.f_files - st.f_ffree));
    return Status::OK;
  });
}

Status NodeService::NodeGetCapabilities(grpc::ServerContext*, const v1::NodeGetCapabilitiesRequest*,
                                        v1::NodeGetCapabilitiesResponse* out) {
  for (auto t : {v1::NodeServiceCapability::RPC::GET_VOLUME_STATS,
                 v1::NodeServiceCapability::RPC::VOLUME_CONDITION}) {
    out->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return Status::OK;
}

Status NodeService::NodeGetInfo(grpc::ServerContext*, const v1::NodeGetInfoRequest*,
                                v1::NodeGetInfoResponse* out) {
  out->set_node_id(config_.nodeId);
  return Status::OK;
}

}  // namespace cairn::csi
