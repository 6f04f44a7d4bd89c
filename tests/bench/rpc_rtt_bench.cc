// cairn_rpc_rtt_bench: the round-trip time of one small meta call between two processes over
// loopback, as the mount pays it for every namespace operation, beside a bare TCP ping-pong of
// the same sizes between the same two processes (the floor the kernel and the machine set).
//
//   cairn_rpc_rtt_bench [--calls N] [--server-work-us N] [--same-cpu]
//
// A child process serves a Meta whose call answers at once (no store, no Raft): what is left is
// the transport (authenticated connection, Cap'n Proto RPC, KJ event loops, the wakeups), over
// TCP and over a Unix socket. --server-work-us keeps the server busy that long per call, as meta
// is for a write (about 30 us): the caller's CPU then goes idle before the answer comes, and
// waking it is paid on every call. With --same-cpu both processes are pinned to CPU 0, which
// shows how much of the time is the cross-CPU wakeup. Prints microseconds per round trip: mean,
// p50, p99.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <kj/async-io.h>

#include "rpc/meta_client.h"
#include "rpc/net.h"

using namespace cairn;

namespace {

using Clock = std::chrono::steady_clock;

class InstantMeta final : public proto::Meta::Server {
 public:
  explicit InstantMeta(std::chrono::microseconds work) : work_(work) {}
  kj::Promise<void> call(CallContext context) override {
    auto reply = context.getResults().initReply();
    auto attr = reply.initAttr();
    attr.setIno(context.getParams().getRequest().getOp().getGetattr());
    attr.setMode(0100644);
    auto until = Clock::now() + work_;
    while (Clock::now() < until) {
    }
    return kj::READY_NOW;
  }

 private:
  std::chrono::microseconds work_;  // busy, as meta is while it serves a write
};

void report(const char* what, std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double u : us) sum += u;
  std::printf("%-34s %8.1f us mean %8.1f us p50 %8.1f us p99 (%zu round trips)\n", what,
              sum / us.size(), us[us.size() / 2], us[us.size() * 99 / 100], us.size());
}

void pin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

// The bare floor: `size` bytes each way over one TCP connection, blocking reads and writes.
std::vector<double> tcpPingPong(int calls, size_t size, bool sameCpu) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(lfd, 1) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::perror("tcp listen");
    std::exit(1);
  }
  std::vector<char> buf(size, 'x');
  auto full = [&](int fd, bool write) {
    size_t done = 0;
    while (done < size) {
      ssize_t n = write ? ::write(fd, buf.data() + done, size - done)
                        : ::read(fd, buf.data() + done, size - done);
      if (n <= 0) return false;
      done += size_t(n);
    }
    return true;
  };
  pid_t child = fork();
  if (child == 0) {
    if (sameCpu) pin();
    int fd = accept(lfd, nullptr, nullptr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (full(fd, false) && full(fd, true)) {
    }
    _exit(0);
  }
  close(lfd);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    std::perror("tcp connect");
    std::exit(1);
  }
  std::vector<double> us;
  for (int i = 0; i < calls + 1000; i++) {
    auto t = Clock::now();
    if (!full(fd, true) || !full(fd, false)) break;
    if (i >= 1000) us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  close(fd);
  waitpid(child, nullptr, 0);
  return us;
}

std::vector<double> metaCalls(int calls, bool sameCpu, const std::string& listenAt,
                              std::chrono::microseconds work) {
  auto secret = ClusterSecret::fromBytes("the benchmark's secret, more than sixteen bytes");
  int ready[2];
  if (pipe(ready) != 0) std::exit(1);
  pid_t child = fork();
  if (child == 0) {
    if (sameCpu) pin();
    auto io = kj::setupAsyncIo();
    RpcListener listener(io, secret, [work](proto::Role) -> capnp::Capability::Client {
      return kj::heap<InstantMeta>(work);
    });
    uint port = listener.listen(listenAt).wait(io.waitScope);
    if (write(ready[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
    kj::NEVER_DONE.wait(io.waitScope);
  }
  uint port = 0;
  if (read(ready[0], &port, sizeof(port)) != sizeof(port)) std::exit(1);
  std::vector<double> us;
  {
    auto io = kj::setupAsyncIo();
    std::string addr = listenAt.starts_with("unix:") ? listenAt : "127.0.0.1:" + std::to_string(port);
    MetaClient client(io, secret, {addr}, proto::Role::CLIENT, 7);
    for (int i = 0; i < calls + 1000; i++) {
      auto m = newMetaRequest();
      m->getRoot<proto::MetaRequest>().initOp().setGetattr(uint64_t(i) + 2);
      auto t = Clock::now();
      auto reply = client.call(kj::mv(m)).wait(io.waitScope);
      if (reply->getRoot<proto::MetaReply>().getAttr().getIno() != uint64_t(i) + 2) {
        std::fprintf(stderr, "wrong answer to call %d\n", i);
        std::exit(1);
      }
      client.release();
      if (i >= 1000) us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    }
  }
  kill(child, SIGTERM);
  waitpid(child, nullptr, 0);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  int calls = 20000;
  bool sameCpu = false;
  int workUs = 0;
  CLI::App app{"cairn_rpc_rtt_bench: the round trip of one meta call between two processes"};
  app.add_option("--calls", calls, "round trips timed in each test")
      ->transform(CLI::Bound(100, std::numeric_limits<int>::max()));
  app.add_option("--server-work-us", workUs, "busy time of the server per call")
      ->transform(CLI::Bound(0, 100000));
  app.add_flag("--same-cpu", sameCpu, "pin both processes to CPU 0");
  CLI11_PARSE(app, argc, argv);
  if (sameCpu) pin();
  auto tcp = tcpPingPong(calls, 128, sameCpu);
  report("tcp ping-pong, 128 bytes", tcp);
  auto work = std::chrono::microseconds(workUs);
  auto meta = metaCalls(calls, sameCpu, "127.0.0.1:0", work);
  report("meta call over tcp", meta);
  std::string path = "/tmp/cairn-rtt-bench-" + std::to_string(getpid()) + ".sock";
  auto local = metaCalls(calls, sameCpu, "unix:" + path, work);
  unlink(path.c_str());
  report("meta call over a unix socket", local);
  return 0;
}
