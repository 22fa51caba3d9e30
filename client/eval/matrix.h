// The codec configurations an evaluation runs: from command-line specs, from a file, or from a
// named matrix that reproduces one of the seeds' experiments; and the layer-sensitivity reading
// that turns the "layers" matrix into a proposed per-layer bit plan.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/eval/report.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::eval {

// Where a configuration's kept token positions come from.
enum class SelectionSource {
  kOwn,     // kvcodec's selection on the model's own scores (per layer and head as configured)
  kGlobal,  // one position set for all layers and heads, from the model's own scores summed
            // over layers and heads (what a scout's choice is compared with)
  kScout,   // the same, from the scout model's scores (seed 003's scout transfer; needs a scout)
};

struct EvalConfig {
  ConfigLabel label;  // label.codec is the canonical text (CodecConfig::ToString)
  kvcodec::CodecConfig codec;
  SelectionSource source = SelectionSource::kOwn;
};

// One spec: a preset name ("int4"), config text ("select=snapkv;keep=0.25;plan=*:int4"), or a
// labelled form NAME=SPEC where NAME is not a config key ("snap25=select=snapkv;keep=0.25",
// "my-int4=int4"). Unlabelled text is labelled with its canonical form. InvalidArgument naming
// the spec when nothing parses.
absl::StatusOr<EvalConfig> ParseConfigSpec(std::string_view spec);

// A file of specs, one per line; blank lines and lines starting with '#' are skipped. Errors
// name the file and line.
absl::StatusOr<std::vector<EvalConfig>> ReadConfigFile(const std::string& path);

// Shape facts a matrix may depend on.
struct ModelShape {
  int num_layers = 0;
  int head_dim = 0;
};

// Named matrices (each one of issue 6's experiments; rows and columns label the seed tables):
//   selection   Q2C, SnapKV, H2O, StreamingLLM, PyramidKV, anchor rule, random x 25/50/75%
//   budgets     SnapKV, PyramidKV, H2O, StreamingLLM, Q2C x 64..2048 tokens per head
//   quant       INT8/4/3/2 x per-token, per-channel and group sizes
//   layers      each layer alone at INT4 and each layer alone kept at FP16 with the rest INT4
//               ("layers:int2" uses INT2 instead)
//   delta       direct, sequential, grouped, anchor (closed and open loop) x INT4/INT2
//   svd         SVD rank 4..64 (at most head_dim)
//   pipelines   SnapKV/Q2C x 25..100% x INT8/INT4/mixed INT4 (layer 0 raw), rANS coded
//   bits        full, INT8, INT4, INT3, INT2 (issue 9's monotonicity check)
//   scout       Q2C and SnapKV at 25/50/75%: own per-layer selection, own global selection, and
//               the scout's global selection (needs a scout model at run time)
//   presets     every kvcodec preset
// "full" (the lossless reference) is always first. NotFound for an unknown name.
absl::StatusOr<std::vector<EvalConfig>> NamedMatrix(std::string_view name, const ModelShape& shape);
std::vector<std::string> MatrixNames();

// True when the configuration reproduces the cache exactly for a model of `num_layers`: every
// token kept, every layer's keys and values raw, no delta coding (entropy coding is lossless).
bool IsLossless(const kvcodec::CodecConfig& config, int num_layers);

// Reading of a "layers" run.
struct LayerSensitivity {
  std::string bits;                  // "int4" or "int2"
  double total_loss = 0;             // quality(full) - quality(every layer at `bits`)
  std::vector<double> loss_alone;    // quality(full) - quality(only layer l at `bits`)
  std::vector<double> recovery;      // quality(layer l kept raw, rest `bits`) - quality(all `bits`)
  std::vector<int> bottlenecks;      // ascending layer order
  std::string proposed_plan;         // e.g. "*:int4,0:raw"
};
// Bottlenecks: layers whose loss alone or recovery is at least a quarter of the total loss
// (most damaging first, at most a quarter of the layers, at least one when the total loss is
// positive). FailedPrecondition when the summary lacks the "layers" configurations or
// `quality` is not measured for them.
absl::StatusOr<LayerSensitivity> AnalyzeLayers(const EvalSummary& summary, int num_layers,
                                               Quality quality);
// Markdown: per layer, loss alone and recovery, bottlenecks and the proposed plan.
std::string LayerSensitivityTable(const LayerSensitivity& s);

}  // namespace kvwire::eval
