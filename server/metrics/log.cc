#include "server/metrics/log.h"

#include <memory>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/logger.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace kvwire::metrics {
namespace {

// UTC, millisecond timestamps; %v is the rest of the object, written by LogEvent.
constexpr char kPattern[] = R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})";

spdlog::level::level_enum ToSpd(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarning: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

struct LoggerState {
  std::mutex mu;
  std::shared_ptr<spdlog::logger> logger;
  spdlog::level::level_enum level = spdlog::level::info;
};

LoggerState& State() {
  static LoggerState* state = new LoggerState();  // never destroyed: logging works at exit
  return *state;
}

std::shared_ptr<spdlog::logger> MakeLogger(spdlog::sink_ptr sink, spdlog::level::level_enum level) {
  auto logger = std::make_shared<spdlog::logger>("kvwire", std::move(sink));
  logger->set_pattern(kPattern, spdlog::pattern_time_type::utc);
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);  // one event, one line, visible at once
  return logger;
}

std::shared_ptr<spdlog::logger> Logger() {
  LoggerState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.logger) s.logger = MakeLogger(std::make_shared<spdlog::sinks::stderr_sink_mt>(), s.level);
  return s.logger;
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

void LogEvent(LogLevel level, std::string_view event, const nlohmann::json& fields) {
  std::shared_ptr<spdlog::logger> logger = Logger();
  if (!logger->should_log(ToSpd(level))) return;
  std::string line = absl::StrCat("\"event\":", Dump(nlohmann::json(std::string(event))));
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) {
      absl::StrAppend(&line, ",", Dump(nlohmann::json(key)), ":", Dump(value));
    }
  } else if (!fields.is_null()) {
    absl::StrAppend(&line, ",\"value\":", Dump(fields));
  }
  logger->log(ToSpd(level), line);
}

void SetLogLevel(LogLevel level) {
  LoggerState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  s.level = ToSpd(level);
  if (s.logger) s.logger->set_level(s.level);
}

absl::Status SetLogLevel(std::string_view name) {
  if (name == "debug") {
    SetLogLevel(LogLevel::kDebug);
  } else if (name == "info") {
    SetLogLevel(LogLevel::kInfo);
  } else if (name == "warning") {
    SetLogLevel(LogLevel::kWarning);
  } else if (name == "error") {
    SetLogLevel(LogLevel::kError);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log level '", std::string(name), "' (debug, info, warning, error)"));
  }
  return absl::OkStatus();
}

void RedirectLogsForTesting(std::ostream* out) {
  LoggerState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  spdlog::sink_ptr sink;
  if (out != nullptr) {
    sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*out, /*force_flush=*/true);
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  }
  s.logger = MakeLogger(std::move(sink), s.level);
}

}  // namespace kvwire::metrics
