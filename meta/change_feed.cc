#include "meta/change_feed.h"

#include <algorithm>

namespace cairn::meta {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

}  // namespace

std::vector<Change> ChangeFeed::changesOf(Store& store, Txn& t,
                                          proto::MetaRequest::Reader request) {
  using W = proto::MetaRequest::Op::Which;
  auto op = request.getOp();
  uint64_t origin = request.getClientId();
  std::vector<Change> out;
  auto inode = [&](uint64_t ino) {
    if (ino != 0) out.push_back(Change{origin, ino, 0, ""});
  };
  auto entry = [&](uint64_t parent, const std::string& name) {
    out.push_back(Change{origin, 0, parent, name});
    inode(parent);  // its mtime, size and link count change too
    if (auto d = store.getDentry(t, parent, name)) inode(d->ino);  // what it named until now
  };
  switch (op.which()) {
    case W::SETATTR: inode(op.getSetattr().getIno()); break;
    case W::MKNOD: entry(op.getMknod().getParent(), text(op.getMknod().getName())); break;
    case W::SYMLINK: entry(op.getSymlink().getParent(), text(op.getSymlink().getName())); break;
    case W::LINK:
      entry(op.getLink().getNewParent(), text(op.getLink().getNewName()));
      inode(op.getLink().getIno());
      break;
    case W::UNLINK: entry(op.getUnlink().getParent(), text(op.getUnlink().getName())); break;
    case W::RMDIR: entry(op.getRmdir().getParent(), text(op.getRmdir().getName())); break;
    case W::RENAME: {
      auto r = op.getRename();
      entry(r.getParent(), text(r.getName()));
      entry(r.getNewParent(), text(r.getNewName()));
      break;
    }
    case W::SETXATTR: inode(op.getSetxattr().getIno()); break;
    case W::REMOVEXATTR: inode(op.getRemovexattr().getIno()); break;
    case W::COMMIT_WRITE: inode(op.getCommitWrite().getIno()); break;  // size, mtime, data
    case W::PUNCH: inode(op.getPunch().getIno()); break;
    case W::FSCK_FIX: {
      auto f = op.getFsckFix();
      if (f.getKind() == proto::MetaRequest::FsckFixKind::DROP_ENTRY) {
        entry(f.getParent(), text(f.getName()));
      } else {
        inode(f.getIno());
      }
      break;
    }
    default:
      break;  // nothing a client caches
  }
  // One invalidation per inode is enough.
  std::vector<Change> unique;
  for (auto& c : out) {
    bool seen = std::any_of(unique.begin(), unique.end(), [&](const Change& u) {
      return u.ino == c.ino && u.parent == c.parent && u.name == c.name;
    });
    if (!seen) unique.push_back(c);
  }
  return unique;
}

void ChangeFeed::append(std::vector<Change> changes) {
  for (auto& c : changes) {
    ring_.push_back(std::move(c));
    if (ring_.size() > capacity_) {
      ring_.pop_front();
      first_++;
    }
  }
}

ChangeFeed::Page ChangeFeed::since(uint64_t epoch, uint64_t after, size_t max,
                                   uint64_t skipOrigin) const {
  Page p;
  p.epoch = epoch_;
  uint64_t from = after + 1;
  if (epoch != epoch_) {
    // A new client (epoch 0) starts at the end without loss; one from another feed lost changes.
    p.lost = epoch != 0;
    p.next = last();
    p.end = true;
    return p;
  }
  if (from < first_) {
    p.lost = true;
    from = first_;
  }
  p.next = std::max(after, first_ - 1);
  for (uint64_t s = from; s <= last() && p.changes.size() < max; s++) {
    const Change& c = ring_[s - first_];
    if (skipOrigin == 0 || c.origin != skipOrigin) p.changes.push_back(c);
    p.next = s;
  }
  p.end = p.next >= last();
  return p;
}

bool ChangeFeed::wakes(uint64_t epoch, uint64_t after, uint64_t client, size_t max,
                       uint64_t& checked) const {
  if (epoch != epoch_ || after + 1 < first_ || client == 0) return true;
  // Far behind, even in its own changes: answered before it falls out of the ring.
  if (last() >= after + std::max(max, capacity_ / 2)) return true;
  for (uint64_t s = std::max({after, checked, first_ - 1}) + 1; s <= last(); s++)
    if (ring_[s - first_].origin != client) return true;
  checked = last();
  return false;
}

}  // namespace cairn::meta
