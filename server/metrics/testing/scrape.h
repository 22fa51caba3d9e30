// Test helpers: scrape a /metrics endpoint and lint the result with Prometheus' promtool.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvwire::metrics::testing {

// GET http://host:port/path (HTTP/1.0, 10 s timeout). The body when the status is 200.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path);

// Runs `promtool check metrics` on `exposition`. OK when promtool exits 0; otherwise its
// output. FailedPrecondition when promtool is not installed (scripts/setup.sh installs it with
// Debian's prometheus package): tests must fail, not skip, without it.
absl::Status PromtoolCheckMetrics(std::string_view exposition);

// Parses the text exposition format into "name{labels}" -> value, labels sorted by name
// (prometheus-cpp prints constant labels first). Comment lines are skipped.
std::map<std::string, double> ParseSamples(std::string_view exposition);

}  // namespace kvwire::metrics::testing
