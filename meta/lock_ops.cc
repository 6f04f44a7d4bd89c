// The state machine's file locks: set, release and test, applied from committed commands (see
// meta/locks.h for the rules).
#include <sys/stat.h>

#include <set>

#include "meta/locks.h"
#include "meta/state_machine.h"

namespace cairn::meta {

namespace {

std::vector<locks::Lock> loadLocks(Store& store, Txn& t, uint64_t ino) {
  auto v = t.get(store.locks, be64(ino));
  return v ? locks::decode(*v) : std::vector<locks::Lock>{};
}

void storeLocks(Store& store, Txn& t, uint64_t ino, const std::vector<locks::Lock>& held) {
  if (held.empty()) {
    t.del(store.locks, be64(ino));
  } else {
    t.put(store.locks, be64(ino), locks::encode(held));
  }
}

// The requested lock, checked: a range that is not empty, a file that exists.
int wanted(Store& store, Txn& t, uint64_t client, proto::MetaRequest::LockOp::Reader op,
           locks::Lock& out) {
  if (client == 0) return EINVAL;  // a lock needs a session to belong to
  auto inode = store.getInode(t, op.getIno());
  if (!inode) return ENOENT;
  if (S_ISDIR(inode->mode) && !op.getFlock()) return EBADF;
  out.client = client;
  out.owner = op.getOwner();
  out.pid = op.getPid();
  out.flock = op.getFlock();
  out.write = op.getType() == proto::MetaRequest::LockType::WRITE;
  out.start = op.getFlock() ? 0 : op.getStart();
  out.end = op.getFlock() ? locks::TO_EOF : op.getEnd();
  if (out.start >= out.end) return EINVAL;
  return 0;
}

void fillConflict(const locks::Lock& c, proto::LockHolder::Builder out) {
  out.setClient(c.client);
  out.setOwner(c.owner);
  out.setPid(c.pid);
  out.setWrite(c.write);
  out.setStart(c.start);
  out.setEnd(c.end);
}

}  // namespace

int StateMachine::lockSet(Txn& t, uint64_t client, proto::MetaRequest::LockOp::Reader op,
                          proto::MetaReply::Builder reply) {
  locks::Lock want;
  if (int err = wanted(store_, t, client, op, want); err != 0) return err;
  auto held = loadLocks(store_, t, op.getIno());
  auto r = reply.initLock();
  if (op.getType() == proto::MetaRequest::LockType::UNLOCK) {
    locks::unlock(held, want);
    storeLocks(store_, t, op.getIno(), held);
    r.setGranted(true);
    return 0;
  }
  constexpr size_t MAX_LOCKS_PER_FILE = 10000;
  if (auto c = locks::conflict(held, want)) {
    r.setGranted(false);
    fillConflict(*c, r.initConflict());
    return 0;
  }
  if (held.size() >= MAX_LOCKS_PER_FILE) return ENOLCK;
  locks::set(held, want);
  storeLocks(store_, t, op.getIno(), held);
  r.setGranted(true);
  return 0;
}

int StateMachine::lockTest(Txn& t, uint64_t client, proto::MetaRequest::LockOp::Reader op,
                           proto::MetaReply::Builder reply) {
  locks::Lock want;
  if (int err = wanted(store_, t, client, op, want); err != 0) return err;
  auto r = reply.initLock();
  if (auto c = locks::conflict(loadLocks(store_, t, op.getIno()), want)) {
    r.setGranted(false);
    fillConflict(*c, r.initConflict());
  } else {
    r.setGranted(true);
  }
  return 0;
}

void StateMachine::releaseLocksOf(Txn& t, uint64_t client) {
  std::vector<std::pair<uint64_t, std::vector<locks::Lock>>> changed;
  for (Cursor c(t, store_.locks, "", ""); c.valid(); c.next()) {
    auto held = locks::decode(c.value());
    size_t before = held.size();
    locks::releaseClient(held, client);
    if (held.size() != before) changed.emplace_back(readBe64(c.key()), std::move(held));
  }
  for (auto& [ino, held] : changed) storeLocks(store_, t, ino, held);
}

std::vector<uint64_t> StateMachine::lockHolders(Txn& t) {
  std::set<uint64_t> clients;
  for (Cursor c(t, store_.locks, "", ""); c.valid(); c.next())
    for (auto& l : locks::decode(c.value())) clients.insert(l.client);
  return {clients.begin(), clients.end()};
}

}  // namespace cairn::meta
