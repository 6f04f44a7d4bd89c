// cairn status (see status.cc).
#pragma once

#include "tools/tool.h"

namespace cairn::tool {

// Exit code: 0 healthy, 1 degraded, 2 unavailable or not reachable.
int statusCmd(Tool& tool, bool json);

}  // namespace cairn::tool
