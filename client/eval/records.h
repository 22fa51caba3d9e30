// Per-request results of an evaluation run and the append-only JSONL log they are kept in, which
// is what lets an interrupted `kvwire eval` resume where it stopped.
#pragma once

#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/eval/fidelity_math.h"

namespace kvwire::eval {

// One (configuration, example) result.
struct EvalRecord {
  std::string config;      // the configuration's label
  std::string codec;       // its canonical kvcodec config text
  std::string example_id;  // task example id, or "<source>#<n>" for text samples
  std::string task;        // task name; "text" for plain-text samples
  std::optional<double> score;  // task score in [0, 1]; absent for text samples
  std::string prediction;       // generated answer (task examples only)
  std::string model_fingerprint;  // the serving node's, for runs against a node ("" in process)
  int64_t prompt_tokens = 0;    // tokens of the prompt
  int64_t cached_tokens = 0;    // tokens the shipped cache covers (prompt_tokens - 1)
  // kvcodec::ByteAccounting of the frame.
  uint64_t frame_bytes = 0;
  uint64_t raw_bytes = 0;     // the full cache at 16 bits per element
  uint64_t header_bytes = 0;  // frame header and trailer
  uint64_t elements = 0;
  uint64_t kept_elements = 0;
  // Seconds: prefill (shared by the example's configurations), encode (selection + frame),
  // decode (frame verify/rebuild + session build), generate (the answer).
  double prefill_seconds = 0;
  double encode_seconds = 0;
  double decode_seconds = 0;
  double generate_seconds = 0;
  FidelitySums fidelity;
  // Per layer: relative error ||x' - x|| / ||x|| of the rebuilt keys and values over the kept
  // rows, and of the attention output at the observation window (empty when not measured).
  std::vector<double> key_error;
  std::vector<double> value_error;
  std::vector<double> attention_error;
  // Scout selections: |scout's kept set ∩ the model's own global set| / |own set| (NaN else).
  double selection_overlap = std::numeric_limits<double>::quiet_NaN();
};

// One JSON object, no newline. Non-finite numbers are written as null and read back as NaN.
std::string RecordToJsonLine(const EvalRecord& record);
absl::StatusOr<EvalRecord> RecordFromJsonLine(std::string_view line);

// What a log's records were measured on. A log is only resumed by a run with equal metadata.
struct RunMeta {
  std::string model_fingerprint;
  std::string source;    // task file or text file, as given
  std::string settings;  // the options that change results, as one canonical string
};

// The JSONL log: a first line {"kvwire_eval":1, <RunMeta>}, then one record per line, flushed
// as each record is written.
class RecordLog {
 public:
  // Creates `path`, or with an existing file and overwrite = false, reads it: its metadata must
  // equal `meta` (FailedPrecondition otherwise, naming the difference and --overwrite), its
  // records become existing(), and a torn last line (an interrupted write) is cut off. Any
  // other malformed line is InvalidArgument "<path>:<line>: ...".
  static absl::StatusOr<std::unique_ptr<RecordLog>> Open(const std::string& path, const RunMeta& meta,
                                                         bool overwrite);

  const std::vector<EvalRecord>& records() const { return records_; }
  // Whether a record for (config label, codec, example) is already in the log.
  bool Has(std::string_view config, std::string_view codec, std::string_view example_id) const;
  absl::Status Append(EvalRecord record);
  // Records resumed from the file when it was opened.
  size_t resumed() const { return resumed_; }

 private:
  RecordLog() = default;
  std::string path_;
  std::ofstream out_;
  std::vector<EvalRecord> records_;
  std::set<std::string, std::less<>> keys_;
  size_t resumed_ = 0;
};

}  // namespace kvwire::eval
