// A filesystem state machine on its own temporary LMDB store, with helpers that build commands
// the way the leader does (time, request and placement inside the Command). Shared by the tests
// of meta/state_machine and meta/fsck.
#pragma once

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <kj/debug.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "meta/state_machine.h"

namespace cairn::meta::testing {

constexpr uint64_t CHUNK_BYTES = 1 << 20;

using Op = proto::MetaRequest::Op::Builder;

// One reply, owned.
struct Reply {
  std::shared_ptr<capnp::MallocMessageBuilder> msg;
  proto::MetaReply::Reader get() const { return msg->getRoot<proto::MetaReply>().asReader(); }
  int err() const { return get().getErr(); }
  uint64_t ino() const { return get().getAttr().getIno(); }
  proto::Attr::Reader attr() const { return get().getAttr(); }
};

// A state machine on its own temporary store, with helpers that build commands.
class Namespace {
 public:
  Namespace() {
    char tmpl[] = "/tmp/cairn-state-machine-test-XXXXXX";
    KJ_ASSERT(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    store_ = std::make_unique<Store>(dir_);
    // Durability is not under test here: skip the fsync of every commit to keep tests fast.
    KJ_ASSERT(mdb_env_set_flags(store_->env(), MDB_NOSYNC | MDB_NOMETASYNC, 1) == 0);
    sm_ = std::make_unique<StateMachine>(*store_);
    Format f;
    f.chunkSizeBytes = CHUNK_BYTES;
    f.replicas = 2;
    sm_->formatIfEmpty(f, nowNs_, "test-cluster");
  }
  ~Namespace() {
    sm_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Applies one command in its own write transaction. clientId 0 means "not deduplicated".
  Reply apply(const std::function<void(Op)>& fill, uint64_t clientId = 0, uint64_t seq = 0,
              const std::vector<uint32_t>& placement = {}) {
    capnp::MallocMessageBuilder cmdMsg;
    auto cmd = cmdMsg.initRoot<proto::Command>();
    nowNs_ += 1000;
    cmd.setTimeNs(nowNs_);
    cmd.setGcGraceNs(graceNs);
    auto req = cmd.initRequest();
    req.setClientId(clientId);
    req.setSeq(seq);
    if (clientId != 0) req.setAckedBelow(ackedBelow);
    fill(req.getOp());
    auto p = cmd.initPlacement(placement.size());
    for (size_t i = 0; i < placement.size(); i++) p.set(i, placement[i]);
    Reply r{std::make_shared<capnp::MallocMessageBuilder>()};
    Txn t(store_->env(), true);
    sm_->apply(t, cmd.asReader(), *r.msg);
    t.commit();
    return r;
  }

  // Answers a read-only request from the current state.
  Reply read(const std::function<void(Op)>& fill) {
    capnp::MallocMessageBuilder reqMsg;
    auto req = reqMsg.initRoot<proto::MetaRequest>();
    fill(req.getOp());
    Reply r{std::make_shared<capnp::MallocMessageBuilder>()};
    Txn t(store_->env(), false);
    sm_->read(t, req.asReader(), r.msg->initRoot<proto::MetaReply>());
    return r;
  }

  Reply mknod(uint64_t parent, const std::string& name, uint32_t mode, bool exclusive = true,
              uint64_t clientId = 0, uint64_t seq = 0) {
    return mknodWith(parent, name, mode, exclusive, clientId, seq, {}, 0, false);
  }
  // open(O_CREAT) as the mount sends it: `ask` for a first chunk offered on `placement`.
  Reply create(uint64_t parent, const std::string& name, const std::vector<uint32_t>& placement,
               bool ask = true, uint32_t mode = S_IFREG | 0644, bool exclusive = true) {
    return mknodWith(parent, name, mode, exclusive, 0, 0, placement, 1, ask);
  }
  Reply mknodWith(uint64_t parent, const std::string& name, uint32_t mode, bool exclusive,
                  uint64_t clientId, uint64_t seq, const std::vector<uint32_t>& placement,
                  uint64_t openGen, bool firstChunk) {
    return apply(
        [&](Op op) {
          auto m = op.initMknod();
          m.setParent(parent);
          m.setName(name);
          m.setMode(mode);
          m.setUid(1000);
          m.setGid(1000);
          m.setExclusive(exclusive);
          m.setOpenGen(openGen);
          m.setFirstChunk(firstChunk);
        },
        clientId, seq, placement);
  }
  int64_t now() const { return nowNs_; }
  void advance(int64_t ns) { nowNs_ += ns; }
  int64_t graceNs = 0;  // the garbage grace period the "leader" puts in every command
  uint64_t ackedBelow = 0;  // what every request of a client says it has all replies below

  Reply file(uint64_t parent, const std::string& name) { return mknod(parent, name, S_IFREG | 0644); }
  Reply mkdir(uint64_t parent, const std::string& name) { return mknod(parent, name, S_IFDIR | 0755); }

  Reply lookup(uint64_t parent, const std::string& name) {
    return read([&](Op op) {
      auto l = op.initLookup();
      l.setParent(parent);
      l.setName(name);
    });
  }
  Reply getattr(uint64_t ino) {
    return read([&](Op op) { op.setGetattr(ino); });
  }
  Reply unlink(uint64_t parent, const std::string& name) {
    return apply([&](Op op) {
      auto u = op.initUnlink();
      u.setParent(parent);
      u.setName(name);
    });
  }
  // What meta's leader proposes once no session holds these unlinked files open.
  Reply reclaim(const std::vector<uint64_t>& inos) {
    return apply([&](Op op) {
      auto l = op.initReclaim(static_cast<unsigned>(inos.size()));
      for (size_t i = 0; i < inos.size(); i++) l.set(static_cast<unsigned>(i), inos[i]);
    });
  }
  Reply rmdir(uint64_t parent, const std::string& name) {
    return apply([&](Op op) {
      auto u = op.initRmdir();
      u.setParent(parent);
      u.setName(name);
    });
  }
  Reply rename(uint64_t parent, const std::string& name, uint64_t newParent,
               const std::string& newName, uint32_t flags = 0, uint64_t clientId = 0,
               uint64_t seq = 0) {
    return apply(
        [&](Op op) {
          auto r = op.initRename();
          r.setParent(parent);
          r.setName(name);
          r.setNewParent(newParent);
          r.setNewName(newName);
          r.setFlags(flags);
        },
        clientId, seq);
  }
  Reply link(uint64_t ino, uint64_t newParent, const std::string& newName) {
    return apply([&](Op op) {
      auto l = op.initLink();
      l.setIno(ino);
      l.setNewParent(newParent);
      l.setNewName(newName);
    });
  }
  Reply setxattr(uint64_t ino, const std::string& name, const std::string& value, uint32_t flags) {
    return apply([&](Op op) {
      auto x = op.initSetxattr();
      x.setIno(ino);
      x.setName(name);
      x.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
      x.setFlags(flags);
    });
  }
  Reply getxattr(uint64_t ino, const std::string& name) {
    return read([&](Op op) {
      auto x = op.initGetxattr();
      x.setIno(ino);
      x.setName(name);
    });
  }
  Reply readdir(uint64_t ino, uint64_t after, uint32_t max) {
    return read([&](Op op) {
      auto r = op.initReaddir();
      r.setIno(ino);
      r.setAfter(after);
      r.setMaxEntries(max);
    });
  }
  uint32_t registerServer(const std::string& uuid, const std::string& addr,
                          const std::string& host) {
    auto r = apply([&](Op op) {
      auto s = op.initRegisterServer();
      s.setUuid(uuid);
      s.setAddr(addr);
      s.setHost(host);
    });
    KJ_ASSERT(r.err() == 0, r.err());
    return r.get().getServerId();
  }
  Reply allocate(uint64_t ino, uint64_t index, const std::vector<uint32_t>& placement) {
    return apply(
        [&](Op op) {
          auto g = op.initChunkGet();
          g.setIno(ino);
          g.setIndex(index);
          g.setAllocate(true);
        },
        0, 0, placement);
  }
  Reply setSize(uint64_t ino, uint64_t size) {
    return apply([&](Op op) {
      auto s = op.initSetattr();
      s.setIno(ino);
      s.initAttr().setSetSize(true);
      s.getAttr().setSize(size);
    });
  }
  Reply chunkList(uint64_t ino) {
    return read([&](Op op) { op.setChunkList(ino); });
  }

  // Every entry of a directory (paging through readdir), name -> ino.
  std::map<std::string, uint64_t> list(uint64_t dir) {
    std::map<std::string, uint64_t> out;
    uint64_t after = 0;
    while (true) {
      auto r = readdir(dir, after, 3);
      KJ_ASSERT(r.err() == 0, r.err());
      auto entries = r.get().getEntries();
      if (entries.size() == 0) return out;
      for (auto e : entries) {
        KJ_ASSERT(out.emplace(e.getName().cStr(), e.getIno()).second, "entry listed twice");
        after = e.getCookie();
      }
    }
  }

  // A text picture of the whole tree: every name, its attributes, symlink targets, xattrs and
  // chunks, depth first in readdir order.
  std::string dump(uint64_t dir = ROOT_INO, const std::string& path = "") {
    std::ostringstream o;
    o << path << "/ " << attrText(getattr(dir)) << "\n";
    uint64_t after = 0;
    while (true) {
      auto r = readdir(dir, after, 4);
      KJ_ASSERT(r.err() == 0);
      auto entries = r.get().getEntries();
      if (entries.size() == 0) break;
      for (auto e : entries) {
        after = e.getCookie();
        std::string child = path + "/" + e.getName().cStr();
        o << child << " cookie=" << e.getCookie() << " ";
        if (S_ISDIR(e.getMode())) {
          o << "\n" << dump(e.getIno(), child);
          continue;
        }
        o << attrText(getattr(e.getIno()));
        if (S_ISLNK(e.getMode())) {
          o << " -> " << read([&](Op op) { op.setReadlink(e.getIno()); }).get().getTarget().cStr();
        }
        for (auto n : read([&](Op op) { op.setListxattr(e.getIno()); }).get().getNames()) {
          auto v = getxattr(e.getIno(), n.cStr()).get().getValue();
          o << " x:" << n.cStr() << "=" << std::string(v.asChars().begin(), v.size());
        }
        for (auto c : chunkList(e.getIno()).get().getChunks()) {
          o << " c" << c.getIndex() << ":" << c.getId() << "v" << c.getVersion() << "@";
          for (auto rep : c.getReplicas()) o << rep.getServer() << "," << rep.getAddr().cStr() << ";";
        }
        o << "\n";
      }
    }
    return o.str();
  }

  StateMachine& sm() { return *sm_; }
  Store& store() { return *store_; }

 private:
  static std::string attrText(const Reply& r) {
    std::ostringstream o;
    if (r.err() != 0) return "err=" + std::to_string(r.err());
    auto a = r.attr();
    o << "ino=" << a.getIno() << " mode=" << std::oct << a.getMode() << std::dec
      << " nlink=" << a.getNlink() << " size=" << a.getSize() << " uid=" << a.getUid()
      << " gid=" << a.getGid() << " mtime=" << a.getMtimeNs() << " ctime=" << a.getCtimeNs()
      << " atime=" << a.getAtimeNs();
    return o.str();
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StateMachine> sm_;
  int64_t nowNs_ = 1'700'000'000'000'000'000;
};

}  // namespace cairn::meta::testing
