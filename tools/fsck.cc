// cairn fsck: checks the namespace on a consistent copy of the metadata, then the chunk table
// against every chunk server's inventory (and with --verify-data every block's checksum), while
// the cluster keeps serving. Problems found in the copy are checked again against the live
// cluster before they are reported, so what changed meanwhile is not reported. --repair applies
// the fixes that are safe (each is checked once more by meta when it applies it).
#include "tools/fsck.h"

#include <kj/debug.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "meta/fsck.h"
#include "meta/store.h"
#include "rpc/net.h"

namespace cairn::tool {

using meta::fsck::Finding;

namespace {

constexpr uint32_t PAGE = 65536;

std::string hex(uint64_t v) {
  char buf[20];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct ServerView {
  uint32_t id = 0;
  std::string addr, state;
};

// One chunk server's inventory, read page by page in id order.
struct Inventory {
  ServerView server;
  std::unique_ptr<Peer> peer;
  std::vector<std::pair<uint64_t, uint64_t>> page;
  size_t pos = 0;
  uint64_t after = 0;
  bool done = false;
  bool reachable = true;
};

class Fsck {
 public:
  Fsck(Tool& tool, const FsckArgs& args) : tool_(tool), args_(args), bar_(args.progress) {}
  int run();

 private:
  bool loadStatus();
  bool fetchCopy(const std::string& dir);
  void checkChunks(meta::Store& store, meta::Txn& t);
  // The problems of one chunk given its record (null: no file refers to it) and the copies
  // servers hold (server -> version).
  std::vector<Finding> evaluate(const meta::ChunkRecord* rec, uint64_t ino, uint64_t index,
                                const std::map<uint32_t, uint64_t>& holders,
                                const std::set<uint32_t>& pendingDelete,
                                const std::set<uint32_t>& unknownInventory);
  // Verifies one copy's checksums; returns the number of bad blocks (-1: could not).
  int64_t verifyCopy(uint32_t server, uint64_t id);
  std::vector<Finding> recheck(const std::vector<Finding>& found, uint64_t id);
  proto::Chunk::Client chunkClient(uint32_t server);
  bool liveChunk(uint64_t ino, uint64_t index, meta::ChunkRecord& out);
  std::optional<uint64_t> liveCopy(uint32_t server, uint64_t id);
  void add(Finding f);
  void repair();
  void waitForRepairs();
  int report(double elapsed);

  Tool& tool_;
  FsckArgs args_;
  ProgressBar bar_;
  std::map<uint32_t, ServerView> servers_;
  std::map<uint32_t, std::unique_ptr<Peer>> peers_;
  uint32_t replicas_ = 0;
  std::vector<Finding> findings_;
  uint64_t dropped_ = 0;  // findings beyond the cap (counted, not kept)
  uint64_t copiesChecked_ = 0, blocksVerified_ = 0, changedMeanwhile_ = 0;
  uint64_t inodes_ = 0, entries_ = 0, chunks_ = 0, metadataBytes_ = 0;
  uint64_t fixed_ = 0, notFixed_ = 0;
  bool waitedForRepairs_ = false;
};

void Fsck::add(Finding f) {
  if (findings_.size() >= args_.maxFindings) {
    dropped_++;
    return;
  }
  findings_.push_back(std::move(f));
}

bool Fsck::loadStatus() {
  auto req = newMetaRequest();
  req->getRoot<proto::MetaRequest>().getOp().setStatus();
  auto reply = tool_.call(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return false;
  auto st = r.getStatus();
  replicas_ = st.getReplicas();
  servers_.clear();
  for (auto s : st.getServers())
    servers_[s.getId()] = ServerView{s.getId(), s.getAddr().cStr(), s.getState().cStr()};
  return true;
}

bool Fsck::fetchCopy(const std::string& dir) {
  // The copy travels in pieces of 4 MiB; meta removes it after the last one.
  std::string path = dir + "/data.mdb";
  FILE* out = fopen(path.c_str(), "wb");
  if (!out) return false;
  uint64_t token = 0, offset = 0, total = 1;
  bool ok = true;
  while (offset < total) {
    auto req = newMetaRequest();
    auto d = req->getRoot<proto::MetaRequest>().getOp().initMetaDump();
    d.setToken(token);
    d.setOffset(offset);
    auto reply = tool_.call(kj::mv(req));
    auto r = reply->getRoot<proto::MetaReply>();
    if (r.getErr() != 0 || !r.isDump()) {
      fprintf(stderr, "cairn: fsck: meta could not copy its store: %s\n", strerror(r.getErr()));
      ok = false;
      break;
    }
    auto piece = r.getDump();
    token = piece.getToken();
    total = piece.getTotalBytes();
    auto data = piece.getData();
    if (data.size() == 0 && offset < total) {
      ok = false;
      break;
    }
    if (fwrite(data.begin(), 1, data.size(), out) != data.size()) {
      ok = false;
      break;
    }
    offset += data.size();
    bar_.update("metadata", offset, total, " B");
  }
  if (fclose(out) != 0) ok = false;
  metadataBytes_ = offset;
  return ok;
}

proto::Chunk::Client Fsck::chunkClient(uint32_t server) {
  auto& p = peers_[server];
  if (!p) {
    PeerOptions o;
    o.connectTimeout = 3 * kj::SECONDS;
    p = std::make_unique<Peer>(tool_.io, tool_.secret, servers_[server].addr, proto::Role::ADMIN, o);
  }
  return p->get().wait(tool_.io.waitScope).castAs<proto::Chunk>();
}

std::optional<uint64_t> Fsck::liveCopy(uint32_t server, uint64_t id) {
  try {
    auto req = chunkClient(server).listPageRequest();
    req.setAfter(id - 1);
    req.setMax(1);
    auto r = req.send().wait(tool_.io.waitScope);
    if (r.getChunks().size() == 1 && r.getChunks()[0].getId() == id)
      return r.getChunks()[0].getVersion();
  } catch (kj::Exception&) {
    peers_.erase(server);
  }
  return std::nullopt;
}

bool Fsck::liveChunk(uint64_t ino, uint64_t index, meta::ChunkRecord& out) {
  auto req = newMetaRequest();
  auto g = req->getRoot<proto::MetaRequest>().getOp().initChunkGet();
  g.setIno(ino);
  g.setIndex(index);
  g.setAllocate(false);
  auto reply = tool_.call(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0 || !r.isChunk()) return false;
  out.id = r.getChunk().getId();
  out.version = r.getChunk().getVersion();
  out.servers.clear();
  for (auto rep : r.getChunk().getReplicas()) out.servers.push_back(rep.getServer());
  return true;
}

int64_t Fsck::verifyCopy(uint32_t server, uint64_t id) {
  int64_t bad = 0;
  uint32_t block = 0;
  try {
    auto client = chunkClient(server);
    while (true) {
      auto req = client.verifyRequest();
      req.setId(id);
      req.setFirstBlock(block);
      req.setCount(256);
      auto r = req.send().wait(tool_.io.waitScope);
      if (r.getErr() != 0) return -1;
      bad += r.getBad().size();
      blocksVerified_ += r.getChecked();
      if (r.getNext() == 0 || r.getNext() <= block) break;
      block = r.getNext();
    }
  } catch (kj::Exception&) {
    peers_.erase(server);
    return -1;
  }
  return bad;
}

std::vector<Finding> Fsck::evaluate(const meta::ChunkRecord* rec, uint64_t ino, uint64_t index,
                                    const std::map<uint32_t, uint64_t>& holders,
                                    const std::set<uint32_t>& pendingDelete,
                                    const std::set<uint32_t>& unknownInventory) {
  std::vector<Finding> out;
  uint64_t id = rec ? rec->id : 0;
  for (auto& [s, version] : holders) {
    if (rec && std::find(rec->servers.begin(), rec->servers.end(), s) != rec->servers.end())
      continue;
    if (pendingDelete.count(s)) continue;  // already due for deletion
    if (rec) id = rec->id;
    out.push_back({.kind = "chunk-extra",
                   .detail = "server " + std::to_string(s) + " holds a copy (version " +
                             std::to_string(version) + ") that " +
                             (rec ? "the chunk table does not list" : "no file refers to"),
                   .ino = rec ? ino : 0, .index = index, .server = s, .fixable = true});
  }
  if (!rec) return out;
  uint32_t good = 0;
  for (auto s : rec->servers) {
    auto sv = servers_.find(s);
    if (sv == servers_.end() || sv->second.state == "dead") continue;
    if (unknownInventory.count(s)) {
      good++;  // unreachable now: not counted against it
      continue;
    }
    auto h = holders.find(s);
    if (h == holders.end()) {
      out.push_back({.kind = "chunk-missing",
                     .detail = "server " + std::to_string(s) + " should hold a copy and has none",
                     .ino = ino, .index = index, .server = s, .fixable = true});
      continue;
    }
    if (h->second < rec->version) {
      out.push_back({.kind = "chunk-stale",
                     .detail = "server " + std::to_string(s) + " holds version " +
                               std::to_string(h->second) + ", the chunk is at " +
                               std::to_string(rec->version),
                     .ino = ino, .index = index, .server = s, .expect = h->second,
                     .value = rec->version, .fixable = true});
      continue;
    }
    good++;
  }
  if (!rec->servers.empty()) {
    if (good == 0) {
      out.push_back({.kind = "chunk-lost", .detail = "no live server holds a good copy",
                     .ino = ino, .index = index});
    } else if (good < replicas_) {
      out.push_back({.kind = "chunk-under-replicated",
                     .detail = std::to_string(good) + " good copies of " + std::to_string(replicas_),
                     .ino = ino, .index = index, .expect = good, .value = replicas_,
                     .fixable = true});
    } else if (good > replicas_) {
      out.push_back({.kind = "chunk-over-replicated",
                     .detail = std::to_string(good) + " good copies of " + std::to_string(replicas_),
                     .ino = ino, .index = index, .expect = good, .value = replicas_,
                     .fixable = true});
    }
  }
  for (auto& f : out) f.chunk = id;
  return out;
}

std::vector<Finding> Fsck::recheck(const std::vector<Finding>& found, uint64_t id) {
  // Ask the live cluster about this chunk again: its record, and every server concerned.
  uint64_t ino = 0, index = 0;
  for (auto& f : found)
    if (f.ino != 0) {
      ino = f.ino;
      index = f.index;
    }
  meta::ChunkRecord live;
  bool hasRecord = ino != 0 && liveChunk(ino, index, live) && live.id == id;
  std::set<uint32_t> ask;
  for (auto& f : found)
    if (f.server != 0) ask.insert(f.server);
  if (hasRecord) ask.insert(live.servers.begin(), live.servers.end());
  std::map<uint32_t, uint64_t> holders;
  std::set<uint32_t> unknown;
  for (auto s : ask) {
    auto sv = servers_.find(s);
    if (sv == servers_.end() || sv->second.state == "dead") continue;
    auto v = liveCopy(s, id);
    if (v) holders[s] = *v;
  }
  auto again = evaluate(hasRecord ? &live : nullptr, ino, index, holders, {}, unknown);
  // Keep what was found both times (the same kind about the same server).
  std::vector<Finding> out;
  for (auto& f : found) {
    bool still = std::any_of(again.begin(), again.end(), [&](const Finding& g) {
      return g.kind == f.kind && g.server == f.server;
    });
    if (still || f.kind == "chunk-corrupt") {
      out.push_back(f);
      out.back().chunk = id;
      if (hasRecord) out.back().value = f.kind == "chunk-stale" ? live.version : out.back().value;
    } else {
      changedMeanwhile_++;
    }
  }
  return out;
}

void Fsck::checkChunks(meta::Store& store, meta::Txn& t) {
  uint64_t nextChunk = store.getCounter(t, "next_chunk");
  uint64_t total = meta::fsck::tableEntries(t, store.owners), done = 0;
  std::vector<Inventory> invs;
  std::set<uint32_t> unknownInventory;
  for (auto& [id, sv] : servers_) {
    if (sv.state == "dead") continue;
    Inventory inv;
    inv.server = sv;
    invs.push_back(std::move(inv));
  }
  auto fill = [&](Inventory& inv) {
    if (inv.pos < inv.page.size() || inv.done || !inv.reachable) return;
    try {
      auto req = chunkClient(inv.server.id).listPageRequest();
      req.setAfter(inv.after);
      req.setMax(PAGE);
      auto r = req.send().wait(tool_.io.waitScope);
      inv.page.clear();
      inv.pos = 0;
      for (auto c : r.getChunks()) inv.page.emplace_back(c.getId(), c.getVersion());
      if (!inv.page.empty()) inv.after = inv.page.back().first;
      if (inv.page.size() < PAGE) inv.done = true;
    } catch (kj::Exception& e) {
      inv.reachable = false;
      unknownInventory.insert(inv.server.id);
      add({.kind = "server-unreachable",
           .detail = "chunk server " + std::to_string(inv.server.id) + " (" + inv.server.addr +
                     ") did not answer: its copies were not checked",
           .server = inv.server.id});
    }
  };
  meta::Cursor owners(t, store.owners, "", "");
  while (true) {
    uint64_t next = UINT64_MAX;
    if (owners.valid()) next = meta::readBe64(owners.key());
    for (auto& inv : invs) {
      fill(inv);
      if (inv.pos < inv.page.size()) next = std::min(next, inv.page[inv.pos].first);
    }
    if (next == UINT64_MAX) break;
    std::optional<meta::ChunkRecord> rec;
    uint64_t ino = 0, index = 0;
    if (owners.valid() && meta::readBe64(owners.key()) == next) {
      if (owners.value().size() == 16) {
        ino = meta::readBe64(owners.value());
        index = meta::readBe64(owners.value(), 8);
        rec = store.getChunk(t, ino, index);
        if (rec && rec->id != next) rec.reset();  // reported by the namespace checks
      }
      owners.next();
      if (++done % 1024 == 0) bar_.update("chunks", done, total);
    }
    std::map<uint32_t, uint64_t> holders;
    for (auto& inv : invs) {
      if (inv.pos < inv.page.size() && inv.page[inv.pos].first == next) {
        holders[inv.server.id] = inv.page[inv.pos].second;
        inv.pos++;
        copiesChecked_++;
      }
    }
    if (!rec && next >= nextChunk) continue;  // created after the copy was taken
    std::set<uint32_t> pendingDelete;
    if (auto g = t.get(store.garbage, meta::be64(next)))
      for (auto s : meta::Store::decodeGarbage(*g).servers) pendingDelete.insert(s);
    auto found = evaluate(rec ? &*rec : nullptr, ino, index, holders, pendingDelete,
                          unknownInventory);
    if (!rec)
      for (auto& f : found) f.chunk = next;
    if (args_.verifyData && rec) {
      for (auto s : rec->servers) {
        auto h = holders.find(s);
        if (h == holders.end() || h->second < rec->version) continue;
        int64_t bad = verifyCopy(s, next);
        if (bad > 0) {
          found.push_back({.kind = "chunk-corrupt",
                           .detail = "server " + std::to_string(s) + "'s copy has " +
                                     std::to_string(bad) + " damaged blocks",
                           .ino = ino, .chunk = next, .index = index, .server = s,
                           .value = rec->version, .fixable = true});
        }
      }
      bar_.update("chunks+data", done, total);
    }
    if (!found.empty()) {
      for (auto& f : recheck(found, next)) add(std::move(f));
    }
  }
  chunks_ = done;
  bar_.update("chunks", total, total);
}

void Fsck::repair() {
  auto fix = [&](Finding& f, kj::Function<void(proto::MetaRequest::Op::Builder)> fill,
                 const std::string& what) {
    auto req = newMetaRequest();
    fill(req->getRoot<proto::MetaRequest>().getOp());
    auto reply = tool_.call(kj::mv(req));
    int err = reply->getRoot<proto::MetaReply>().getErr();
    if (err == 0) {
      f.fix = what;
      fixed_++;
    } else {
      f.fix = "not fixed: " + what + " refused (" + strerror(err) + "; it changed since?)";
      notFixed_++;
    }
  };
  auto nsFix = [&](Finding& f, const std::string& what) {
    fix(f, [&](proto::MetaRequest::Op::Builder op) { meta::fsck::fixOp(f, op.initFsckFix()); },
        what);
  };
  // Entries first, then inodes (a relinked orphan's link count is set after), then chunks.
  // The inode counter before /lost+found may be made (which counts one more).
  const char* order[] = {"dangling-entry", "inode-count", "orphan-inode", "dir-parent-mismatch",
                         "wrong-nlink",
                         "chunk-past-eof", "chunk-without-file", "chunk-missing", "chunk-stale",
                         "chunk-corrupt", "chunk-extra"};
  bool chunkWork = false;
  for (auto kind : order) {
    for (auto& f : findings_) {
      if (f.kind != kind || !f.fixable) continue;
      std::string k = f.kind;
      if (k == "dangling-entry") {
        nsFix(f, "removed the entry");
      } else if (k == "orphan-inode") {
        nsFix(f, "linked into /lost+found as #" + std::to_string(f.ino));
      } else if (k == "dir-parent-mismatch") {
        nsFix(f, "parent set to " + std::to_string(f.value));
      } else if (k == "inode-count") {
        nsFix(f, "inode counter set to the number of inodes");
      } else if (k == "wrong-nlink") {
        nsFix(f, "link count set to " + std::to_string(f.value));
      } else if (k == "chunk-past-eof" || k == "chunk-without-file") {
        nsFix(f, "dropped the chunk (its copies are deleted)");
      } else if (k == "chunk-extra") {
        fix(f, [&](proto::MetaRequest::Op::Builder op) {
              auto o = op.initChunkOrphans();
              o.setServer(f.server);
              o.initIds(1).set(0, f.chunk);
            }, "server " + std::to_string(f.server) + " deletes the copy");
      } else {
        // Missing, stale or damaged: meta drops that replica and copies a good one.
        meta::ChunkRecord live;
        uint64_t version = f.value;
        if (f.ino != 0 && liveChunk(f.ino, f.index, live) && live.id == f.chunk) version = live.version;
        fix(f, [&](proto::MetaRequest::Op::Builder op) {
              auto c = op.initChunkCorrupt();
              c.setId(f.chunk);
              c.setServer(f.server);
              c.setVersion(version);
            }, "replica on server " + std::to_string(f.server) + " dropped; meta copies a good one");
        chunkWork = true;
      }
    }
  }
  for (auto& f : findings_) {
    if (f.kind == "chunk-under-replicated" || f.kind == "chunk-over-replicated") {
      chunkWork = true;
      f.fix = "meta's repair loop brings it to " + std::to_string(replicas_) + " copies";
    } else if (f.fix.empty()) {
      f.fix = "not fixed: needs a person (see the detail)";
      notFixed_++;
    }
  }
  if (chunkWork) waitForRepairs();
}

void Fsck::waitForRepairs() {
  // Repairs run in meta; wait (bounded) until nothing is under-replicated or queued.
  double start = monotonicSeconds();
  while (monotonicSeconds() - start < args_.waitSec) {
    usleep(1000 * 1000);
    auto req = newMetaRequest();
    req->getRoot<proto::MetaRequest>().getOp().setStatus();
    auto reply = tool_.call(kj::mv(req));
    auto r = reply->getRoot<proto::MetaReply>();
    if (r.getErr() != 0) continue;
    auto st = r.getStatus();
    uint64_t left = st.getUnderReplicated() + st.getRepairQueue() + st.getRepairsRunning();
    bar_.update("repairs", st.getRepairedChunks(), st.getRepairedChunks() + left, " chunks");
    if (left == 0) {
      waitedForRepairs_ = true;
      return;
    }
  }
  fprintf(stderr, "cairn: fsck: repairs still running after %d s (see cairn status)\n",
          args_.waitSec);
}

int Fsck::report(double elapsed) {
  bar_.finish();
  std::stable_sort(findings_.begin(), findings_.end(),
                   [](const Finding& a, const Finding& b) { return a.kind < b.kind; });
  bool problems = !findings_.empty() || dropped_ > 0;
  if (args_.json) {
    std::ostringstream o;
    o << "{\"clean\":" << (problems ? "false" : "true") << ",\"findings\":[";
    for (size_t i = 0; i < findings_.size(); i++) {
      auto& f = findings_[i];
      o << (i ? "," : "") << "{\"kind\":" << jsonString(f.kind) << ",\"path\":" << jsonString(f.path)
        << ",\"ino\":" << f.ino << ",\"chunk\":" << jsonString(f.chunk ? hex(f.chunk) : "")
        << ",\"index\":" << f.index << ",\"server\":" << f.server
        << ",\"detail\":" << jsonString(f.detail) << ",\"fixable\":" << (f.fixable ? "true" : "false")
        << ",\"fix\":" << jsonString(f.fix) << "}";
    }
    o << "],\"not_shown\":" << dropped_ << ",\"checked\":{\"inodes\":" << inodes_
      << ",\"entries\":" << entries_ << ",\"chunks\":" << chunks_ << ",\"copies\":" << copiesChecked_
      << ",\"blocks_verified\":" << blocksVerified_ << ",\"metadata_bytes\":" << metadataBytes_
      << "},\"changed_meanwhile\":" << changedMeanwhile_ << ",\"repair\":" << (args_.repair ? "true" : "false")
      << ",\"fixed\":" << fixed_ << ",\"not_fixed\":" << notFixed_
      << ",\"elapsed_seconds\":" << elapsed << "}";
    std::cout << o.str() << std::endl;
  } else {
    for (auto& f : findings_) {
      printf("%-24s %s\n    %s%s%s\n", f.kind.c_str(), f.path.empty() ? "-" : f.path.c_str(),
             f.detail.c_str(), f.chunk ? (" [chunk " + hex(f.chunk) + "]").c_str() : "",
             f.fix.empty() ? "" : ("\n    repair: " + f.fix).c_str());
    }
    if (dropped_ > 0) printf("... and %llu more problems not shown\n", (unsigned long long)dropped_);
    printf("\nchecked %llu inodes, %llu entries, %llu chunks, %llu copies%s in %.1f s "
           "(metadata copy %s)\n",
           (unsigned long long)inodes_, (unsigned long long)entries_, (unsigned long long)chunks_,
           (unsigned long long)copiesChecked_,
           args_.verifyData ? (", " + std::to_string(blocksVerified_) + " blocks verified").c_str() : "",
           elapsed, human(metadataBytes_).c_str());
    if (changedMeanwhile_)
      printf("%llu suspected problems had changed by the time they were checked again (not shown)\n",
             (unsigned long long)changedMeanwhile_);
    if (!problems) {
      printf("clean: no problems found\n");
    } else {
      printf("%llu problems found", (unsigned long long)(findings_.size() + dropped_));
      if (args_.repair)
        printf("; %llu fixed, %llu not fixed%s", (unsigned long long)fixed_,
               (unsigned long long)notFixed_,
               waitedForRepairs_ ? ", chunk repairs finished" : "");
      else
        printf("; run with --repair to fix what is safe to fix");
      printf("\n");
    }
  }
  return problems ? 1 : 0;
}

int Fsck::run() {
  double start = monotonicSeconds();
  try {
    if (!loadStatus()) return fail("fsck: meta did not answer the status request", 2);
  } catch (kj::Exception& e) {
    return fail(std::string("fsck: cannot reach meta: ") + e.getDescription().cStr(), 2);
  }
  const char* tmp = getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/cairn-fsck-XXXXXX";
  if (!mkdtemp(dir.data())) return fail("fsck: cannot make a temporary directory: " + std::string(strerror(errno)), 2);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  try {
    if (!fetchCopy(dir)) return fail("fsck: could not copy the metadata from meta", 2);
  } catch (kj::Exception& e) {
    return fail(std::string("fsck: copying the metadata failed: ") + e.getDescription().cStr(), 2);
  }
  try {
    meta::Store store(dir);
    meta::Txn t(store.env(), false);
    meta::fsck::Options options;
    options.progress = [this](const char* phase, uint64_t done, uint64_t total) {
      bar_.update(phase, done, total);
    };
    meta::fsck::Checker checker(store, [this](Finding f) { add(std::move(f)); }, options);
    checker.checkNamespace(t);
    inodes_ = checker.inodesSeen();
    entries_ = checker.entriesSeen();
    checkChunks(store, t);
    checker.resolvePaths(t, findings_);
  } catch (kj::Exception& e) {
    bar_.finish();
    return fail(std::string("fsck: ") + e.getDescription().cStr(), 2);
  }
  if (args_.repair && !findings_.empty()) {
    try {
      repair();
    } catch (kj::Exception& e) {
      bar_.finish();
      fprintf(stderr, "cairn: fsck: repair stopped: %s\n", e.getDescription().cStr());
    }
  }
  return report(monotonicSeconds() - start);
}

}  // namespace

int fsckCmd(Tool& tool, const FsckArgs& args) {
  Fsck f(tool, args);
  return f.run();
}

}  // namespace cairn::tool
