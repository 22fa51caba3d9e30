#include "client/eval/records.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvwire::eval {
namespace {

using json = nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Key(std::string_view config, std::string_view codec, std::string_view example_id) {
  std::string key(config);
  key += '\x1f';
  key += codec;
  key += '\x1f';
  key += example_id;
  return key;
}

json Number(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

json Numbers(const std::vector<double>& xs) {
  json a = json::array();
  for (double x : xs) a.push_back(Number(x));
  return a;
}

// Field readers that leave `out` unchanged and report a message on a type mismatch.
struct Reader {
  const json& j;
  std::string error;

  template <typename T>
  void Get(const char* key, T& out) {
    auto it = j.find(key);
    if (it == j.end() || !error.empty()) return;
    if constexpr (std::is_same_v<T, std::string>) {
      if (!it->is_string()) error = absl::StrCat("\"", key, "\" must be a string");
      else out = it->get<std::string>();
    } else if constexpr (std::is_same_v<T, double>) {
      if (it->is_null()) out = kNaN;
      else if (!it->is_number()) error = absl::StrCat("\"", key, "\" must be a number");
      else out = it->get<double>();
    } else {
      if (!it->is_number_integer() || (std::is_unsigned_v<T> && it->get<int64_t>() < 0)) {
        error = absl::StrCat("\"", key, "\" must be a non-negative integer");
      } else {
        out = it->get<T>();
      }
    }
  }

  void GetList(const char* key, std::vector<double>& out) {
    auto it = j.find(key);
    if (it == j.end() || !error.empty()) return;
    if (!it->is_array()) {
      error = absl::StrCat("\"", key, "\" must be an array");
      return;
    }
    for (const json& x : *it) {
      if (x.is_null()) out.push_back(kNaN);
      else if (x.is_number()) out.push_back(x.get<double>());
      else {
        error = absl::StrCat("\"", key, "\" must hold numbers");
        return;
      }
    }
  }
};

json MetaJson(const RunMeta& meta) {
  return {{"kvwire_eval", 1},
          {"model_fingerprint", meta.model_fingerprint},
          {"source", meta.source},
          {"settings", meta.settings}};
}

}  // namespace

std::string RecordToJsonLine(const EvalRecord& r) {
  json j = {{"config", r.config},
            {"codec", r.codec},
            {"example_id", r.example_id},
            {"task", r.task},
            {"prediction", r.prediction},
            {"model_fingerprint", r.model_fingerprint},
            {"prompt_tokens", r.prompt_tokens},
            {"cached_tokens", r.cached_tokens},
            {"frame_bytes", r.frame_bytes},
            {"raw_bytes", r.raw_bytes},
            {"header_bytes", r.header_bytes},
            {"elements", r.elements},
            {"kept_elements", r.kept_elements},
            {"prefill_seconds", Number(r.prefill_seconds)},
            {"encode_seconds", Number(r.encode_seconds)},
            {"decode_seconds", Number(r.decode_seconds)},
            {"generate_seconds", Number(r.generate_seconds)},
            {"fidelity_steps", r.fidelity.steps},
            {"agreements", r.fidelity.agreements},
            {"kl_sum", Number(r.fidelity.kl_sum)},
            {"nll_tokens", r.fidelity.nll_tokens},
            {"nll_candidate", Number(r.fidelity.nll_candidate)},
            {"nll_reference", Number(r.fidelity.nll_reference)},
            {"key_error", Numbers(r.key_error)},
            {"value_error", Numbers(r.value_error)},
            {"attention_error", Numbers(r.attention_error)},
            {"selection_overlap", Number(r.selection_overlap)}};
  if (r.score) j["score"] = Number(*r.score);
  // Predictions are model output and may hold invalid UTF-8.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<EvalRecord> RecordFromJsonLine(std::string_view line) {
  json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (!j.contains("config") || !j.contains("example_id")) {
    return absl::InvalidArgumentError("a record needs \"config\" and \"example_id\"");
  }
  EvalRecord r;
  Reader rd{j, {}};
  rd.Get("config", r.config);
  rd.Get("codec", r.codec);
  rd.Get("example_id", r.example_id);
  rd.Get("task", r.task);
  rd.Get("prediction", r.prediction);
  rd.Get("model_fingerprint", r.model_fingerprint);
  rd.Get("prompt_tokens", r.prompt_tokens);
  rd.Get("cached_tokens", r.cached_tokens);
  rd.Get("frame_bytes", r.frame_bytes);
  rd.Get("raw_bytes", r.raw_bytes);
  rd.Get("header_bytes", r.header_bytes);
  rd.Get("elements", r.elements);
  rd.Get("kept_elements", r.kept_elements);
  rd.Get("prefill_seconds", r.prefill_seconds);
  rd.Get("encode_seconds", r.encode_seconds);
  rd.Get("decode_seconds", r.decode_seconds);
  rd.Get("generate_seconds", r.generate_seconds);
  rd.Get("fidelity_steps", r.fidelity.steps);
  rd.Get("agreements", r.fidelity.agreements);
  rd.Get("kl_sum", r.fidelity.kl_sum);
  rd.Get("nll_tokens", r.fidelity.nll_tokens);
  rd.Get("nll_candidate", r.fidelity.nll_candidate);
  rd.Get("nll_reference", r.fidelity.nll_reference);
  rd.GetList("key_error", r.key_error);
  rd.GetList("value_error", r.value_error);
  rd.GetList("attention_error", r.attention_error);
  rd.Get("selection_overlap", r.selection_overlap);
  if (j.contains("score")) {
    double score = kNaN;
    rd.Get("score", score);
    r.score = score;
  }
  if (!rd.error.empty()) return absl::InvalidArgumentError(rd.error);
  return r;
}

absl::StatusOr<std::unique_ptr<RecordLog>> RecordLog::Open(const std::string& path,
                                                           const RunMeta& meta, bool overwrite) {
  std::unique_ptr<RecordLog> log(new RecordLog());
  log->path_ = path;
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (exists && !overwrite) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::PermissionDeniedError(absl::StrCat("cannot read ", path));
    std::string line;
    uint64_t good_bytes = 0;  // end of the last complete, valid line
    int line_no = 0;
    bool have_meta = false;
    while (std::getline(in, line)) {
      ++line_no;
      const bool complete = !in.eof();  // getline stopped at a '\n'
      if (line.empty() && complete) {
        good_bytes += 1;
        continue;
      }
      if (!have_meta) {
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("kvwire_eval")) {
          if (!complete) break;  // a torn first line: start afresh
          return absl::InvalidArgumentError(
              absl::StrCat(path, ":", line_no, ": not a kvwire eval log (pass --overwrite to replace it)"));
        }
        const json want = MetaJson(meta);
        for (const char* key : {"model_fingerprint", "source", "settings"}) {
          // Regression: j.value() threw (and aborted eval) on a field of another type.
          if (auto it = j.find(key); it != j.end() && !it->is_string()) {
            return absl::InvalidArgumentError(absl::StrCat(
                path, ":", line_no, ": not a kvwire eval log (\"", key,
                "\" is not a string; pass --overwrite to replace it)"));
          }
          if (j.value(key, std::string()) != want[key].get<std::string>()) {
            return absl::FailedPreconditionError(absl::StrCat(
                path, " was written for another run (", key, ": \"", j.value(key, std::string()),
                "\" here, \"", want[key].get<std::string>(),
                "\" now); pass --overwrite to start over, or another --out"));
          }
        }
        have_meta = true;
        good_bytes += line.size() + 1;
        continue;
      }
      auto record = RecordFromJsonLine(line);
      if (!record.ok()) {
        if (!complete) break;  // torn last line
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": ", record.status().message()));
      }
      if (!complete) {
        // A valid record without its newline: keep it and end the line before appending.
        good_bytes += line.size();
        log->keys_.insert(Key(record->config, record->codec, record->example_id));
        log->records_.push_back(*std::move(record));
        in.close();
        std::ofstream(path, std::ios::binary | std::ios::app) << '\n';
        good_bytes += 1;
        break;
      }
      good_bytes += line.size() + 1;
      log->keys_.insert(Key(record->config, record->codec, record->example_id));
      log->records_.push_back(*std::move(record));
    }
    in.close();
    if (have_meta) {
      std::filesystem::resize_file(path, good_bytes, ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot truncate ", path, ": ", ec.message()));
      log->resumed_ = log->records_.size();
      log->out_.open(path, std::ios::binary | std::ios::app);
      if (!log->out_) return absl::PermissionDeniedError(absl::StrCat("cannot append to ", path));
      return log;
    }
  }
  log->out_.open(path, std::ios::binary | std::ios::trunc);
  if (!log->out_) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  log->out_ << MetaJson(meta).dump() << '\n';
  log->out_.flush();
  return log;
}

bool RecordLog::Has(std::string_view config, std::string_view codec, std::string_view example_id) const {
  return keys_.contains(Key(config, codec, example_id));
}

absl::Status RecordLog::Append(EvalRecord record) {
  out_ << RecordToJsonLine(record) << '\n';
  out_.flush();
  if (!out_) return absl::InternalError(absl::StrCat("cannot write to ", path_));
  keys_.insert(Key(record.config, record.codec, record.example_id));
  records_.push_back(std::move(record));
  return absl::OkStatus();
}

}  // namespace kvwire::eval
