// mount.cairn SOURCE MOUNTPOINT [-o OPTIONS] [-f]
//
// SOURCE is META_ADDRS:/sub/dir, e.g. 127.0.0.1:7000,127.0.0.1:7001:/volumes/v1. Options of
// our own: secretfile=F, keyfile=K, log=FILE, loglevel=L, attr_timeout=S, metrics=HOST:PORT,
// readahead_kb=N (the kernel's readahead for the mount; 16384 by default, 0 leaves the kernel's),
// name_cache=N (names and attributes kept past the kernel's timeouts while meta's change feed
// vouches for them: 65536 by default, 0 turns it off), record_after_s=S (a new file's first
// chunk, written but not yet committed, is recorded with meta after S seconds: 2 by default; at
// most 8, as meta takes offers back after 10 s or more),
// writeback_cache (the kernel's: faster small writes, but other clients' size changes do not
// reach cached inodes), nolocal_reads (chunk copies on this host are read through their server
// too, not from their files), noacl (POSIX ACLs refused; they are on by default), noallow_other;
// the mount(8) options rw, defaults, _netdev, auto, noauto, nofail, user, users and x-* are
// accepted and ignored; everything else goes to FUSE (ro, allow_other, ...).
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <kj/debug.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fs/cairn_fs.h"
#include "fs/fuse_loop.h"
#include "fs/invalidator.h"
#include "rpc/runtime.h"

using namespace cairn;

namespace {

// Why a CPU may not run the aes256gcm suite.
constexpr const char* AES_NEEDS = "libsodium's AES-256-GCM needs x86-64 with AES-NI and PCLMUL";

void usage() {
  fprintf(stderr,
          "usage: mount.cairn META_ADDRS:/path MOUNTPOINT -o secretfile=F,keyfile=K[,log=FILE]"
          "[,loglevel=L][,ro][,noallow_other][,noacl][,writeback_cache][,nolocal_reads]"
          "[,readahead_kb=N][,name_cache=N][,record_after_s=S]"
          "[,cipher=auto|aes256gcm|xchacha20poly1305] [-f]\n");
}

// A number given as option `key`; exits with a message when it is not one in [0, max].
double optionNumber(const std::string& key, const std::string& v, double max) {
  char* end = nullptr;
  double d = strtod(v.c_str(), &end);
  if (v.empty() || end == nullptr || *end != '\0' || !(d >= 0 && d <= max)) {
    fprintf(stderr, "mount.cairn: option %s=%s: not a number from 0 to %.0f\n", key.c_str(),
            v.c_str(), max);
    exit(2);
  }
  return d;
}

// Sets the kernel's readahead for the FUSE mount at `mountpoint` (its bdi, found in
// /proc/self/mountinfo: asking the mount itself would wait for the session that is not yet
// serving). Before INIT, so that the kernel offers this size and keeps it.
void setReadahead(const std::string& mountpoint, uint32_t kb) {
  char real[PATH_MAX];
  std::string mp = realpath(mountpoint.c_str(), real) ? real : mountpoint;
  FILE* f = fopen("/proc/self/mountinfo", "r");
  if (!f) return;
  std::string dev;
  char line[8192];
  while (fgets(line, sizeof(line), f)) {
    char id[32], parent[32], majmin[32], root[4096], point[4096];
    if (sscanf(line, "%31s %31s %31s %4095s %4095s", id, parent, majmin, root, point) == 5 &&
        point == mp)
      dev = majmin;  // the last one: the mount just made
  }
  fclose(f);
  std::string path = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  FILE* out = dev.empty() ? nullptr : fopen(path.c_str(), "w");
  if (!out || fprintf(out, "%u\n", kb) < 0 || fclose(out) != 0) {
    spdlog::info("readahead left at the kernel's default ({}: {})", path, strerror(errno));
    return;
  }
  spdlog::info("readahead {} KiB", kb);
}

}  // namespace

int main(int argc, char** argv) {
  cairn::keepLargeBuffers();
  std::string source, mountpoint, secretFile, keyFile, logFile, logLevel = "info", metricsAddr;
  bool foreground = false;
  double attrTimeout = 1.0;
  // Sequential reads need many requests in flight to cover the round trips to chunk servers; the
  // kernel's 128 KiB default for a FUSE mount keeps one or two. 16 MiB, as NFS clients use.
  uint32_t readaheadKb = 16384;
  double recordAfter = 2.0;
  size_t nameCache = 65536;
  // The kernel's writeback cache keeps a file's size and mtime to itself: sizes that other
  // clients change would never reach this mount's cached inodes. Off by default (coherence);
  // -o writeback_cache turns it on for files only this mount writes.
  bool writebackCache = false;
  bool acl = true;
  // Copies of chunks on this host are read from their files (see fs/local_chunks.h);
  // -o nolocal_reads sends every read through the chunk servers.
  bool localReads = true;
  // The suite a new cluster's blocks are sealed with, chosen by its first mount (later mounts
  // use the cluster's, see fs/crypto.h): AES-256-GCM where this CPU runs it.
  std::string cipherName = "auto";
  bool suiteAsked = false;
  std::vector<std::string> fuseOpts = {"default_permissions", "subtype=cairn"};
  // Every user of the host may use the filesystem, with the kernel checking permissions
  // (default_permissions) as for any local one. FUSE's default (only the mounting user) would
  // make a system mount by root useless to everyone else. -o noallow_other restores it.
  bool allowOther = getuid() == 0;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-f") {
      foreground = true;
    } else if (a == "-o" && i + 1 < argc) {
      for (auto& o : splitList(argv[++i])) {
        auto eq = o.find('=');
        std::string k = o.substr(0, eq), v = eq == std::string::npos ? "" : o.substr(eq + 1);
        if (k == "secretfile") secretFile = v;
        else if (k == "keyfile") keyFile = v;
        else if (k == "log") logFile = v;
        else if (k == "loglevel") logLevel = v;
        else if (k == "metrics") metricsAddr = v;
        else if (k == "attr_timeout") attrTimeout = optionNumber(k, v, 3600);
        else if (k == "readahead_kb") readaheadKb = static_cast<uint32_t>(optionNumber(k, v, 1 << 20));
        else if (k == "record_after_s") recordAfter = optionNumber(k, v, 8);
        else if (k == "name_cache") nameCache = static_cast<size_t>(optionNumber(k, v, 1 << 22));
        else if (k == "writeback_cache") writebackCache = true;
        else if (k == "allow_other") allowOther = true;
        else if (k == "noallow_other") allowOther = false;
        else if (k == "no_writeback_cache") writebackCache = false;
        else if (k == "local_reads") localReads = true;
        else if (k == "nolocal_reads") localReads = false;
        else if (k == "cipher") cipherName = v, suiteAsked = v != "auto";
        else if (k == "acl") acl = true;
        else if (k == "noacl") acl = false;
        else if (k == "rw" || k == "defaults" || k == "_netdev" || k == "auto" || k == "noauto" ||
                 k == "nofail" || k == "user" || k == "users" || k == "nouser" ||
                 k.rfind("x-", 0) == 0 || k == "dev" || k == "suid" || k == "exec")
          continue;
        else fuseOpts.push_back(o);
      }
    } else if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else if (source.empty()) {
      source = a;
    } else if (mountpoint.empty()) {
      mountpoint = a;
    } else {
      usage();
      return 2;
    }
  }
  if (source.empty() || mountpoint.empty() || secretFile.empty() || keyFile.empty()) {
    usage();
    return 2;
  }
  auto split = source.find(":/");
  std::string addrs = source.substr(0, split);
  std::string subdir = split == std::string::npos ? "/" : source.substr(split + 1);
  std::string escaped;  // FUSE splits options on commas: escape those in the addresses
  for (char c : source) {
    if (c == ',' || c == '\\') escaped.push_back('\\');
    escaped.push_back(c);
  }
  fuseOpts.push_back("fsname=cairn:" + escaped);

  KjToSpdlog kjLogs;
  // Go to the background before any thread exists (the RPC thread would not survive a fork
  // later); the parent waits until the mount is up and exits with its outcome.
  int readyPipe[2] = {-1, -1};
  if (!foreground) {
    if (pipe(readyPipe) != 0) {
      perror("mount.cairn: pipe");
      return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
      perror("mount.cairn: fork");
      return 1;
    }
    if (pid > 0) {
      close(readyPipe[1]);
      char status = 1;
      if (read(readyPipe[0], &status, 1) != 1) status = 1;
      return status;
    }
    close(readyPipe[0]);
    setsid();
  }
  auto reportReady = [&](char status) {
    if (readyPipe[1] >= 0) {
      if (write(readyPipe[1], &status, 1) != 1) {
      }
      close(readyPipe[1]);
      readyPipe[1] = -1;
    }
  };

  setupLogging("mount.cairn", logLevel, logFile);
  try {
    KJ_REQUIRE(sodium_init() >= 0);
    fs::Suite suite = fs::fastestSuite();
    if (suiteAsked && !fs::parseSuite(cipherName, &suite)) {
      fprintf(stderr, "mount.cairn: cipher=%s: not aes256gcm, xchacha20poly1305 or auto\n",
              cipherName.c_str());
      spdlog::critical("unknown cipher {}", cipherName);
      return 2;
    }
    if (!fs::suiteAvailable(suite)) {
      fprintf(stderr, "mount.cairn: cipher=%s: this CPU cannot run it (%s)\n", cipherName.c_str(),
              AES_NEEDS);
      spdlog::critical("cipher {} unavailable on this CPU", cipherName);
      return 2;
    }
    std::string keyBytes = readWholeFile(keyFile);
    {
      std::string hex;
      for (char c : keyBytes)
        if (!isspace(static_cast<unsigned char>(c))) hex.push_back(c);
      bool isHex = hex.size() == 64 &&
                   hex.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
      if (!isHex && keyBytes.size() != 32) {
        fprintf(stderr,
                "mount.cairn: the data key file %s must hold 32 bytes or 64 hex digits (it holds "
                "%zu bytes)\n",
                keyFile.c_str(), keyBytes.size());
        spdlog::critical("bad data key file {}: {} bytes", keyFile, keyBytes.size());
        return 1;
      }
    }
    // Descriptors: the FUSE threads' connections, and the chunk files read on this host (up
    // to 2 x 128, see fs/local_chunks.h). The soft limit (often 1024) goes up to the hard one.
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
    }
    fs::BlockCipher cipher(keyBytes);
    Metrics metrics;  // before the client: its event loop serves them until it stops
    fs::ClusterClient client(splitList(addrs), readWholeFile(secretFile), cipher);

    // The cluster's constants, and a check that our data key is the cluster's.
    auto info = newMetaRequest();
    info->getRoot<proto::MetaRequest>().getOp().setClusterInfo();
    auto infoReply = client.meta(kj::mv(info));
    auto ci = infoReply->getRoot<proto::MetaReply>().getInfo();
    uint64_t chunkSize = ci.getChunkSizeBytes();
    KJ_REQUIRE(chunkSize > 0 && chunkSize % fs::BLOCK == 0, "bad chunk size from meta");
    kj::Array<kj::byte> check;
    if (ci.getKeyCheck().size() == 0) {
      // The first mount of the cluster: its suite is the cluster's from now on.
      cipher.setSuite(suite);
      auto blob = fs::sealKeyCheck(cipher);
      auto set = newMetaRequest();
      set->getRoot<proto::MetaRequest>().getOp().setSetKeyCheck(
          kj::arrayPtr(blob.data(), blob.size()));
      auto setReply = client.meta(kj::mv(set));
      check = kj::heapArray<kj::byte>(setReply->getRoot<proto::MetaReply>().getValue());
    } else {
      check = kj::heapArray<kj::byte>(ci.getKeyCheck());
    }
    fs::Suite clusterSuite;
    auto verdict = fs::openKeyCheck(cipher, check.begin(), check.size(), &clusterSuite);
    std::string refusal;
    if (verdict == fs::KeyCheck::WrongKey) {
      refusal = "the data key in " + keyFile + " is not this cluster's data key";
    } else if (verdict == fs::KeyCheck::Malformed) {
      refusal = "the cluster's key check is not one this mount.cairn knows (a newer cairn made "
                "it?)";
    } else if (verdict == fs::KeyCheck::SuiteUnavailable) {
      refusal = std::string("this cluster seals its blocks with ") +
                fs::suiteName(clusterSuite) +
                ", which this CPU cannot run (" + AES_NEEDS +
                "); clusters with such clients are made with -o "
                "cipher=xchacha20poly1305 at their first mount";
    }
    if (!refusal.empty()) {
      spdlog::critical("{}: refusing to mount", refusal);
      fprintf(stderr, "mount.cairn: %s\n", refusal.c_str());
      return 1;
    }
    if (suiteAsked && clusterSuite != suite)
      spdlog::warn("cipher={} asked, but the cluster seals with {} (chosen at its first mount): "
                   "using the cluster's", fs::suiteName(suite), fs::suiteName(clusterSuite));
    spdlog::info("blocks sealed with {}", fs::suiteName(clusterSuite));

    // Resolve the mounted subdirectory.
    uint64_t root = 1;
    for (auto& part : splitList(subdir, '/')) {
      auto l = newMetaRequest();
      auto op = l->getRoot<proto::MetaRequest>().getOp().initLookup();
      op.setParent(root);
      op.setName(part);
      auto r = client.meta(kj::mv(l));
      auto reply = r->getRoot<proto::MetaReply>();
      if (reply.getErr() != 0) {
        fprintf(stderr, "mount.cairn: %s: %s\n", subdir.c_str(), strerror(reply.getErr()));
        return 1;
      }
      KJ_REQUIRE(S_ISDIR(reply.getAttr().getMode()), "not a directory", subdir);
      root = reply.getAttr().getIno();
    }

    fs::FsOptions options;
    if (!metricsAddr.empty()) {
      options.metrics = &metrics;
      spdlog::info("metrics on port {}", client.serveMetrics(metrics, metricsAddr));
    }
    client.setLocalReads(
        localReads,
        options.metrics ? &metrics.counter("cairn_client_local_read_bytes_total",
                                           "Bytes read from chunk copies on this host, from "
                                           "their files") : nullptr,
        options.metrics ? &metrics.counter("cairn_client_local_reads_retried_total",
                                           "Reads of a chunk file on this host that failed (a "
                                           "block that did not authenticate, an I/O error) and "
                                           "went to the chunk servers") : nullptr);
    if (!localReads) spdlog::info("local reads off: every read goes through the chunk servers");
    options.attrTimeoutSec = attrTimeout;
    if (readaheadKb > 0) options.readaheadBytes = readaheadKb << 10;
    options.recordAfterSec = recordAfter;
    options.nameCacheEntries = nameCache;
    options.writebackCache = writebackCache;
    options.acl = acl;
    options.entryTimeoutSec = attrTimeout;
    fs::CairnFs cfs(client, root, chunkSize, options);

    if (allowOther) fuseOpts.push_back("allow_other");
    std::vector<std::string> argStore = {"mount.cairn"};
    std::string joined;
    for (auto& o : fuseOpts) joined += (joined.empty() ? "" : ",") + o;
    argStore.push_back("-o");
    argStore.push_back(joined);
    std::vector<char*> fargv;
    for (auto& s : argStore) fargv.push_back(s.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fargv.size()), fargv.data());
    fuse_session* se = fuse_session_new(&args, fs::CairnFs::operations(),
                                        sizeof(fuse_lowlevel_ops), &cfs);
    if (se == nullptr) {
      fprintf(stderr, "mount.cairn: bad FUSE options: %s\n", joined.c_str());
      return 1;
    }
    cfs.setSession(se);
    if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, mountpoint.c_str()) != 0) {
      fprintf(stderr, "mount.cairn: cannot mount on %s\n", mountpoint.c_str());
      fuse_session_destroy(se);
      return 1;
    }
    if (readaheadKb > 0) setReadahead(mountpoint, readaheadKb);
    spdlog::info("mounted {} on {} (root inode {}, chunk size {} MiB)", source, mountpoint, root,
                 chunkSize >> 20);
    if (!foreground) {
      // Detach from the terminal now that the mount is in place.
      if (chdir("/") != 0) {
      }
      int null = ::open("/dev/null", O_RDWR);
      if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2) close(null);
      }
    }
    reportReady(0);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    int rc;
    {
      // Other clients' changes reach this mount's kernel caches while the session serves.
      fs::Invalidator invalidator(client, se, root, host, mountpoint, options.metrics, &cfs);
      invalidator.start();
      // Workers stay once made: each keeps its own connection to meta (see ClusterClient).
      rc = fs::serveFuse(se, 16, options.metrics, [&cfs]() { cfs.endWaits(); });
    }
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    spdlog::info("unmounted {}", mountpoint);
    return rc == 0 ? 0 : 1;
  } catch (kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
    fprintf(stderr, "mount.cairn: %s\n", e.getDescription().cStr());
    reportReady(1);
    return 1;
  }
}
