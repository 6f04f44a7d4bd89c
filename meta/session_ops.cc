// Client sessions and files unlinked while open, on the state machine's side.
//
// A regular file losing its last name is not dropped at once: some client may still have it
// open (POSIX keeps it readable and writable until the last close). Its inode stays, with nlink
// 0 and no name, in the `unlinked` table; meta's leader, which knows every session's open
// files, reclaims it with a RECLAIM command once no session holds it open. Sessions are in the
// store too, so that a new leader knows whom to hear from before it reclaims anything.
#include <sys/stat.h>

#include "meta/state_machine.h"

namespace cairn::meta {

void StateMachine::linkGone(Txn& t, int64_t now, uint64_t ino, InodeRecord& r) {
  r.nlink--;
  r.ctimeNs = now;
  if (r.nlink == 0 && !S_ISREG(r.mode)) {
    dropInode(t, ino, r);  // nothing but a regular file can be open for I/O through meta
    return;
  }
  if (r.nlink == 0) {
    // Its quota gets the space and the inode back now, as the name went; the data stays.
    charge(t, r.realm, -int64_t(r.size), -1);
    t.put(store_.unlinked, be64(ino), be64(static_cast<uint64_t>(now)));
  }
  store_.putInode(t, ino, r);
}

void StateMachine::reclaim(Txn& t, capnp::List<uint64_t>::Reader inos) {
  for (auto ino : inos) {
    if (!t.get(store_.unlinked, be64(ino))) continue;  // reclaimed already
    t.del(store_.unlinked, be64(ino));
    auto r = store_.getInode(t, ino);
    if (r && r->nlink == 0) dropInode(t, ino, *r);
  }
}

// A session record: host, NUL, mount.
void StateMachine::sessionStart(Txn& t, proto::MetaRequest::SessionOp::Reader op) {
  std::string v(op.getHost().cStr());
  v.push_back('\0');
  v.append(op.getMount().cStr());
  t.put(store_.sessions, be64(op.getClient()), v);
}

std::vector<StateMachine::SessionInfo> StateMachine::sessions(Txn& t) {
  std::vector<SessionInfo> out;
  for (Cursor c(t, store_.sessions, "", ""); c.valid(); c.next()) {
    SessionInfo s;
    s.client = readBe64(c.key());
    std::string_view v = c.value();
    size_t nul = v.find('\0');
    s.host = std::string(v.substr(0, nul));
    if (nul != std::string_view::npos) s.mount = std::string(v.substr(nul + 1));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<uint64_t> StateMachine::unlinkedFiles(Txn& t, uint64_t after, size_t max) {
  std::vector<uint64_t> out;
  for (Cursor c(t, store_.unlinked, "", be64(after)); c.valid() && out.size() < max; c.next())
    out.push_back(readBe64(c.key()));
  return out;
}

}  // namespace cairn::meta
