// cairn-csi: the CSI plugin of cairn (Identity plus Controller, Node or both) on a unix socket.
//
//   cairn-csi --endpoint unix:///csi/csi.sock --mode node --node-id NODE --meta ADDRS
//     --secret-file /etc/cairn/secret --key-file /etc/cairn/key
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "k8s/csi/plugin.h"
#include "rpc/metrics.h"

namespace cc = cairn::csi;
using cairn::KjToSpdlog;
using cairn::setupLogging;
using cairn::splitList;

int main(int argc, char** argv) {
  CLI::App app{"cairn-csi: the cairn CSI plugin (ReadWriteMany volumes)"};
  cc::Config config;
  std::string endpoint = "unix:///csi/csi.sock", metaAddrs, logLevel = "info", logFile;
  bool noRemount = false;
  app.add_option("--endpoint", endpoint, "unix:///path/csi.sock");
  app.add_option("--mode", config.mode, "controller, node or all")
      ->check(CLI::IsMember({"controller", "node", "all"}));
  app.add_option("--node-id", config.nodeId, "this node's name (node mode)");
  app.add_option("--meta", metaAddrs, "meta server addresses, comma-separated")->required();
  app.add_option("--secret-file", config.secretFile, "cluster secret file")->required();
  app.add_option("--key-file", config.keyFile, "data key file (node mode)");
  app.add_option("--node-mount", config.nodeMount, "the node's shared cairn mount");
  app.add_option("--state-dir", config.stateDir, "where published targets are recorded");
  app.add_option("--kubelet-dir", config.kubeletDir, "targets must be below this directory");
  app.add_option("--mount-binary", config.mountBinary, "mount.cairn to run for the node mount");
  app.add_flag("--no-remount", noRemount,
               "never mount the node mount: another process keeps it (the mount container)");
  app.add_option("--health-seconds", config.healthSeconds, "how often the node mount is checked")
      ->check(CLI::Range(1, 3600));
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error");
  app.add_option("--log-file", logFile, "log to this file instead of stderr");
  CLI11_PARSE(app, argc, argv);
  config.remount = !noRemount;
  config.metaAddrs = splitList(metaAddrs);

  KjToSpdlog kjLogs;
  setupLogging("cairn-csi", logLevel, logFile);
  bool controller = config.mode != "node", node = config.mode != "controller";
  if (endpoint.rfind("unix://", 0) != 0) {
    spdlog::error("--endpoint must be unix:///path (got {})", endpoint);
    return 2;
  }
  if (node && (config.nodeId.empty() || config.keyFile.empty())) {
    spdlog::error("node mode needs --node-id and --key-file");
    return 2;
  }
  if (sodium_init() < 0) return 1;
  signal(SIGPIPE, SIG_IGN);
  try {
    std::unique_ptr<cc::MetaLink> meta;
    std::unique_ptr<cc::NodeMounts> mounts;
    if (controller) meta = std::make_unique<cc::MetaLink>(config);
    if (node) {
      mounts = std::make_unique<cc::NodeMounts>(config);
      if (!mounts->ensure())
        spdlog::warn("node mount {} not available yet; retrying in the background",
                     config.nodeMount);
      mounts->startWatcher();
    }
    cc::IdentityService identity(config, meta.get(), mounts.get());
    std::unique_ptr<cc::ControllerService> controllerService;
    std::unique_ptr<cc::NodeService> nodeService;
    std::string socketPath = endpoint.substr(strlen("unix://"));
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(socketPath).parent_path(), ec);
    unlink(socketPath.c_str());  // a socket left by an earlier run
    grpc::ServerBuilder builder;
    builder.AddListeningPort(endpoint, grpc::InsecureServerCredentials());
    builder.SetMaxReceiveMessageSize(4 << 20);
    builder.RegisterService(&identity);
    if (controller) {
      controllerService = std::make_unique<cc::ControllerService>(config, *meta);
      builder.RegisterService(controllerService.get());
    }
    if (node) {
      nodeService = std::make_unique<cc::NodeService>(config, *mounts);
      builder.RegisterService(nodeService.get());
    }
    auto server = builder.BuildAndStart();
    if (!server) {
      spdlog::error("cannot listen on {}", endpoint);
      return 1;
    }
    chmod(socketPath.c_str(), 0660);
    spdlog::info("cairn-csi {} serving on {}{}", config.mode, endpoint,
                 node ? " (node " + config.nodeId + ", node mount " + config.nodeMount + ")" : "");
    std::thread stopper([&server]() {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGTERM);
      sigaddset(&set, SIGINT);
      int sig = 0;
      sigwait(&set, &sig);
      spdlog::info("stopping on signal {}; published volumes stay mounted", sig);
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    });
    server->Wait();
    stopper.join();
  } catch (kj::Exception& e) {
    spdlog::error("{}", e.getDescription().cStr());
    return 1;
  } catch (std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
