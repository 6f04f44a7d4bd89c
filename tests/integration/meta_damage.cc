// cairn_meta_damage: damages a stopped meta server's store on purpose, for the fsck tests. Each
// command breaks one rule of the namespace or the chunk table the way a bug or a bad disk could,
// and nothing else.
//
//   cairn_meta_damage DIR lookup PATH               prints the inode of PATH
//   cairn_meta_damage DIR unlink PATH               drops the entry only: its inode is orphaned
//   cairn_meta_damage DIR drop-inode PATH           drops the inode only: its entry dangles
//   cairn_meta_damage DIR set-nlink PATH N          sets a wrong link count
//   cairn_meta_damage DIR drop-replica PATH INDEX   the chunk's replica list loses its last server
//   cairn_meta_damage DIR set-size PATH BYTES       shrinks the size below the file's chunks
#include <kj/debug.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "meta/store.h"

using namespace cairn::meta;

namespace {

struct Found {
  uint64_t parent = 0;
  std::string name;
  uint64_t ino = ROOT_INO;
};

Found lookup(Store& store, Txn& t, const std::string& path) {
  Found f;
  size_t at = 1;
  while (at <= path.size() && path != "/") {
    size_t slash = path.find('/', at);
    std::string part = path.substr(at, slash == std::string::npos ? std::string::npos : slash - at);
    auto d = store.getDentry(t, f.ino, part);
    KJ_REQUIRE(d.has_value(), "no such entry", path, part);
    f.parent = f.ino;
    f.name = part;
    f.ino = d->ino;
    if (slash == std::string::npos) break;
    at = slash + 1;
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s DIR lookup|unlink|drop-inode|set-nlink|drop-replica|set-size PATH [ARG]\n",
            argv[0]);
    return 2;
  }
  std::string cmd = argv[2], path = argv[3];
  std::string arg = argc > 4 ? argv[4] : "";
  try {
    Store store(argv[1]);
    Txn t(store.env(), true);
    Found f = lookup(store, t, path);
    if (cmd == "lookup") {
      printf("%llu\n", (unsigned long long)f.ino);
      return 0;
    } else if (cmd == "unlink") {
      auto d = store.getDentry(t, f.parent, f.name);
      t.del(store.dentries, be64(f.parent) + f.name);
      t.del(store.cookies, be64(f.parent) + be64(d->cookie));
    } else if (cmd == "drop-inode") {
      t.del(store.inodes, be64(f.ino));
    } else if (cmd == "set-nlink") {
      auto r = store.getInode(t, f.ino);
      r->nlink = static_cast<uint32_t>(std::stoul(arg));
      store.putInode(t, f.ino, *r);
    } else if (cmd == "drop-replica") {
      uint64_t index = std::stoull(arg);
      auto c = store.getChunk(t, f.ino, index);
      KJ_REQUIRE(c.has_value() && !c->servers.empty(), "no such chunk", path, index);
      printf("%u\n", c->servers.back());
      c->servers.pop_back();
      store.putChunk(t, f.ino, index, *c);
    } else if (cmd == "set-size") {
      auto r = store.getInode(t, f.ino);
      r->size = std::stoull(arg);
      store.putInode(t, f.ino, *r);
    } else {
      fprintf(stderr, "unknown command %s\n", cmd.c_str());
      return 2;
    }
    t.commit();
  } catch (kj::Exception& e) {
    fprintf(stderr, "cairn_meta_damage: %s\n", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
