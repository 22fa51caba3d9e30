// Structured logs: one JSON object per line on stderr, one line per event, e.g.
//   {"ts":"2025-01-31T12:00:00.123Z","level":"info","event":"request_done","role":"prefill",
//    "request_id":"req-6f1c...","code":"OK",...}
// Written through spdlog (thread-safe sink, level filter). Field values are JSON (strings are
// escaped; invalid UTF-8 is replaced), so a line never breaks however odd a message is.
#pragma once

#include <ostream>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json_fwd.hpp"

namespace kvwire::metrics {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Logs `event` with `fields` (a JSON object; anything else is logged under "value").
void LogEvent(LogLevel level, std::string_view event, const nlohmann::json& fields);

// Lines below `level` are dropped. Default: info.
void SetLogLevel(LogLevel level);
// "debug", "info", "warning" or "error"; InvalidArgument otherwise.
absl::Status SetLogLevel(std::string_view name);

// Sends log lines to `out` instead of stderr (nullptr: back to stderr). For tests.
void RedirectLogsForTesting(std::ostream* out);

// The gRPC metadata key that carries a request's id from node to node.
inline constexpr char kRequestIdMetadata[] = "x-request-id";

}  // namespace kvwire::metrics
