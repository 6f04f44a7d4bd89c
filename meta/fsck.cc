#include "meta/fsck.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace cairn::meta::fsck {

namespace {

bool isDir(uint32_t mode) { return S_ISDIR(mode); }

bool validType(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFIFO: case S_IFSOCK: case S_IFCHR:
    case S_IFBLK:
      return true;
    default:
      return false;
  }
}

std::string hex(uint64_t v) {
  char buf[20];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

bool fixOp(const Finding& f, proto::MetaRequest::FsckFixOp::Builder out) {
  using K = proto::MetaRequest::FsckFixKind;
  static const std::pair<const char*, K> KINDS[] = {
      {"dangling-entry", K::DROP_ENTRY},      {"orphan-inode", K::RELINK},
      {"dir-parent-mismatch", K::SET_PARENT}, {"inode-count", K::SET_INODE_COUNT},
      {"wrong-nlink", K::SET_NLINK},          {"chunk-past-eof", K::DROP_CHUNK},
      {"chunk-without-file", K::DROP_CHUNK},
  };
  for (auto& [kind, fix] : KINDS) {
    if (f.kind != kind) continue;
    out.setKind(fix);
    out.setParent(f.parent);
    out.setName(f.name);
    out.setIno(f.ino);
    out.setExpect(f.expect);
    out.setValue(f.value);
    out.setIndex(f.index);
    out.setId(f.chunk);
    return true;
  }
  return false;
}

uint64_t tableEntries(Txn& t, MDB_dbi dbi) {
  MDB_stat st;
  if (mdb_stat(t.raw(), dbi, &st) != 0) return 0;
  return st.ms_entries;
}

Checker::Checker(Store& store, std::function<void(Finding)> sink, Options options)
    : store_(store), sink_(std::move(sink)), options_(std::move(options)) {
  if (options_.window == 0) options_.window = 1u << 21;
}

void Checker::report(Finding f) { sink_(std::move(f)); }

void Checker::tick(const char* phase, uint64_t done, uint64_t total) {
  if (options_.progress) options_.progress(phase, done, total);
}

void Checker::checkNamespace(Txn& t) {
  chunkSize_ = store_.getCounter(t, "chunk_size");
  checkInodes(t);
  checkEntriesAndLinks(t);
  checkCookies(t);
  checkTree(t);
  checkChunks(t);
}

void Checker::checkInodes(Txn& t) {
  uint64_t total = tableEntries(t, store_.inodes), n = 0;
  uint64_t lastParent = 0;
  bool lastParentOk = false;
  for (Cursor c(t, store_.inodes, "", ""); c.valid(); c.next()) {
    uint64_t ino = readBe64(c.key());
    if (++n % 65536 == 0) tick("inodes", n, total);
    if (c.value().size() != sizeof(InodeRecord)) {
      report({.kind = "bad-inode-record", .detail = "inode record of the wrong size", .ino = ino});
      continue;
    }
    InodeRecord r;
    memcpy(&r, c.value().data(), sizeof(r));
    if (!validType(r.mode)) {
      report({.kind = "bad-mode", .detail = "mode " + std::to_string(r.mode) + " is no file type",
              .ino = ino});
    }
    if (isDir(r.mode) && ino != ROOT_INO) {
      if (r.parent != lastParent) {
        auto p = store_.getInode(t, r.parent);
        lastParent = r.parent;
        lastParentOk = p && isDir(p->mode);
      }
      if (!lastParentOk) {
        report({.kind = "dir-parent-missing",
                .detail = "directory's parent " + std::to_string(r.parent) + " is not a directory",
                .ino = ino});
      }
    }
    if (S_ISLNK(r.mode) && !t.get(store_.symlinks, be64(ino))) {
      report({.kind = "symlink-target-missing", .detail = "symbolic link without a target",
              .ino = ino});
    }
  }
  inodesSeen_ = n;
  uint64_t counted = store_.getCounter(t, "inodes");
  if (counted != n) {
    report({.kind = "inode-count",
            .detail = "the inode counter says " + std::to_string(counted) + ", the table holds " +
                      std::to_string(n),
            .expect = counted,
            .value = n,
            .fixable = true});
  }
  tick("inodes", n, total);
}

void Checker::checkEntriesAndLinks(Txn& t) {
  uint64_t maxIno = store_.getCounter(t, "next_ino", ROOT_INO + 1);
  {
    // Never trust the counter alone: a damaged counter must not hide inodes from the count.
    MDB_cursor* cur;
    if (mdb_cursor_open(t.raw(), store_.inodes, &cur) == 0) {
      MDB_val k, v;
      if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        maxIno = std::max(maxIno, readBe64(std::string_view(static_cast<char*>(k.mv_data), 8)) + 1);
      mdb_cursor_close(cur);
    }
  }
  uint64_t window = options_.window;
  uint64_t windows = (maxIno + window - 1) / window;
  uint64_t entries = tableEntries(t, store_.dentries);
  uint64_t total = entries * windows, done = 0;
  std::vector<uint32_t> counts, subdirs;
  for (uint64_t lo = 0; lo < maxIno; lo += window) {
    uint64_t hi = std::min(maxIno, lo + window);
    counts.assign(hi - lo, 0);
    subdirs.assign(hi - lo, 0);
    bool first = lo == 0;
    uint64_t lastParent = UINT64_MAX;
    bool parentOk = false;
    for (Cursor c(t, store_.dentries, "", ""); c.valid(); c.next()) {
      if (++done % 65536 == 0) tick("entries", done, total);
      if (c.key().size() < 9) {
        if (first) report({.kind = "bad-entry-key", .detail = "entry key too short"});
        continue;
      }
      uint64_t parent = readBe64(c.key());
      std::string name(c.key().substr(8));
      auto d = Store::decodeDentry(c.value());
      bool childInWindow = d.ino >= lo && d.ino < hi;
      bool parentInWindow = parent >= lo && parent < hi;
      std::optional<InodeRecord> child;
      if (first || (isDir(d.mode) && parentInWindow)) child = store_.getInode(t, d.ino);
      if (first) {
        entriesSeen_++;
        if (parent != lastParent) {
          auto p = store_.getInode(t, parent);
          lastParent = parent;
          parentOk = p && isDir(p->mode);
        }
        if (!parentOk) {
          report({.kind = "entry-in-non-directory",
                  .detail = "entry in " + std::to_string(parent) + ", which is no directory",
                  .ino = d.ino, .parent = parent, .name = name});
        }
        if (!child) {
          report({.kind = "dangling-entry",
                  .detail = "entry points at inode " + std::to_string(d.ino) + ", which does not exist",
                  .ino = d.ino, .parent = parent, .name = name, .fixable = true});
        } else {
          if ((child->mode & S_IFMT) != d.mode) {
            report({.kind = "entry-type-mismatch",
                    .detail = "the entry's file type differs from its inode's",
                    .ino = d.ino, .parent = parent, .name = name});
          }
          if (isDir(child->mode) && child->parent != parent) {
            report({.kind = "dir-parent-mismatch",
                    .detail = "directory says its parent is " + std::to_string(child->parent) +
                              ", its entry is in " + std::to_string(parent),
                    .ino = d.ino, .parent = parent, .name = name,
                    .expect = child->parent, .value = parent, .fixable = true});
          }
        }
        auto cookie = t.get(store_.cookies, be64(parent) + be64(d.cookie));
        if (!cookie || *cookie != name) {
          report({.kind = "entry-cookie-missing",
                  .detail = "entry has no readdir position: listings do not show it",
                  .ino = d.ino, .parent = parent, .name = name});
        }
      }
      if (childInWindow) counts[d.ino - lo]++;
      if (parentInWindow && isDir(d.mode) && child && isDir(child->mode)) subdirs[parent - lo]++;
    }
    for (Cursor c(t, store_.inodes, "", be64(lo)); c.valid(); c.next()) {
      uint64_t ino = readBe64(c.key());
      if (ino >= hi) break;
      if (c.value().size() != sizeof(InodeRecord)) continue;
      InodeRecord r;
      memcpy(&r, c.value().data(), sizeof(r));
      uint32_t links = counts[ino - lo];
      bool dir = isDir(r.mode);
      if (links == 0 && r.nlink == 0 && S_ISREG(r.mode) && t.get(store_.unlinked, be64(ino)))
        continue;  // unlinked while open somewhere: reclaimed after its last close
      if (links == 0 && ino != ROOT_INO) {
        report({.kind = "orphan-inode",
                .detail = std::string(dir ? "directory" : "file") +
                          " that no entry refers to (size " + std::to_string(r.size) + ")",
                .ino = ino, .fixable = true});
      } else if (dir && links > 1) {
        report({.kind = "dir-hard-linked",
                .detail = "directory with " + std::to_string(links) + " entries",
                .ino = ino});
      }
      uint64_t expected = dir ? 2 + uint64_t(subdirs[ino - lo]) : std::max<uint32_t>(links, 1);
      if (r.nlink != expected) {
        report({.kind = "wrong-nlink",
                .detail = "link count " + std::to_string(r.nlink) + ", should be " +
                          std::to_string(expected),
                .ino = ino, .expect = r.nlink, .value = expected, .fixable = true});
      }
    }
  }
  tick("entries", total, total);
}

void Checker::checkCookies(Txn& t) {
  uint64_t total = tableEntries(t, store_.cookies), n = 0;
  for (Cursor c(t, store_.cookies, "", ""); c.valid(); c.next()) {
    if (++n % 65536 == 0) tick("listings", n, total);
    if (c.key().size() != 16) continue;
    uint64_t parent = readBe64(c.key()), cookie = readBe64(c.key(), 8);
    auto d = store_.getDentry(t, parent, c.value());
    if (!d || d->cookie != cookie) {
      report({.kind = "stray-listing-entry",
              .detail = "a listing position names an entry that does not exist",
              .parent = parent, .name = std::string(c.value())});
    }
  }
  tick("listings", n, total);
}

void Checker::checkTree(Txn& t) {
  // Every directory must reach the root through its parents. Directories known to reach it are
  // remembered (a bounded set, cleared when full) so each walk is short.
  constexpr size_t MAX_KNOWN = 1u << 20;
  constexpr size_t MAX_DEPTH = 4096;
  std::unordered_set<uint64_t> reaches;
  std::unordered_set<uint64_t> inCycle;  // reported already (bounded by the damage found)
  uint64_t total = tableEntries(t, store_.inodes), n = 0;
  std::vector<uint64_t> walk;
  for (Cursor c(t, store_.inodes, "", ""); c.valid(); c.next()) {
    if (++n % 65536 == 0) tick("tree", n, total);
    if (c.value().size() != sizeof(InodeRecord)) continue;
    InodeRecord r;
    memcpy(&r, c.value().data(), sizeof(r));
    uint64_t ino = readBe64(c.key());
    if (!isDir(r.mode) || ino == ROOT_INO || reaches.count(ino) || inCycle.count(ino)) continue;
    walk.clear();
    uint64_t cur = ino;
    bool ok = false, cycle = false;
    while (true) {
      if (cur == ROOT_INO || reaches.count(cur)) {
        ok = true;
        break;
      }
      if (inCycle.count(cur)) break;  // leads into a cycle reported already
      if (std::find(walk.begin(), walk.end(), cur) != walk.end() || walk.size() > MAX_DEPTH) {
        cycle = true;
        break;
      }
      walk.push_back(cur);
      auto rec = store_.getInode(t, cur);
      if (!rec || !isDir(rec->mode)) break;  // a missing parent is reported by checkInodes
      cur = rec->parent;
    }
    if (cycle) {
      if (inCycle.size() < MAX_KNOWN) inCycle.insert(walk.begin(), walk.end());
      report({.kind = "directory-cycle",
              .detail = "its parents lead back to itself, never to the root", .ino = ino});
    }
    if (ok) {
      if (reaches.size() + walk.size() > MAX_KNOWN) reaches.clear();
      reaches.insert(walk.begin(), walk.end());
    }
  }
  tick("tree", n, total);
}

void Checker::checkChunks(Txn& t) {
  uint64_t total = tableEntries(t, store_.chunks), n = 0;
  uint64_t lastIno = 0;
  std::optional<InodeRecord> file;
  std::unordered_set<uint32_t> knownServers;
  for (Cursor c(t, store_.servers, "", ""); c.valid(); c.next())
    knownServers.insert(static_cast<uint32_t>(readBe64(c.key())));
  for (Cursor c(t, store_.chunks, "", ""); c.valid(); c.next()) {
    if (++n % 65536 == 0) tick("chunks", n, total);
    if (c.key().size() != 16) continue;
    uint64_t ino = readBe64(c.key()), index = readBe64(c.key(), 8);
    auto rec = Store::decodeChunk(c.value());
    if (ino != lastIno || n == 1) {
      file = store_.getInode(t, ino);
      lastIno = ino;
    }
    if (!file || !S_ISREG(file->mode)) {
      report({.kind = "chunk-without-file",
              .detail = "chunk " + hex(rec.id) + " belongs to no regular file",
              .ino = ino, .chunk = rec.id, .index = index, .fixable = true});
    } else if (chunkSize_ != 0 && index >= (file->size + chunkSize_ - 1) / chunkSize_) {
      report({.kind = "chunk-past-eof",
              .detail = "chunk " + hex(rec.id) + " at index " + std::to_string(index) +
                        " lies past the end of the file (size " + std::to_string(file->size) + ")",
              .ino = ino, .chunk = rec.id, .index = index, .fixable = true});
    }
    auto owner = t.get(store_.owners, be64(rec.id));
    if (!owner || owner->size() != 16 || readBe64(*owner) != ino || readBe64(*owner, 8) != index) {
      report({.kind = "chunk-owner-mismatch",
              .detail = "chunk " + hex(rec.id) + " is not indexed by its id",
              .ino = ino, .chunk = rec.id, .index = index});
    }
    if (rec.servers.empty()) {
      report({.kind = "chunk-unplaced", .detail = "chunk " + hex(rec.id) + " has no replica at all",
              .ino = ino, .chunk = rec.id, .index = index});
    }
    for (auto s : rec.servers) {
      if (!knownServers.count(s)) {
        report({.kind = "chunk-unknown-server",
                .detail = "chunk " + hex(rec.id) + " lists chunk server " + std::to_string(s) +
                          ", which is not registered",
                .ino = ino, .chunk = rec.id, .index = index, .server = s});
      }
    }
  }
  chunksSeen_ = n;
  tick("chunks", n, total);
}

std::string Checker::dirPath(Txn& t, uint64_t dir, int depth) {
  if (dir == ROOT_INO) return "";
  if (auto it = dirPaths_.find(dir); it != dirPaths_.end()) return it->second;
  std::string path;
  auto rec = store_.getInode(t, dir);
  if (!rec || depth > 256) {
    path = "/?" + std::to_string(dir);
  } else {
    std::string name;
    for (Cursor c(t, store_.dentries, be64(rec->parent), ""); c.valid(); c.next()) {
      if (Store::decodeDentry(c.value()).ino == dir) {
        name = std::string(c.key().substr(8));
        break;
      }
    }
    if (name.empty()) {
      path = "/?" + std::to_string(dir);  // no entry: an orphan directory
    } else {
      path = dirPath(t, rec->parent, depth + 1) + "/" + name;
    }
  }
  if (dirPaths_.size() > 100000) dirPaths_.clear();
  dirPaths_[dir] = path;
  return path;
}

void Checker::resolvePaths(Txn& t, std::vector<Finding>& findings) {
  std::unordered_map<uint64_t, std::pair<uint64_t, std::string>> entryOf;
  for (auto& f : findings)
    if (f.ino != 0 && f.name.empty()) entryOf.emplace(f.ino, std::make_pair(0, std::string()));
  if (!entryOf.empty()) {
    size_t left = entryOf.size();
    for (Cursor c(t, store_.dentries, "", ""); c.valid() && left > 0; c.next()) {
      auto d = Store::decodeDentry(c.value());
      auto it = entryOf.find(d.ino);
      if (it == entryOf.end() || it->second.first != 0) continue;
      it->second = {readBe64(c.key()), std::string(c.key().substr(8))};
      left--;
    }
  }
  for (auto& f : findings) {
    if (!f.name.empty()) {
      f.path = dirPath(t, f.parent) + "/" + f.name;
    } else if (f.ino != 0) {
      auto& e = entryOf[f.ino];
      if (f.ino == ROOT_INO) {
        f.path = "/";
      } else if (e.first != 0) {
        f.path = dirPath(t, e.first) + "/" + e.second;
      } else {
        f.path = "(no path: inode " + std::to_string(f.ino) + ")";
      }
    }
  }
}

}  // namespace cairn::meta::fsck
