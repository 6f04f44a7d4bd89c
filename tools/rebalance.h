// cairn rebalance (see rebalance.cc).
#pragma once

#include <string>

#include "tools/tool.h"

namespace cairn::tool {

struct RebalanceArgs {
  bool dryRun = false, stop = false, noWait = false, json = false;
  double tolerance = 0.05;  // used fraction of every server within this of the mean
  std::string autoMode;     // "on" / "off": start one whenever a chunk server joins
  int timeoutSec = 24 * 3600;
};

// Exit code: 0 balanced (or the requested setting changed), 1 not balanced when it stopped or
// the wait timed out, 2 could not run.
int rebalanceCmd(Tool& tool, const RebalanceArgs& args);

}  // namespace cairn::tool
