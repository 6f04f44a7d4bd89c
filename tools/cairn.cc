// cairn: the admin tool. Every command has human output and --json.
//
//   cairn status [--json]                 health of the cluster (exit 1 when not healthy)
//   cairn fileinfo PATH [--json]          a file's chunks and where their replicas are
//   cairn meta status [--json]            every meta server's Raft view
//   cairn meta add ID ADDR                add a meta server (started with --join)
//   cairn meta remove ID                  remove a meta server
//   cairn meta transfer-leader ID         hand leadership to a meta server
//   cairn chunk drain ID [--wait]         move every replica off a chunk server
//   cairn chunk undrain ID                stop draining it
//   cairn replicas set N                  change the cluster's replica count
//   cairn quota get PATH                  a directory's quota and usage
//   cairn quota set PATH [--bytes S] [--inodes N]   set it (both 0: remove it)
//   cairn volume list|create NAME --size S|delete NAME [--trash]|resize NAME --size S
//
// --meta ADDRS and --secret-file F default to $CAIRN_META and $CAIRN_SECRET_FILE.
#include <CLI/CLI.hpp>
#include <kj/debug.h>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <unistd.h>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <sstream>
#include <sys/stat.h>

#include "rpc/meta_client.h"
#include "rpc/runtime.h"
#include "rpc/volumes.h"
#include "tools/fsck.h"
#include "tools/rebalance.h"
#include "tools/status.h"
#include "tools/tool.h"

using namespace cairn;
using namespace cairn::tool;

namespace {
int fileinfoCmd(Tool& tool, const std::string& path, bool json) {
  std::vector<std::string> parts;
  if (int code = splitClusterPath(path, parts); code != 0) return code;
  uint64_t ino = 1;  // the cluster's root
  uint64_t size = 0;
  for (auto& part : parts) {
    auto req = newMetaRequest();
    auto l = req->getRoot<proto::MetaRequest>().getOp().initLookup();
    l.setParent(ino);
    l.setName(part);
    auto reply = tool.call(kj::mv(req));
    auto r = reply->getRoot<proto::MetaReply>();
    if (r.getErr() != 0) return fail(path + ": " + strerror(r.getErr()), 1);
    ino = r.getAttr().getIno();
    size = r.getAttr().getSize();
  }
  auto req = newMetaRequest();
  req->getRoot<proto::MetaRequest>().getOp().setChunkList(ino);
  auto reply = tool.call(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return fail(path + ": " + strerror(r.getErr()), 1);
  if (json) {
    std::ostringstream o;
    o << "{\"path\":" << jsonString(path) << ",\"inode\":" << ino << ",\"size\":" << size
      << ",\"chunks\":[";
    bool first = true;
    for (auto c : r.getChunks()) {
      o << (first ? "" : ",") << "{\"index\":" << c.getIndex() << ",\"id\":" << c.getId()
        << ",\"version\":" << c.getVersion() << ",\"replicas\":[";
      bool f2 = true;
      for (auto rep : c.getReplicas()) {
        o << (f2 ? "" : ",") << "{\"server\":" << rep.getServer()
          << ",\"addr\":" << jsonString(rep.getAddr().cStr()) << "}";
        f2 = false;
      }
      o << "]}";
      first = false;
    }
    o << "]}";
    std::cout << o.str() << std::endl;
  } else {
    printf("%s: inode %llu, %llu bytes, %u chunks\n", path.c_str(), (unsigned long long)ino,
           (unsigned long long)size, r.getChunks().size());
    printf("  %-6s %-18s %-8s %s\n", "INDEX", "CHUNK", "VERSION", "REPLICAS");
    for (auto c : r.getChunks()) {
      std::string reps;
      for (auto rep : c.getReplicas())
        reps += (reps.empty() ? "" : " ") + std::to_string(rep.getServer()) + "@" +
                rep.getAddr().cStr();
      printf("  %-6llu %016llx   %-8llu %s\n", (unsigned long long)c.getIndex(),
             (unsigned long long)c.getId(), (unsigned long long)c.getVersion(), reps.c_str());
    }
  }
  return 0;
}

int metaStatusCmd(Tool& tool, bool json) {
  std::ostringstream o;
  o << "[";
  bool first = true;
  if (!json)
    printf("%-4s %-22s %-13s %8s %10s %10s %10s %s\n", "ID", "ADDRESS", "ROLE", "TERM", "COMMIT",
           "APPLIED", "SNAPSHOT", "MEMBERS");
  for (auto& a : tool.addrs) {
    KJ_IF_MAYBE(r, tool.metaStatusOf(a)) {
      auto s = (*r)->getRoot<proto::MetaReply>().getMetaStatus();
      std::string members;
      for (auto m : s.getMembers())
        members += (members.empty() ? "" : ",") + std::to_string(m.getId());
      if (json) {
        o << (first ? "" : ",") << "{\"id\":" << s.getId() << ",\"addr\":" << jsonString(a)
          << ",\"role\":" << jsonString(s.getRole().cStr()) << ",\"term\":" << s.getTerm()
          << ",\"commit\":" << s.getCommit() << ",\"applied\":" << s.getApplied()
          << ",\"leader\":" << s.getLeader() << ",\"snapshot_index\":" << s.getSnapshotIndex()
          << "}";
      } else {
        printf("%-4llu %-22s %-13s %8llu %10llu %10llu %10llu %s\n",
               (unsigned long long)s.getId(), a.c_str(), s.getRole().cStr(),
               (unsigned long long)s.getTerm(), (unsigned long long)s.getCommit(),
               (unsigned long long)s.getApplied(), (unsigned long long)s.getSnapshotIndex(),
               members.c_str());
      }
    } else {
      if (json) {
        o << (first ? "" : ",") << "{\"addr\":" << jsonString(a) << ",\"role\":\"unreachable\"}";
      } else {
        printf("%-4s %-22s %-13s\n", "-", a.c_str(), "unreachable");
      }
    }
    first = false;
  }
  o << "]";
  if (json) std::cout << o.str() << std::endl;
  return 0;
}

// Marks a chunk server draining; with `wait`, follows the drain until the server holds no
// replica, printing progress.
int drainCmd(Tool& tool, uint32_t server, bool drain, bool wait, int timeoutSec) {
  auto req = newMetaRequest();
  auto d = req->getRoot<proto::MetaRequest>().getOp().initServerDrain();
  d.setServer(server);
  d.setDrain(drain);
  auto reply = tool.call(kj::mv(req));
  int err = reply->getRoot<proto::MetaReply>().getErr();
  if (err == ENOENT) return fail("chunk server " + std::to_string(server) + " is not registered", 1);
  if (err != 0) return fail(std::string("drain: ") + strerror(err), 1);
  if (!drain) {
    printf("chunk server %u: no longer draining\n", server);
    return 0;
  }
  printf("chunk server %u: draining (its replicas move to other servers; it keeps serving)\n",
         server);
  uint64_t start = 0;
  auto began = std::chrono::steady_clock::now();
  for (;;) {
    auto sreq = newMetaRequest();
    sreq->getRoot<proto::MetaRequest>().getOp().setStatus();
    auto sreply = tool.call(kj::mv(sreq));
    auto st = sreply->getRoot<proto::MetaReply>().getStatus();
    uint64_t left = 0;
    for (auto s : st.getServers())
      if (s.getId() == server) left = s.getReplicas();
    if (start == 0) start = left;
    if (left == 0) {
      printf("chunk server %u holds no replica: it can be stopped and removed\n", server);
      return 0;
    }
    if (!wait) {
      printf("%llu replicas left to move; follow with `cairn status`\n", (unsigned long long)left);
      return 0;
    }
    auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    if (elapsed > timeoutSec) {
      return fail("drain of chunk server " + std::to_string(server) + " not finished after " +
                      std::to_string(timeoutSec) + " s (" + std::to_string(left) + " replicas left)",
                  1);
    }
    double done = start > 0 ? double(start - left) / double(start) : 0;
    std::string eta = "?";
    if (done > 0) eta = std::to_string(int(elapsed / done * (1 - done))) + " s";
    fprintf(stderr, "\r  %3d%%  %llu of %llu replicas moved, ETA %s   ", int(done * 100),
            (unsigned long long)(start - left), (unsigned long long)start, eta.c_str());
    sleep(1);
  }
}

// "10G", "512M", "1.5T", "4096": bytes (binary units).
bool parseSize(const std::string& text, uint64_t& out) {
  if (text.empty()) return false;
  char* end = nullptr;
  double v = strtod(text.c_str(), &end);
  if (end == text.c_str() || v < 0) return false;
  std::string unit(end);
  double mult = 1;
  if (unit == "" || unit == "B") mult = 1;
  else if (unit == "K" || unit == "Ki" || unit == "KiB") mult = 1024.0;
  else if (unit == "M" || unit == "Mi" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "Gi" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "Ti" || unit == "TiB") mult = 1024.0 * 1024 * 1024 * 1024;
  else return false;
  double bytes = v * mult;
  if (bytes > 9.0e18) return false;
  out = static_cast<uint64_t>(bytes);
  return true;
}

std::string volumeJson(const VolumeInfo& v) {
  std::ostringstream o;
  o << "{\"name\":" << jsonString(v.name) << ",\"inode\":" << v.ino
    << ",\"quota\":" << (v.hasQuota ? "true" : "false") << ",\"limit_bytes\":" << v.limitBytes
    << ",\"limit_inodes\":" << v.limitInodes << ",\"used_bytes\":" << v.usedBytes
    << ",\"used_inodes\":" << v.usedInodes << "}";
  return o.str();
}

void printVolume(const VolumeInfo& v, bool json) {
  if (json) {
    std::cout << volumeJson(v) << std::endl;
    return;
  }
  printf("%s: %s of %s used, %llu inodes%s\n", v.name.c_str(), human(v.usedBytes).c_str(),
         v.limitBytes ? human(v.limitBytes).c_str() : "unlimited",
         (unsigned long long)v.usedInodes,
         v.limitInodes ? (" of " + std::to_string(v.limitInodes)).c_str() : "");
}

int volumeError(const std::string& what, int err) {
  if (err == EEXIST) return fail(what + ": exists with another size", 1);
  if (err == EINVAL)
    return fail(what + ": invalid name or size (names: 1-128 of A-Z a-z 0-9 . _ -, not starting "
                       "with '.')", 1);
  return fail(what + ": " + strerror(err), 1);
}

int simpleMetaOp(Tool& tool, const char* what, kj::Function<void(proto::MetaRequest::Op::Builder)> fill) {
  auto req = newMetaRequest();
  fill(req->getRoot<proto::MetaRequest>().getOp());
  auto reply = tool.call(kj::mv(req));
  auto r = reply->getRoot<proto::MetaReply>();
  if (r.getErr() != 0) return fail(std::string(what) + ": " + strerror(r.getErr()), 1);
  printf("%s: done\n", what);
  return 0;
}


}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn: administer a cairn cluster"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may come after the subcommand
  std::string metaAddrs = getenv("CAIRN_META") ? getenv("CAIRN_META") : "";
  std::string secretFile = getenv("CAIRN_SECRET_FILE") ? getenv("CAIRN_SECRET_FILE") : "";
  bool json = false;
  app.add_option("--meta", metaAddrs, "meta server addresses (default $CAIRN_META)");
  app.add_option("--secret-file", secretFile, "cluster secret file (default $CAIRN_SECRET_FILE)");

  auto* status = app.add_subcommand("status", "cluster health: meta quorum, chunk servers, chunks");
  status->add_flag("--json", json, "machine-readable output");
  auto* fileinfo = app.add_subcommand("fileinfo", "a file's chunks and replicas");
  std::string path;
  fileinfo->add_option("path", path, "path from the cluster's root, e.g. /dir/file")->required();
  fileinfo->add_flag("--json", json, "machine-readable output");
  auto* metaCmd = app.add_subcommand("meta", "meta servers (Raft group)");
  metaCmd->require_subcommand(1);
  metaCmd->fallthrough();
  auto* metaStatus = metaCmd->add_subcommand("status", "every meta server's Raft view");
  metaStatus->add_flag("--json", json, "machine-readable output");
  auto* metaAdd = metaCmd->add_subcommand("add", "add a meta server started with --join");
  uint64_t id = 0;
  std::string addr;
  metaAdd->add_option("id", id, "its --id")->required();
  metaAdd->add_option("addr", addr, "its address, host:port")->required();
  auto* metaRemove = metaCmd->add_subcommand("remove", "remove a meta server");
  metaRemove->add_option("id", id, "its id")->required();
  auto* metaTransfer = metaCmd->add_subcommand("transfer-leader", "hand leadership over");
  metaTransfer->add_option("id", id, "the new leader's id")->required();
  auto* chunkCmd = app.add_subcommand("chunk", "chunk servers");
  chunkCmd->require_subcommand(1);
  chunkCmd->fallthrough();
  uint32_t server = 0;
  bool wait = false;
  int timeoutSec = 24 * 3600;
  auto* drainC = chunkCmd->add_subcommand("drain", "move every replica off a chunk server");
  drainC->add_option("id", server, "the chunk server's id (see cairn status)")->required();
  drainC->add_flag("--wait", wait, "follow the drain until the server is empty");
  drainC->add_option("--timeout", timeoutSec, "give up waiting after this many seconds");
  auto* undrainC = chunkCmd->add_subcommand("undrain", "stop draining a chunk server");
  undrainC->add_option("id", server, "the chunk server's id")->required();
  auto* replicasCmd = app.add_subcommand("replicas", "the cluster's replica count");
  replicasCmd->require_subcommand(1);
  replicasCmd->fallthrough();
  uint32_t replicas = 0;
  auto* replicasSet = replicasCmd->add_subcommand("set", "change it (repairs add or trim copies)");
  replicasSet->add_option("n", replicas, "copies of every chunk, 1..8")
      ->required()
      ->check(CLI::Range(1, 8));
  auto* quotaCmd = app.add_subcommand("quota", "directory quotas");
  quotaCmd->require_subcommand(1);
  quotaCmd->fallthrough();
  auto* quotaGet = quotaCmd->add_subcommand("get", "a directory's quota and usage");
  quotaGet->add_option("path", path, "directory, from the cluster's root")->required();
  quotaGet->add_flag("--json", json, "machine-readable output");
  auto* quotaSetC = quotaCmd->add_subcommand("set", "set a directory's quota (0 0 removes it)");
  std::string sizeText = "0";
  uint64_t inodes = 0;
  quotaSetC->add_option("path", path, "directory, from the cluster's root")->required();
  quotaSetC->add_option("--bytes", sizeText, "byte limit, e.g. 10G (0: none)");
  quotaSetC->add_option("--inodes", inodes, "inode limit (0: none)");
  auto* volumeCmd = app.add_subcommand("volume", "volumes: /volumes/NAME with a quota");
  volumeCmd->require_subcommand(1);
  volumeCmd->fallthrough();
  std::string volName;
  bool trash = false;
  auto* volList = volumeCmd->add_subcommand("list", "every volume with its usage");
  volList->add_flag("--json", json, "machine-readable output");
  auto* volCreate = volumeCmd->add_subcommand("create", "create a volume");
  volCreate->add_option("name", volName, "volume name")->required();
  volCreate->add_option("--size", sizeText, "capacity, e.g. 10G")->required();
  volCreate->add_flag("--json", json, "machine-readable output");
  auto* volDelete = volumeCmd->add_subcommand("delete", "delete a volume and its data");
  volDelete->add_option("name", volName, "volume name")->required();
  volDelete->add_flag("--trash", trash, "move it to /volumes/.trash instead");
  auto* volResize = volumeCmd->add_subcommand("resize", "change a volume's capacity");
  volResize->add_option("name", volName, "volume name")->required();
  volResize->add_option("--size", sizeText, "new capacity, e.g. 20G")->required();
  volResize->add_flag("--json", json, "machine-readable output");
  auto* repairCmd = app.add_subcommand("repair", "chunk repairs and rebalance moves");
  repairCmd->require_subcommand(1);
  repairCmd->fallthrough();
  auto* repairPause = repairCmd->add_subcommand(
      "pause", "stop starting repairs and moves (maintenance); detection goes on");
  auto* repairResume = repairCmd->add_subcommand("resume", "start repairs again");
  auto* fsckC = app.add_subcommand("fsck", "check the namespace, the chunk table and every copy");
  FsckArgs fsck;
  bool quiet = false;
  fsckC->add_flag("--repair", fsck.repair, "fix what is safe to fix, printing each fix");
  fsckC->add_flag("--verify-data", fsck.verifyData, "read every block of every copy (checksums)");
  fsckC->add_flag("--json", fsck.json, "machine-readable output");
  fsckC->add_flag("--quiet", quiet, "no progress on stderr");
  fsckC->add_option("--wait", fsck.waitSec, "with --repair: seconds to wait for chunk repairs");
  auto* rebalanceC = app.add_subcommand("rebalance", "even out the chunk servers' used space");
  RebalanceArgs rebalance;
  rebalanceC->add_flag("--dry-run", rebalance.dryRun, "print the moves, change nothing");
  rebalanceC->add_option("--tolerance", rebalance.tolerance,
                         "used fraction of every server within this of the mean (default 0.05)")
      ->check(CLI::Range(0.001, 0.5));
  rebalanceC->add_flag("--stop", rebalance.stop, "stop a running rebalance");
  rebalanceC->add_flag("--no-wait", rebalance.noWait, "start it and return (it runs in meta)");
  rebalanceC->add_option("--auto", rebalance.autoMode,
                         "on|off: start a rebalance whenever a chunk server joins")
      ->check(CLI::IsMember({"on", "off"}));
  rebalanceC->add_option("--timeout", rebalance.timeoutSec,
                         "give up waiting after this many seconds");
  rebalanceC->add_flag("--json", rebalance.json, "machine-readable output (--dry-run)");
  CLI11_PARSE(app, argc, argv);

  if (metaAddrs.empty()) return fail("no meta address: give --meta or set CAIRN_META", 2);
  if (secretFile.empty())
    return fail("no cluster secret: give --secret-file or set CAIRN_SECRET_FILE", 2);
  KjToSpdlog kjLogs;
  setupLogging("cairn", "error", "");
  try {
    KJ_REQUIRE(sodium_init() >= 0);
    auto io = kj::setupAsyncIo();
    Tool tool(io, secretFile, metaAddrs);
    if (*status) return statusCmd(tool, json);
    if (*fileinfo) return fileinfoCmd(tool, path, json);
    if (*metaStatus) return metaStatusCmd(tool, json);
    if (*repairPause || *repairResume) {
      bool pause = bool(*repairPause);
      return simpleMetaOp(tool, pause ? "repair pause" : "repair resume",
                          [pause](proto::MetaRequest::Op::Builder op) { op.setRepairPause(pause); });
    }
    if (*rebalanceC) return rebalanceCmd(tool, rebalance);
    if (*fsckC) {
      fsck.progress = !quiet;
      return fsckCmd(tool, fsck);
    }
    Volumes volumes([&tool](kj::Own<capnp::MallocMessageBuilder> m) { return tool.call(kj::mv(m)); });
    uint64_t bytes = 0;
    if ((*quotaSetC || *volCreate || *volResize) && !parseSize(sizeText, bytes))
      return fail("bad size '" + sizeText + "' (examples: 4096, 512M, 10G)", 2);
    if (*quotaGet || *quotaSetC) {
      uint64_t ino;
      if (int e = volumes.resolve(path, ino)) return fail(path + ": " + strerror(e), 1);
      VolumeInfo v;
      v.name = path;
      if (*quotaSetC) {
        if (int e = volumes.quotaSet(ino, bytes, inodes, &v)) return fail(path + ": " + strerror(e), 1);
        if (bytes == 0 && inodes == 0) {
          printf("%s: quota removed\n", path.c_str());
          return 0;
        }
      }
      int e = volumes.quotaGet(ino, v);
      if (e == ENODATA) return fail(path + ": no quota", 1);
      if (e != 0) return fail(path + ": " + strerror(e), 1);
      printVolume(v, json);
      return 0;
    }
    if (*volList) {
      std::vector<VolumeInfo> all;
      if (int e = volumes.list(all)) return fail(std::string("volume list: ") + strerror(e), 1);
      if (json) {
        std::cout << "[";
        for (size_t i = 0; i < all.size(); i++) std::cout << (i ? "," : "") << volumeJson(all[i]);
        std::cout << "]" << std::endl;
      } else {
        printf("%-32s %12s %12s %10s\n", "NAME", "SIZE", "USED", "INODES");
        for (auto& v : all)
          printf("%-32s %12s %12s %10llu\n", v.name.c_str(),
                 v.limitBytes ? human(v.limitBytes).c_str() : "-", human(v.usedBytes).c_str(),
                 (unsigned long long)v.usedInodes);
      }
      return 0;
    }
    if (*volCreate || *volResize) {
      VolumeInfo v;
      int e = *volCreate ? volumes.create(volName, bytes, v) : volumes.resize(volName, bytes, v);
      if (e != 0) return volumeError("volume " + volName, e);
      v.name = volName;
      printVolume(v, json);
      return 0;
    }
    if (*volDelete) {
      if (int e = volumes.remove(volName, trash)) return volumeError("volume " + volName, e);
      printf("volume %s: %s\n", volName.c_str(), trash ? "moved to /volumes/.trash" : "deleted");
      return 0;
    }
    if (*drainC) return drainCmd(tool, server, true, wait, timeoutSec);
    if (*undrainC) return drainCmd(tool, server, false, false, 0);
    if (*replicasSet)
      return simpleMetaOp(tool, "replicas set",
                          [&](proto::MetaRequest::Op::Builder op) { op.setSetReplicas(replicas); });
    if (*metaAdd) {
      return simpleMetaOp(tool, "meta add", [&](proto::MetaRequest::Op::Builder op) {
        auto m = op.initMetaAdd();
        m.setId(id);
        m.setAddr(addr);
      });
    }
    if (*metaRemove)
      return simpleMetaOp(tool, "meta remove",
                          [&](proto::MetaRequest::Op::Builder op) { op.setMetaRemove(id); });
    if (*metaTransfer)
      return simpleMetaOp(tool, "meta transfer-leader",
                          [&](proto::MetaRequest::Op::Builder op) { op.setMetaTransfer(id); });
  } catch (kj::Exception& e) {
    std::string d = e.getDescription().cStr();
    if (d.find("wrong cluster secret") != std::string::npos ||
        d.find("authentication failed") != std::string::npos)
      return fail("refused by meta: authentication failed (wrong cluster secret?)", 2);
    if (e.getType() == kj::Exception::Type::DISCONNECTED)
      return fail("cannot reach the meta leader (" + metaAddrs + "): " + d, 2);
    return fail(d, 2);
  }
  return 2;
}
