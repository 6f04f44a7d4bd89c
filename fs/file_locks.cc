// mount.cairn's file locks: fcntl record locks (getlk, setlk) and flock, held by meta so that
// every client sees them. A blocking request asks again with a growing pause (up to 500 ms)
// until the lock is granted or the waiting process is interrupted. Closing a file releases the
// closing process's POSIX locks on it (flush) and, at the last close, its flock lock (release).
#include <fcntl.h>
#include <sys/file.h>

#include <chrono>
#include <thread>

#include "fs/cairn_fs.h"
#include "meta/locks.h"

namespace cairn::fs {

namespace {

using LockType = proto::MetaRequest::LockType;

LockType typeOf(int fcntlType) {
  return fcntlType == F_WRLCK ? LockType::WRITE : fcntlType == F_RDLCK ? LockType::READ
                                                                         : LockType::UNLOCK;
}

// struct flock (absolute start, length 0 = to end of file) -> [start, end).
bool rangeOf(const struct flock* l, uint64_t& start, uint64_t& end) {
  if (l->l_start < 0 || l->l_len < 0) return false;
  start = static_cast<uint64_t>(l->l_start);
  end = l->l_len == 0 ? meta::locks::TO_EOF : start + static_cast<uint64_t>(l->l_len);
  return end > start;
}

}  // namespace

int CairnFs::lockRequest(fuse_req_t req, uint64_t cino, uint64_t owner, uint32_t pid, int type,
                         uint64_t start, uint64_t end, bool flock, bool wait, bool test,
                         struct flock* conflict) {
  auto pause = std::chrono::milliseconds(10);
  for (int attempt = 0;; attempt++) {
    auto m = newMetaRequest();
    auto op = m->getRoot<proto::MetaRequest>().getOp();
    auto l = test ? op.initLockTest() : op.initLock();
    l.setIno(cino);
    l.setOwner(owner);
    l.setPid(pid);
    l.setType(typeOf(type));
    l.setStart(start);
    l.setEnd(end);
    l.setFlock(flock);
    auto r = client_.meta(kj::mv(m));
    auto reply = r->getRoot<proto::MetaReply>();
    if (reply.getErr() != 0) return reply.getErr();
    auto lr = reply.getLock();
    if (lr.getGranted()) {
      if (!test && type != F_UNLCK) {
        std::lock_guard<std::mutex> lock(locksMutex_);
        heldLocks_.emplace(cino, owner, flock);
      }
      return 0;
    }
    if (conflict) {
      auto c = lr.getConflict();
      conflict->l_type = c.getWrite() ? F_WRLCK : F_RDLCK;
      conflict->l_whence = SEEK_SET;
      conflict->l_start = static_cast<off_t>(c.getStart());
      conflict->l_len = c.getEnd() == meta::locks::TO_EOF ? 0 : off_t(c.getEnd() - c.getStart());
      conflict->l_pid = static_cast<pid_t>(c.getPid());
    }
    if (!wait) return EAGAIN;
    if (fuse_req_interrupted(req)) return EINTR;
    // The mount is going away. (Not EINTR: with no signal pending the kernel would hand the
    // caller its restart code, 512.)
    if (ending_) return ENOLCK;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
}

void CairnFs::releaseLocks(uint64_t cino, uint64_t owner, bool flock) {
  {
    std::lock_guard<std::mutex> lock(locksMutex_);
    if (!heldLocks_.erase(std::make_tuple(cino, owner, flock))) return;  // none: no round trip
  }
  int err = lockRequest(nullptr, cino, owner, 0, F_UNLCK, 0, meta::locks::TO_EOF, flock, false,
                        false, nullptr);
  if (err != 0) spdlog::warn("releasing the locks of inode {} at close: {}", cino, strerror(err));
}

void CairnFs::getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  guard(req, "getlk", [&]() {
    uint64_t start, end;
    if (!rangeOf(lock, start, end)) return (void)fuse_reply_err(req, EINVAL);
    struct flock found = *lock;
    int err = lockRequest(req, toCluster(ino), fi->lock_owner, uint32_t(lock->l_pid),
                          lock->l_type, start, end, false, false, true, &found);
    if (err == EAGAIN) return (void)fuse_reply_lock(req, &found);
    if (err != 0) return (void)fuse_reply_err(req, err);
    found.l_type = F_UNLCK;
    fuse_reply_lock(req, &found);
  });
}

void CairnFs::setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
                    int sleep) {
  guard(req, "setlk", [&]() {
    uint64_t start, end;
    if (!rangeOf(lock, start, end)) return (void)fuse_reply_err(req, EINVAL);
    int err = lockRequest(req, toCluster(ino), fi->lock_owner, uint32_t(lock->l_pid),
                          lock->l_type, start, end, false, sleep != 0, false, nullptr);
    fuse_reply_err(req, err);
  });
}

void CairnFs::flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  guard(req, "flock", [&]() {
    int kind = op & (LOCK_SH | LOCK_EX | LOCK_UN);
    int type = kind == LOCK_EX ? F_WRLCK : kind == LOCK_SH ? F_RDLCK : F_UNLCK;
    int err = lockRequest(req, toCluster(ino), fi->lock_owner, 0, type, 0, meta::locks::TO_EOF,
                          true, (op & LOCK_NB) == 0 && type != F_UNLCK, false, nullptr);
    fuse_reply_err(req, err == EAGAIN ? EWOULDBLOCK : err);
  });
}

}  // namespace cairn::fs
