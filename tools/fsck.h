// cairn fsck (see fsck.cc).
#pragma once

#include <cstdint>

#include "tools/tool.h"

namespace cairn::tool {

struct FsckArgs {
  bool repair = false;      // apply the safe fixes
  bool verifyData = false;  // read every block of every copy and check its checksum
  bool json = false;
  bool progress = true;     // progress on stderr
  int waitSec = 600;        // with --repair: how long to wait for meta's chunk repairs
  uint64_t maxFindings = 100000;  // kept and printed; the rest are counted
};

// Exit code: 0 clean, 1 problems found (fixed or not), 2 could not run.
int fsckCmd(Tool& tool, const FsckArgs& args);

}  // namespace cairn::tool
