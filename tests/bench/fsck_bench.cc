// cairn_fsck_bench: how fast the namespace checks of cairn fsck run and how much memory they
// need, on a store of N files (default 1,000,000; --files 10000000 for the ten-million case).
// The store is written directly (inodes, entries, readdir positions, one chunk per file, in
// directories of 1,000) in the same format meta uses, then checked as cairn fsck checks a copy.
//
//   cairn_fsck_bench [--files N] [--dir DIR] [--keep] [--check-only]
//
// Prints files per second of each phase and the peak memory: the heap (anonymous memory, what
// fsck itself allocates) and the peak resident set, which also counts the pages of the
// memory-mapped store the kernel keeps cached (reclaimable, bounded by the machine, not by fsck).
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>

#include "meta/fsck.h"
#include "meta/store.h"

using namespace cairn::meta;

namespace {

uint64_t anonKib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8));
  return 0;
}

double seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int check(const std::string& dir, uint64_t files, bool keep) {
  uint64_t anonBefore = anonKib(), anonPeak = anonBefore, findings = 0;
  Store store(dir);
  Txn t(store.env(), false);
  fsck::Options o;
  std::string phase;
  auto phaseStart = std::chrono::steady_clock::now();
  auto checkStart = phaseStart;
  o.progress = [&](const char* p, uint64_t done, uint64_t total) {
    anonPeak = std::max(anonPeak, anonKib());
    if (done == total && total > 0 && phase != p) {  // a phase ends: it began when the last ended
      phase = p;
      double s = seconds(phaseStart);
      phaseStart = std::chrono::steady_clock::now();
      printf("  %-9s %12llu records in %6.1f s  (%.0f per s)\n", p, (unsigned long long)total, s,
             s > 0 ? double(total) / s : 0.0);
    }
  };
  std::vector<fsck::Finding> found;
  fsck::Checker checker(store, [&](fsck::Finding f) {
    findings++;
    if (found.size() < 10) found.push_back(f);
  }, o);
  checker.checkNamespace(t);
  double checked = seconds(checkStart);
  anonPeak = std::max(anonPeak, anonKib());
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("checked %llu inodes, %llu entries, %llu chunks in %.1f s: %.0f files per second\n",
         (unsigned long long)checker.inodesSeen(), (unsigned long long)checker.entriesSeen(),
         (unsigned long long)checker.chunksSeen(), checked, double(files) / checked);
  printf("peak heap (anonymous memory) %.1f MiB (%.1f MiB before checking); peak resident set "
         "%.0f MiB including cached pages of the mapped store\n",
         double(anonPeak) / 1024, double(anonBefore) / 1024, double(ru.ru_maxrss) / 1024);
  printf("problems found: %llu (expected 0)\n", (unsigned long long)findings);
  for (auto& f : found) printf("  %s: %s\n", f.kind.c_str(), f.detail.c_str());
  if (!keep) std::filesystem::remove_all(dir);
  return findings == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t files = 1000000;
  std::string dir = "/tmp/cairn-fsck-bench";
  bool keep = false, checkOnly = false;
  CLI::App app{"cairn_fsck_bench: cairn fsck's namespace checks on a store of N files"};
  app.add_option("--files", files, "files in the store");
  app.add_option("--dir", dir, "where the store is written");
  app.add_flag("--keep", keep, "keep the store afterwards");
  app.add_flag("--check-only", checkOnly, "check a store kept by an earlier run");
  CLI11_PARSE(app, argc, argv);
  if (checkOnly) return check(dir, files, keep);
  constexpr uint64_t PER_DIR = 1000;
  constexpr uint64_t CHUNK = 64ull << 20;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto start = std::chrono::steady_clock::now();
  {
    Store store(dir);
    mdb_env_set_flags(store.env(), MDB_NOSYNC | MDB_NOMETASYNC, 1);
    uint64_t dirs = (files + PER_DIR - 1) / PER_DIR;
    uint64_t nextIno = ROOT_INO + 1, nextChunk = 1;
    Txn* t = new Txn(store.env(), true);
    InodeRecord root;
    root.mode = S_IFDIR | 0755;
    root.nlink = uint32_t(2 + dirs);
    root.parent = ROOT_INO;
    root.nextCookie = FIRST_COOKIE + dirs;
    store.putInode(*t, ROOT_INO, root);
    store.putCounter(*t, "chunk_size", CHUNK);
    uint64_t ops = 0;
    auto addEntry = [&](uint64_t parent, const std::string& name, uint64_t ino, uint32_t mode,
                        uint64_t cookie) {
      t->put(store.dentries, be64(parent) + name, Store::encodeDentry({ino, mode, cookie}));
      t->put(store.cookies, be64(parent) + be64(cookie), name);
    };
    uint64_t made = 0;
    for (uint64_t d = 0; d < dirs; d++) {
      uint64_t dino = nextIno++;
      uint64_t inDir = std::min(PER_DIR, files - made);
      InodeRecord r;
      r.mode = S_IFDIR | 0755;
      r.nlink = 2;
      r.parent = ROOT_INO;
      r.nextCookie = FIRST_COOKIE + inDir;
      store.putInode(*t, dino, r);
      addEntry(ROOT_INO, "d" + std::to_string(d), dino, S_IFDIR, FIRST_COOKIE + d);
      for (uint64_t f = 0; f < inDir; f++) {
        uint64_t ino = nextIno++;
        InodeRecord fr;
        fr.mode = S_IFREG | 0644;
        fr.nlink = 1;
        fr.size = 4096 + f;
        store.putInode(*t, ino, fr);
        addEntry(dino, "f" + std::to_string(f), ino, S_IFREG, FIRST_COOKIE + f);
        ChunkRecord c;
        c.id = nextChunk++;
        c.version = 1;
        c.servers = {1, 2, 3};
        store.putChunk(*t, ino, 0, c);
        t->put(store.owners, be64(c.id), be64(ino) + be64(0));
        made++;
        if (++ops % 200000 == 0) {
          t->commit();
          delete t;
          t = new Txn(store.env(), true);
        }
      }
    }
    for (uint32_t s = 1; s <= 3; s++) {
      ServerRecord sr;
      sr.uuid = "u" + std::to_string(s);
      sr.addr = "127.0.0.1:" + std::to_string(7000 + s);
      sr.host = "h" + std::to_string(s);
      store.putServer(*t, s, sr);
    }
    store.putCounter(*t, "next_ino", nextIno);
    store.putCounter(*t, "next_chunk", nextChunk);
    store.putCounter(*t, "inodes", nextIno - 1);
    t->commit();
    delete t;
  }
  double built = seconds(start);
  uint64_t storeBytes = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) storeBytes += e.file_size();
  printf("store: %llu files in %llu directories, %.0f MiB, written in %.1f s\n",
         (unsigned long long)files, (unsigned long long)((files + PER_DIR - 1) / PER_DIR),
         double(storeBytes) / (1 << 20), built);

  // The check runs in a process of its own, so that its memory is only its own.
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  fflush(stdout);
  std::string cmd = self + " --check-only --dir '" + dir + "' --files " + std::to_string(files) +
                    (keep ? " --keep" : "");
  return std::system(cmd.c_str()) == 0 ? 0 : 1;
}
