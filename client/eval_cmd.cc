#include "client/eval_cmd.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/eval/matrix.h"
#include "client/eval/plot.h"
#include "client/eval/progress.h"
#include "client/eval/records.h"
#include "client/eval/runner.h"
#include "client/eval/scoring.h"
#include "client/eval/tasks.h"
#include "client/generate_cmd.h"
#include "nlohmann/json.hpp"
#include "server/nodes/model.h"

namespace kvwire::cli {
namespace {

using json = nlohmann::json;

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  std::ostringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
    return text.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  text << in.rdbuf();
  return text.str();
}

std::string Fnv64(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return absl::StrFormat("%016x", h);
}

absl::Status WriteFile(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();  // a full disk shows only when the buffer is written out
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateEvalOptions(const EvalOptions& o) {
  if (o.tasks_path.empty() == o.text_path.empty()) {
    return absl::InvalidArgumentError("give exactly one of --tasks FILE and --text FILE|-");
  }
  if (o.model_dir.empty() && o.prefill_address.empty()) {
    return absl::InvalidArgumentError("give --model DIR (in process) or --prefill HOST:PORT (a running node)");
  }
  if (!o.prefill_address.empty()) {
    if (!o.text_path.empty()) {
      return absl::InvalidArgumentError("--text needs the model's logits: it runs in process only (--model)");
    }
    if (!o.scout_dir.empty()) return absl::InvalidArgumentError("--scout runs in process only");
    if (!o.quality.empty() && o.quality != "task_score") {
      return absl::InvalidArgumentError("a node returns no logits: --prefill runs measure task_score only");
    }
  }
  if (!o.quality.empty()) {
    auto q = eval::ParseQuality(o.quality);
    if (!q.ok()) return q.status();
    if (*q == eval::Quality::kTaskScore && o.tasks_path.empty()) {
      return absl::InvalidArgumentError("--quality task_score needs --tasks");
    }
    if (*q != eval::Quality::kTaskScore && o.fidelity_tokens == 0) {
      return absl::InvalidArgumentError("--quality agreement/kl needs --fidelity-tokens > 0");
    }
  }
  if (!o.tasks_path.empty()) {
    if (auto f = eval::ParseTaskFormat(o.format); !f.ok()) return f.status();
  }
  return absl::OkStatus();
}

namespace {

// The run's configurations: --config specs, --configs-file, --matrix names (in that order),
// duplicates dropped, with a lossless reference first.
absl::StatusOr<std::vector<eval::EvalConfig>> BuildConfigs(const EvalOptions& o, const eval::ModelShape& shape,
                                                           std::string* reference) {
  std::vector<eval::EvalConfig> all;
  for (const std::string& spec : o.configs) {
    auto c = eval::ParseConfigSpec(spec);
    if (!c.ok()) return c.status();
    all.push_back(*std::move(c));
  }
  if (!o.configs_file.empty()) {
    auto f = eval::ReadConfigFile(o.configs_file);
    if (!f.ok()) return f.status();
    all.insert(all.end(), f->begin(), f->end());
  }
  std::vector<std::string> matrices = o.matrices;
  if (all.empty() && matrices.empty()) matrices.push_back("bits");
  for (const std::string& m : matrices) {
    auto configs = eval::NamedMatrix(m, shape);
    if (!configs.ok()) return configs.status();
    all.insert(all.end(), configs->begin(), configs->end());
  }
  std::vector<eval::EvalConfig> out;
  std::map<std::string, std::string> seen;  // label -> codec
  for (eval::EvalConfig& c : all) {
    auto it = seen.find(c.label.name);
    if (it != seen.end()) {
      if (it->second != c.label.codec) {
        return absl::InvalidArgumentError(absl::StrCat("configuration label \"", c.label.name,
                                                       "\" names two codecs: ", it->second, " and ", c.label.codec));
      }
      continue;
    }
    seen[c.label.name] = c.label.codec;
    out.push_back(std::move(c));
  }
  // Without the model (a --prefill run) every layer a plan could name is checked.
  const int layers = shape.num_layers > 0 ? shape.num_layers : kvcodec::DecodeLimits{}.max_layers;
  for (const eval::EvalConfig& c : out) {
    if (eval::IsLossless(c.codec, layers)) {
      *reference = c.label.name;
      return out;
    }
  }
  auto full = eval::ParseConfigSpec(seen.contains("full") ? "full-reference=plan=*:raw" : "full=plan=*:raw");
  if (!full.ok()) return full.status();
  *reference = full->label.name;
  out.insert(out.begin(), *std::move(full));
  return out;
}

std::string Settings(const EvalOptions& o) {
  std::string s = absl::StrCat("prefill=", o.prefill_address, ";scout=", o.scout_dir, ";dtype=", o.dtype, ";fidelity_tokens=", o.fidelity_tokens,
                               ";max_new_tokens=", o.max_new_tokens, ";attention=", !o.no_attention_error,
                               ";window=", o.observation_window);
  if (!o.text_path.empty()) {
    absl::StrAppend(&s, ";context=", o.context_tokens, ";continuation=", o.continuation_tokens,
                    ";samples=", o.samples);
  } else {
    absl::StrAppend(&s, ";format=", o.format, ";task=", o.default_task, ";limit=", o.limit);
  }
  return s;
}

// One example through a running prefill node, per configuration: the node builds the prompt,
// compresses, ships and decodes; the reply carries the answer, the bytes and the timings. A node
// returns no logits, so there are no fidelity measures.
absl::Status RunRemoteExample(const EvalOptions& o, const eval::TaskExample& ex,
                              const std::vector<eval::EvalConfig>& configs, const eval::SkipFn& skip,
                              const eval::RecordSink& sink) {
  GenerateOptions call;
  call.prefill_address = o.prefill_address;
  call.timeout_seconds = o.timeout_seconds;
  for (const eval::EvalConfig& c : configs) {
    if (skip(c, ex.id)) continue;
    kvwire::v1::GenerateRequest request;
    request.set_request_id(absl::StrCat("eval-", ex.id, "-", c.label.name));
    request.set_context(ex.context);
    request.set_question(ex.question);
    request.set_codec_config(c.label.codec);
    auto* opts = request.mutable_options();
    opts->set_max_new_tokens(o.max_new_tokens > 0 ? o.max_new_tokens : eval::TaskMaxNewTokens(ex.task));
    opts->set_temperature(0);
    kvwire::v1::GenerateReply reply;
    const auto start = std::chrono::steady_clock::now();
    const grpc::Status status = CallGenerate(call, request, &reply);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat(o.prefill_address, ": ", c.label.name, " on ", ex.id, ": ",
                                                 status.error_message()));
    }
    const kvwire::v1::RequestStats& s = reply.stats();
    eval::EvalRecord r;
    r.config = c.label.name;
    r.codec = c.label.codec;
    r.example_id = ex.id;
    r.task = ex.task;
    r.model_fingerprint = reply.model_fingerprint();
    r.prediction = reply.text();
    auto score = eval::ScoreExample(ex, r.prediction);
    if (!score.ok()) return score.status();
    r.score = *score;
    r.prompt_tokens = s.prompt_tokens();
    r.cached_tokens = std::max(0, s.prompt_tokens() - 1);
    r.frame_bytes = s.wire_bytes();
    r.raw_bytes = s.raw_bytes();
    r.elements = s.raw_bytes() / 2;  // the reference is 16 bits per element
    r.kept_elements = static_cast<uint64_t>(s.kept_fraction() * static_cast<double>(r.elements) + 0.5);
    r.prefill_seconds = s.prefill_seconds();
    r.encode_seconds = s.encode_seconds();
    r.decode_seconds = s.transfer_seconds() + s.rebuild_seconds();
    r.generate_seconds = std::max(0.0, wall - r.prefill_seconds - r.encode_seconds - r.decode_seconds);
    if (absl::Status st = sink(std::move(r)); !st.ok()) return st;
  }
  return absl::OkStatus();
}

bool HasLayersMatrix(const EvalOptions& o) {
  for (const std::string& m : o.matrices) {
    if (m.rfind("layers", 0) == 0) return true;
  }
  return false;
}

}  // namespace

CLI::App* AddEvalCommand(CLI::App& app, EvalOptions& o) {
  auto* cmd = app.add_subcommand(
      "eval",
      "Run a task file or plain text through codec configurations on a model (in process): task score, "
      "bytes, time and fidelity to the full cache (agreement, KL, perplexity, attention and K/V error)");
  AddEvalOptions(cmd, o);
  cmd->add_option("--prefill", o.prefill_address,
                  "Measure a running prefill node (host:port) instead of running the model in process (task files only)");
  cmd->add_option("--timeout", o.timeout_seconds, "--prefill: deadline of each request in seconds")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  return cmd;
}

CLI::Option* AddEvalOptions(CLI::App* cmd, EvalOptions& o) {
  auto* model = cmd->add_option("--model", o.model_dir, "Hugging Face model directory")->check(CLI::ExistingDirectory);
  cmd->add_option("--tokenizer", o.tokenizer_path, "tokenizer.json (default: the model's)")->check(CLI::ExistingFile);
  cmd->add_option("--dtype", o.dtype, "Engine dtype")->capture_default_str()->check(CLI::IsMember({"float32", "bfloat16"}));
  cmd->add_option("--threads", o.threads, "Torch threads; 0 = all cores")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("--device", o.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--scout", o.scout_dir,
                  "Scout model directory for the scout matrix (selection from the scout, overlap with the model's own)")
      ->check(CLI::ExistingDirectory);
  auto* tasks = cmd->add_option("--tasks", o.tasks_path, "Task file (JSONL; SQuAD JSON)")->check(CLI::ExistingFile);
  auto* text = cmd->add_option("--text", o.text_path, "Plain text file, or - for stdin (fidelity only)");
  tasks->excludes(text);
  cmd->add_option("--format", o.format, "Task file layout")->capture_default_str()->check(
      CLI::IsMember({"kvwire", "longbench", "squad", "ruler"}));
  cmd->add_option("--task", o.default_task, "Task name for records without one (RULER files)");
  cmd->add_option("--limit", o.limit, "Use only the first N examples; 0 = all")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--context-tokens", o.context_tokens, "Text: context tokens per sample")->capture_default_str()->check(CLI::Range(2, 1 << 22));
  cmd->add_option("--continuation", o.continuation_tokens, "Text: held-out continuation tokens per sample (perplexity)")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--samples", o.samples, "Text: most samples cut from the text; 0 = as many as fit")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--config", o.configs,
                  "Codec configuration (repeatable): a preset, config text, or LABEL=preset|text");
  cmd->add_option("--configs-file", o.configs_file, "File of configurations, one per line ('#' comments)")->check(CLI::ExistingFile);
  cmd->add_option("--matrix", o.matrices,
                  "Named matrix (repeatable): selection, budgets, quant, layers[:int2], delta, svd, pipelines, bits, presets");
  cmd->add_option("--max-new-tokens", o.max_new_tokens, "Tokens generated per task example; 0 = the task's default")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--fidelity-tokens", o.fidelity_tokens, "Teacher-forced tokens compared with the full cache per example; 0 = off")->capture_default_str()->check(CLI::Range(0, 1 << 16));
  cmd->add_flag("--no-attention-error", o.no_attention_error, "Skip the attention-output error at the observation window");
  cmd->add_option("--window", o.observation_window, "Observation window (queries) of the attention error")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--quality", o.quality, "What the plot, Pareto front and ladder rank by: task_score, agreement or kl");
  cmd->add_option("--out", o.out_prefix,
                  "Write PREFIX.jsonl (record log; an existing one is resumed), .csv, .json, .svg and .md");
  cmd->add_flag("--overwrite", o.overwrite, "Start over instead of resuming PREFIX.jsonl");
  cmd->add_flag("--json", o.json, "Print the JSON summary instead of the table");
  cmd->add_flag("--no-progress", o.no_progress, "No progress bar (it is only drawn on a terminal anyway)");
  cmd->add_option("--title", o.title, "Title of the plot and tables");
  return model;
}

absl::StatusOr<EvalRun> RunEvalJob(const EvalOptions& o) {
  if (absl::Status s = ValidateEvalOptions(o); !s.ok()) return s;
  const bool remote = !o.prefill_address.empty();
  nodes::ModelOptions mo;
  mo.model_dir = o.model_dir;
  mo.tokenizer_path = o.tokenizer_path;
  mo.dtype = o.dtype;
  mo.threads = o.threads;
  mo.device = o.device;
  absl::StatusOr<std::unique_ptr<nodes::NodeModel>> model = std::unique_ptr<nodes::NodeModel>();
  eval::ModelShape shape;
  if (!o.model_dir.empty()) {
    model = nodes::NodeModel::Load(mo);
    if (!model.ok()) return model.status();
    const modelio::ModelConfig& mc = (*model)->engine->config();
    shape = {static_cast<int>(mc.num_hidden_layers), static_cast<int>(mc.head_dim)};
  }

  std::string reference;
  auto configs = BuildConfigs(o, shape, &reference);
  if (!configs.ok()) return configs.status();
  std::unique_ptr<nodes::NodeModel> scout;
  if (!o.scout_dir.empty()) {
    nodes::ModelOptions so = mo;
    so.model_dir = o.scout_dir;
    so.tokenizer_path.clear();
    auto loaded = nodes::NodeModel::Load(so);
    if (!loaded.ok()) return absl::Status(loaded.status().code(), absl::StrCat("scout: ", loaded.status().message()));
    scout = *std::move(loaded);
  }

  // Input.
  std::vector<eval::TaskExample> examples;
  std::vector<eval::TextSample> samples;
  std::string source;
  if (!o.tasks_path.empty()) {
    auto format = eval::ParseTaskFormat(o.format);
    eval::LoadOptions lo;
    lo.default_task = o.default_task;
    auto loaded = eval::LoadJsonlFile(o.tasks_path, *format, lo);
    if (!loaded.ok()) return loaded.status();
    examples = *std::move(loaded);
    if (o.limit > 0 && static_cast<int>(examples.size()) > o.limit) examples.resize(o.limit);
    if (examples.empty()) return absl::InvalidArgumentError(absl::StrCat(o.tasks_path, ": no examples"));
    for (const eval::TaskExample& ex : examples) {
      if (auto spec = eval::FindTask(ex.task); !spec.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(o.tasks_path, ": example ", ex.id, ": ", spec.status().message()));
      }
    }
    auto content = ReadInput(o.tasks_path);
    if (!content.ok()) return content.status();
    source = absl::StrCat(o.tasks_path, "@", Fnv64(*content));
  } else {
    auto content = ReadInput(o.text_path);
    if (!content.ok()) return content.status();
    auto ids = (*model)->tokenizer->Encode(*content, /*parse_special=*/false);
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat(o.text_path, ": ", ids.status().message()));
    const tokenizer::GenerationTokens& gen = (*model)->generation_tokens;
    std::optional<int32_t> bos;
    if (gen.add_bos_token && gen.bos_token_id) bos = *gen.bos_token_id;
    const std::string name = o.text_path == "-" ? "stdin" : std::filesystem::path(o.text_path).filename().string();
    auto cut = eval::CutText(*ids, o.context_tokens, o.continuation_tokens, o.samples, bos, name);
    if (!cut.ok()) return cut.status();
    samples = *std::move(cut);
    source = absl::StrCat(o.text_path == "-" ? "stdin" : o.text_path, "@", Fnv64(*content));
  }

  // Record log (resumable) or memory.
  const std::string fingerprint = remote ? absl::StrCat("remote:", o.prefill_address) : (*model)->fingerprint;
  eval::RunMeta meta{fingerprint, source, Settings(o)};
  std::unique_ptr<eval::RecordLog> log;
  std::vector<eval::EvalRecord> memory;
  if (!o.out_prefix.empty()) {
    const std::filesystem::path parent = std::filesystem::path(o.out_prefix).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--out ", o.out_prefix, ": cannot create ", parent.string(), ": ", ec.message()));
    }
    auto opened = eval::RecordLog::Open(o.out_prefix + ".jsonl", meta, o.overwrite);
    if (!opened.ok()) return opened.status();
    log = *std::move(opened);
    // Summaries group records by label: a label whose codec changed since the log was written
    // would average two codecs under one name.
    for (const eval::EvalRecord& r : log->records()) {
      for (const eval::EvalConfig& c : *configs) {
        if (r.config == c.label.name && r.codec != c.label.codec) {
          return absl::FailedPreconditionError(absl::StrCat(
              o.out_prefix, ".jsonl holds results labelled \"", r.config, "\" for codec \"", r.codec,
              "\", now \"", c.label.codec, "\"; use another label or --out, or --overwrite"));
        }
      }
    }
  }
  const std::vector<eval::EvalRecord>& records = log ? log->records() : memory;

  const int64_t items = static_cast<int64_t>(examples.empty() ? samples.size() : examples.size());
  const int64_t total = items * static_cast<int64_t>(configs->size());
  int64_t done = 0;
  auto example_ids = [&]() {
    std::vector<std::string> ids;
    for (const auto& e : examples) ids.push_back(e.id);
    for (const auto& s : samples) ids.push_back(s.id);
    return ids;
  };
  if (log) {
    for (const std::string& id : example_ids()) {
      for (const eval::EvalConfig& c : *configs) done += log->Has(c.label.name, c.label.codec, id) ? 1 : 0;
    }
    if (done > 0) std::fprintf(stderr, "kvwire eval: resuming %s: %lld of %lld results already there\n",
                               (o.out_prefix + ".jsonl").c_str(), static_cast<long long>(done),
                               static_cast<long long>(total));
  }
  eval::ProgressBar bar(total, done, stderr, !o.no_progress);
  eval::SkipFn skip = [&](const eval::EvalConfig& c, const std::string& id) {
    return log && log->Has(c.label.name, c.label.codec, id);
  };
  // A remote run's log is keyed by the node's address; the node may serve another model now.
  std::string log_model;
  if (log) {
    for (const eval::EvalRecord& r : log->records()) {
      if (!r.model_fingerprint.empty()) log_model = r.model_fingerprint;
    }
  }
  eval::RecordSink sink = [&](eval::EvalRecord r) -> absl::Status {
    const std::string label = absl::StrCat(r.config, " ", r.example_id);
    if (log_model.empty()) log_model = r.model_fingerprint;
    if (!r.model_fingerprint.empty() && r.model_fingerprint != log_model) {
      return absl::FailedPreconditionError(absl::StrCat(
          o.prefill_address, " now serves model ", r.model_fingerprint, ", but ", o.out_prefix,
          ".jsonl holds results from model ", log_model, "; use another --out, or --overwrite"));
    }
    if (log) {
      if (absl::Status s = log->Append(std::move(r)); !s.ok()) return s;
    } else {
      memory.push_back(std::move(r));
    }
    bar.Advance(label);
    return absl::OkStatus();
  };
  eval::RunnerOptions ro;
  ro.max_new_tokens = o.max_new_tokens;
  ro.fidelity_tokens = o.fidelity_tokens;
  ro.attention_error = !o.no_attention_error;
  ro.observation_window = o.observation_window;
  ro.scout = scout.get();
  if (remote) {
    for (const eval::TaskExample& ex : examples) {
      if (absl::Status s = RunRemoteExample(o, ex, *configs, skip, sink); !s.ok()) return s;
    }
  } else {
    eval::Evaluator evaluator(**model, ro);
    for (const eval::TaskExample& ex : examples) {
      if (absl::Status s = evaluator.RunExample(ex, *configs, skip, sink); !s.ok()) return s;
    }
    for (const eval::TextSample& s : samples) {
      if (absl::Status st = evaluator.RunText(s, *configs, skip, sink); !st.ok()) return st;
    }
  }
  bar.Finish();

  // Summary.
  eval::Quality quality = examples.empty() ? eval::Quality::kAgreement : eval::Quality::kTaskScore;
  if (!o.quality.empty()) quality = *eval::ParseQuality(o.quality);
  std::vector<eval::ConfigLabel> order;
  for (const eval::EvalConfig& c : *configs) order.push_back(c.label);
  EvalRun run;
  std::string remote_fingerprint;
  for (const eval::EvalRecord& r : records) {
    if (!r.model_fingerprint.empty()) remote_fingerprint = r.model_fingerprint;
  }
  run.summary = eval::Summarize(records, order, reference, quality);
  run.model_fingerprint = remote_fingerprint.empty() ? fingerprint : remote_fingerprint;
  run.source = source;
  const std::string title = !o.title.empty() ? o.title
                                             : absl::StrCat(remote ? o.prefill_address : std::filesystem::path(o.model_dir).filename().string(), ": ",
                                                            std::filesystem::path(o.tasks_path.empty() ? o.text_path : o.tasks_path)
                                                                .filename()
                                                                .string());
  json extra = {{"model", remote ? o.prefill_address : o.model_dir},
                {"model_fingerprint", run.model_fingerprint},
                {"source", source},
                {"settings", meta.settings},
                {"title", title},
                {"examples", items}};
  std::string markdown = eval::SeedTable(run.summary, title);
  if (HasLayersMatrix(o)) {
    // KL is continuous where agreement and task scores are coarse; fall back to the run's quality.
    const eval::Quality lq = o.fidelity_tokens > 0 ? eval::Quality::kKl : quality;
    auto layers = eval::AnalyzeLayers(run.summary, shape.num_layers, lq);
    if (layers.ok()) {
      extra["layer_sensitivity"] = {{"quality", std::string(eval::QualityName(lq))},
                                    {"bits", layers->bits},
                                    {"total_loss", layers->total_loss},
                                    {"loss_alone", layers->loss_alone},
                                    {"recovery", layers->recovery},
                                    {"bottlenecks", layers->bottlenecks},
                                    {"proposed_plan", layers->proposed_plan}};
      markdown += absl::StrCat("\n### Layer sensitivity (", std::string(eval::QualityName(lq)), ")\n\n",
                               eval::LayerSensitivityTable(*layers));
    } else {
      std::fprintf(stderr, "kvwire eval: no layer sensitivity: %s\n", std::string(layers.status().message()).c_str());
    }
  }
  run.extra_json = extra.dump();
  if (!o.out_prefix.empty()) {
    for (const auto& [suffix, content] :
         std::vector<std::pair<std::string, std::string>>{{".csv", eval::ToCsv(run.summary)},
                                                          {".json", eval::ToJson(run.summary, run.extra_json)},
                                                          {".svg", eval::PlotSvg(run.summary, title)},
                                                          {".md", markdown}}) {
      if (absl::Status s = WriteFile(o.out_prefix + suffix, content); !s.ok()) return s;
    }
  }
  return run;
}

int RunEval(const EvalOptions& opts) {
  if (absl::Status s = ValidateEvalOptions(opts); !s.ok()) {
    std::cerr << "kvwire eval: " << s.message() << "\n";
    return 2;
  }
  auto run = RunEvalJob(opts);
  if (!run.ok()) {
    std::cerr << "kvwire eval: " << run.status().message() << "\n";
    return 1;
  }
  if (opts.json) {
    std::cout << eval::ToJson(run->summary, run->extra_json);
  } else {
    std::cout << eval::FormatTable(run->summary);
    nlohmann::json extra = nlohmann::json::parse(run->extra_json);
    if (extra.contains("layer_sensitivity")) {
      const auto& ls = extra["layer_sensitivity"];
      std::cout << "layer sensitivity (" << ls["quality"].get<std::string>() << "): bottlenecks "
                << ls["bottlenecks"].dump() << ", proposed plan " << ls["proposed_plan"].get<std::string>() << "\n";
    }
  }
  if (!opts.out_prefix.empty()) {
    std::cerr << "kvwire eval: wrote " << opts.out_prefix << ".{jsonl,csv,json,svg,md}\n";
  }
  std::cout.flush();
  return 0;
}

}  // namespace kvwire::cli
