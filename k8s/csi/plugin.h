// cairn-csi: the CSI Identity, Controller and Node services.
//
// Controller: a volume is the directory /volumes/ID with a byte quota equal to its capacity,
// made and changed through meta directly (rpc/volumes.h). Node: the node's one cairn mount
// (--node-mount, kept by mount.cairn, a process of its own that outlives this plugin) holds
// /volumes; NodePublishVolume bind-mounts /volumes/ID onto the pod's target path. Published
// targets are recorded in --state-dir so that, when the node mount had to be mounted again, every
// target is bound again to the new mount.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "csi.grpc.pb.h"
#include "rpc/meta_client.h"
#include "rpc/runtime.h"
#include "rpc/volumes.h"

namespace cairn::csi {

struct Config {
  std::string mode = "all";  // controller, node, all
  std::string nodeId;
  std::vector<std::string> metaAddrs;
  std::string secretFile;       // the cluster secret (a mounted Kubernetes Secret)
  std::string keyFile;          // the data key (node only: passed to mount.cairn)
  std::string nodeMount = "/var/lib/cairn/node-mount";
  std::string stateDir = "/var/lib/cairn/csi-state";
  std::string kubeletDir = "/var/lib/kubelet";
  std::string mountBinary;      // mount.cairn; empty: next to this binary, else /sbin
  bool remount = true;          // mount the node mount again when it is missing or broken
  int healthSeconds = 2;
};

// One connection to meta on its own event loop, shared by the gRPC threads.
class MetaLink {
 public:
  MetaLink(const Config& config);
  ~MetaLink();
  kj::Own<capnp::MallocMessageBuilder> call(kj::Own<capnp::MallocMessageBuilder> req);
  bool reachable();  // a quick round trip with a short timeout
  Volumes& volumes() { return volumes_; }

 private:
  const Config& config_;
  LoopThread loop_;
  kj::Own<ClusterSecret> secret_;
  kj::Own<MetaClient> meta_;
  uint64_t clientId_ = 0;
  Volumes volumes_;
};

// The node side: the shared mount, bind mounts and their records.
class NodeMounts {
 public:
  explicit NodeMounts(const Config& config);
  ~NodeMounts();

  // 0 when the node mount answers; ENOENT when it is missing or not cairn, ENOTCONN when its
  // process died, ETIMEDOUT when it is alive but slow to answer (cluster unreachable).
  int check();
  bool healthy();
  std::string volumePath(const std::string& id) const;  // NODE_MOUNT/volumes/ID
  // Checks the node mount; mounts it again when broken (if allowed) and re-binds every
  // recorded target. Returns true when the mount is usable.
  bool ensure();
  void startWatcher();

  int publish(const std::string& id, const std::string& target, unsigned long flags,
              std::string& error);
  int unpublish(const std::string& target, std::string& error);

 private:
  bool mountNode(std::string& error);
  int bind(const std::string& source, const std::string& target, unsigned long flags,
           std::string& error);
  void record(const std::string& id, const std::string& target, unsigned long flags);
  void forget(const std::string& target);
  std::string recordPath(const std::string& target) const;
  // Binds recorded targets to the node mount again: every one, or only those that are broken
  // (not mounted, or failing with ENOTCONN). Called with mutex_ held.
  void rebind(bool brokenOnly);

  const Config& config_;
  std::mutex mutex_;  // serialises publish, unpublish and recovery
  std::thread watcher_;
  std::atomic<bool> stop_{false};
};

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  IdentityService(const Config& c, MetaLink* meta, NodeMounts* node)
      : config_(c), meta_(meta), node_(node) {}
  grpc::Status GetPluginInfo(grpc::ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
                             ::csi::v1::GetPluginInfoResponse*) override;
  grpc::Status GetPluginCapabilities(grpc::ServerContext*,
                                     const ::csi::v1::GetPluginCapabilitiesRequest*,
                                     ::csi::v1::GetPluginCapabilitiesResponse*) override;
  grpc::Status Probe(grpc::ServerContext*, const ::csi::v1::ProbeRequest*,
                     ::csi::v1::ProbeResponse*) override;

 private:
  const Config& config_;
  MetaLink* meta_;
  NodeMounts* node_;
};

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  ControllerService(const Config& c, MetaLink& meta) : config_(c), meta_(meta) {}
  grpc::Status CreateVolume(grpc::ServerContext*, const ::csi::v1::CreateVolumeRequest*,
                            ::csi::v1::CreateVolumeResponse*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const ::csi::v1::DeleteVolumeRequest*,
                            ::csi::v1::DeleteVolumeResponse*) override;
  grpc::Status ControllerExpandVolume(grpc::ServerContext*,
                                      const ::csi::v1::ControllerExpandVolumeRequest*,
                                      ::csi::v1::ControllerExpandVolumeResponse*) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext*,
                                          const ::csi::v1::ValidateVolumeCapabilitiesRequest*,
                                          ::csi::v1::ValidateVolumeCapabilitiesResponse*) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*,
                                         const ::csi::v1::ControllerGetCapabilitiesRequest*,
                                         ::csi::v1::ControllerGetCapabilitiesResponse*) override;

 private:
  const Config& config_;
  MetaLink& meta_;
  std::mutex mutex_;  // one volume change at a time (create/delete races on one name)
};

class NodeService final : public ::csi::v1::Node::Service {
 public:
  NodeService(const Config& c, NodeMounts& mounts) : config_(c), mounts_(mounts) {}
  grpc::Status NodePublishVolume(grpc::ServerContext*, const ::csi::v1::NodePublishVolumeRequest*,
                                 ::csi::v1::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*,
                                   const ::csi::v1::NodeUnpublishVolumeRequest*,
                                   ::csi::v1::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext*, const ::csi::v1::NodeGetVolumeStatsRequest*,
                                  ::csi::v1::NodeGetVolumeStatsResponse*) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext*,
                                   const ::csi::v1::NodeGetCapabilitiesRequest*,
                                   ::csi::v1::NodeGetCapabilitiesResponse*) override;
  grpc::Status NodeGetInfo(grpc::ServerContext*, const ::csi::v1::NodeGetInfoRequest*,
                           ::csi::v1::NodeGetInfoResponse*) override;

 private:
  const Config& config_;
  NodeMounts& mounts_;
};

// Input rules at the boundary (exposed for tests).
bool validVolumeId(const std::string& id);
// Absolute, normalised (no "." or ".." parts, no empty parts), no NUL, at most 4096 bytes, and
// strictly below `base`.
bool validTargetPath(const std::string& path, const std::string& base);
// Mount flags of a VolumeCapability to MS_* flags; false for a flag we do not know.
bool parseMountFlags(const google::protobuf::RepeatedPtrField<std::string>& flags,
                     unsigned long& out, std::string& bad);

}  // namespace cairn::csi
