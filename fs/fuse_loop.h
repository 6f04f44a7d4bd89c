// Serving a FUSE session: one reading thread answers a lone caller; workers join in when
// requests come in company.
//
// libfuse's multi-threaded loop parks every idle thread in read() on /dev/fuse, and the kernel
// hands each request to the thread that has waited longest. A lone caller (rm -rf, tar) thus
// has its requests served by the mount's threads in turn, each woken from sleep, and a wakeup
// is the dearest thing on a virtual machine. Here the reader (the calling thread) answers what
// it reads itself, and checks whether another request waits already. When that happens in most
// of its last eight requests, for a request that may wait on another one (a lock), or when a
// request arrives while the reader waits on the network and still waits 2 ms later, it wakes
// the workers, which then read and answer alongside it as libfuse's threads do. After 50 ms
// with no two requests answered at once they park again. Forgets and releases, which the
// kernel sends in the shadow of a caller's requests, count as company neither way.
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>

#include <functional>

#include "rpc/metrics.h"

namespace cairn::fs {

// Serves `se` until it ends (unmount, or a signal through libfuse's handlers), with up to
// `maxWorkers` workers made as needed. Returns 0 or a negative errno, like
// fuse_session_loop_mt.
// `ending` is called when the session has ended, before the workers are waited for: it should
// end the waits of requests still being answered (a lock wait).
int serveFuse(fuse_session* se, unsigned maxWorkers, Metrics* metrics,
              const std::function<void()>& ending);

}  // namespace cairn::fs
