// The filesystem state machine. apply() changes the state by one logged Command; everything it
// needs beyond the state (time, chunk placement) is inside the command, so every replica that
// applies the same log reaches the same state. read() answers queries from the current state.
// Both report outcomes as errno values in the reply; they throw only on broken invariants.
#pragma once

#include <capnp/message.h>

#include "meta/store.h"
#include "rpc/cairn.capnp.h"

namespace cairn::meta {

struct Format {
  uint64_t chunkSizeBytes = 64ull << 20;
  uint32_t replicas = 3;
};

class StateMachine {
 public:
  explicit StateMachine(Store& store) : store_(store) {}

  // Creates the root directory and the cluster's constants when the store is empty.
  void formatIfEmpty(const Format& format, int64_t nowNs, const std::string& clusterId);
  // The same inside a transaction (the FORMAT command); false when already formatted.
  bool format(Txn& t, const Format& format, int64_t nowNs, const std::string& clusterId);
  bool isFormatted(Txn& t) { return store_.getInode(t, ROOT_INO).has_value(); }

  // Applies one command inside `txn`. Retried (client id, seq) pairs return the stored reply.
  void apply(Txn& txn, proto::Command::Reader cmd, capnp::MessageBuilder& out);

  // Answers a read-only request.
  void read(Txn& txn, proto::MetaRequest::Reader req, proto::MetaReply::Builder reply);

  // The quota that applies at `ino`: its own when it is a quota directory, else its realm's.
  std::optional<std::pair<uint64_t, QuotaRecord>> quotaAt(Txn& t, uint64_t ino);

  // True when the request changes state and must go through the log.
  static bool isMutation(proto::MetaRequest::Reader req);
  // The namespace and file changes clients make all the time, whose answer may go out once
  // the change is committed and written, before the leader's log sync (which fsync() waits
  // for). Everything else, above all what chunk servers are told to act on (versions, chains,
  // deletions) and what admins change, is answered only once on stable storage.
  static bool mayAnswerBeforeDurable(proto::MetaRequest::Reader req);

  uint64_t chunkSize(Txn& t) { return store_.getCounter(t, "chunk_size"); }
  uint32_t replicas(Txn& t) { return static_cast<uint32_t>(store_.getCounter(t, "replicas")); }

  // Garbage chunks waiting for `server` to delete them whose grace period is over (bounded).
  std::vector<uint64_t> garbageFor(Txn& t, uint32_t server, size_t max, int64_t now,
                                   int64_t graceNs);

  Store& store() { return store_; }

  // The replicated rebalance setting (see RebalanceOp).
  struct Rebalance {
    bool active = false;
    bool autoOnJoin = false;
    double tolerance = 0.05;
    int64_t startedNs = 0;
  };
  Rebalance rebalance(Txn& t);
  // Operators pause chunk repairs and rebalance moves (cairn repair pause), e.g. during
  // maintenance; detection, status and garbage collection go on.
  bool repairsPaused(Txn& t);
  // Every lock `client` holds is released (its session ended).
  void releaseLocksOf(Txn& t, uint64_t client);
  // The clients holding any lock (a new leader watches their sessions).
  std::vector<uint64_t> lockHolders(Txn& t);
  static constexpr const char* LOST_FOUND = "lost+found";

  // Client sessions (meta/session_ops.cc), kept in the store so that a new leader knows which
  // clients may still hold files open and waits for them before reclaiming any.
  struct SessionInfo {
    uint64_t client = 0;
    std::string host, mount;
  };
  std::vector<SessionInfo> sessions(Txn& t);
  // Regular files whose last name went while they may be open somewhere: their inode (nlink 0)
  // and data stay until meta's leader reclaims them (at most `max`, from inode `after` on).
  std::vector<uint64_t> unlinkedFiles(Txn& t, uint64_t after, size_t max);

 private:
  void applyOp(Txn& t, int64_t now, proto::Command::Reader cmd, proto::MetaReply::Builder reply);
  int mknod(Txn& t, int64_t now, proto::MetaRequest::MknodOp::Reader op, const std::string& target,
            proto::MetaReply::Builder reply);
  int setattr(Txn& t, int64_t now, proto::MetaRequest::SetAttrOp::Reader op,
              proto::MetaReply::Builder reply);
  int unlinkEntry(Txn& t, int64_t now, uint64_t parent, std::string_view name, bool dir,
                  proto::MetaReply::Builder reply);
  int rename(Txn& t, int64_t now, proto::MetaRequest::RenameOp::Reader op);
  int link(Txn& t, int64_t now, proto::MetaRequest::LinkOp::Reader op,
           proto::MetaReply::Builder reply);
  int xattrChange(Txn& t, int64_t now, proto::MetaRequest::Reader req);
  int chunkAllocate(Txn& t, proto::Command::Reader cmd, proto::MetaReply::Builder reply);
  void offerChunk(Txn& t, capnp::List<uint32_t>::Reader placement, proto::MetaReply::Builder reply);
  int commitWrite(Txn& t, int64_t now, proto::MetaRequest::CommitWriteOp::Reader op,
                  proto::MetaReply::Builder reply);
  int registerServer(Txn& t, proto::MetaRequest::RegisterOp::Reader op,
                     proto::MetaReply::Builder reply);
  void heartbeatGarbage(Txn& t, uint32_t server, proto::MetaReply::Builder reply, int64_t now,
                        int64_t graceNs);

  void addDentry(Txn& t, uint64_t parent, InodeRecord& parentRec, std::string_view name,
                 uint64_t ino, uint32_t mode);
  void removeDentry(Txn& t, uint64_t parent, std::string_view name, const DentryRecord& d);
  void dropInode(Txn& t, uint64_t ino, const InodeRecord& r);
  // A link of `r` went: stores it, or keeps it unlinked (regular files), or drops it.
  void linkGone(Txn& t, int64_t now, uint64_t ino, InodeRecord& r);
  void reclaim(Txn& t, capnp::List<uint64_t>::Reader inos);
  void sessionStart(Txn& t, proto::MetaRequest::SessionOp::Reader op);
  // Drops the file's chunks with index in [firstIndex, endIndex).
  void dropChunksFrom(Txn& t, uint64_t ino, uint64_t firstIndex, uint64_t endIndex = UINT64_MAX);
  // Records that `servers` must delete their copy of the chunk (merged with earlier records).
  void addGarbage(Txn& t, uint64_t chunkId, const std::vector<uint32_t>& servers);
  void fillAttr(uint64_t ino, const InodeRecord& r, proto::Attr::Builder a);
  void fillChunk(Txn& t, uint64_t index, const ChunkRecord& c, proto::ChunkInfo::Builder out);
  void pruneReplies(Txn& t, int64_t now);
  // Quotas: the realm (quota directory) of entries created in `dir`, and charging a change of
  // usage to a realm and every quota above it (EDQUOT when growth would pass a limit).
  uint64_t childRealm(Txn& t, uint64_t dirIno, const InodeRecord& dir);
  int charge(Txn& t, uint64_t realm, int64_t bytes, int64_t inodes);
  int quotaSet(Txn& t, proto::MetaRequest::QuotaSetOp::Reader op, proto::MetaReply::Builder reply);
  void fillQuota(uint64_t ino, const QuotaRecord& q, proto::QuotaInfo::Builder out);
  int fsckFix(Txn& t, int64_t now, proto::MetaRequest::FsckFixOp::Reader op);
  // File locks (meta/lock_ops.cc).
  int lockSet(Txn& t, uint64_t client, proto::MetaRequest::LockOp::Reader op,
              proto::MetaReply::Builder reply);
  int lockTest(Txn& t, uint64_t client, proto::MetaRequest::LockOp::Reader op,
               proto::MetaReply::Builder reply);
  int rebalanceSet(Txn& t, int64_t now, proto::MetaRequest::RebalanceOp::Reader op);

  Store& store_;
  int64_t applyNow_ = 0;  // the time of the command being applied
};

// Name rules at the boundary: 1..255 bytes, no '/', no NUL, not "." or "..".
int checkName(std::string_view name);

}  // namespace cairn::meta
