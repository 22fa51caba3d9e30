// The nodes' metrics and logs: a prefill and a decode node in process, with /metrics served on
// OS-chosen loopback ports, a request through them, and what the scrapes and log lines show.
#include <stdlib.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvcodec/synthetic.h"
#include "nlohmann/json.hpp"
#include "proto/kvwire.grpc.pb.h"
#include "server/metrics/log.h"
#include "server/metrics/testing/scrape.h"
#include "server/nodes/servers.h"
#include "server/nodes/testing/tiny_model.h"

namespace kvwire::nodes {
namespace {

using ::testing::HasSubstr;
using metrics::testing::HttpGet;
using metrics::testing::ParseSamples;
using metrics::testing::PromtoolCheckMetrics;

// Log lines (JSON objects) whose "event" is `event`.
std::vector<nlohmann::json> Events(const std::string& text, const std::string& event) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == event) out.push_back(j);
  }
  return out;
}

double Sample(const std::map<std::string, double>& s, const std::string& key) {
  auto it = s.find(key);
  return it == s.end() ? -1 : it->second;
}

class LogCapture {
 public:
  LogCapture() { metrics::RedirectLogsForTesting(&out_); }
  ~LogCapture() { metrics::RedirectLogsForTesting(nullptr); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

TEST(NodeMetricsTest, RequestIsCountedOnBothNodesAndItsIdCrossesInMetadata) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "node_metrics_XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path root(tmpl);
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{root};
  ASSERT_TRUE(testing::WriteTinyModel(root / "m", testing::TinyConfig(2)).ok());
  LogCapture logs;

  PresetMap presets;
  ASSERT_TRUE(ParsePresets("site-small = select=snapkv;keep=0.5;plan=*:int4;entropy=rans\n", "t",
                           presets)
                  .ok());
  NodeOptions decode_opts{.model = {.model_dir = (root / "m").string(), .threads = 1}};
  decode_opts.metrics_port = 0;
  decode_opts.presets = presets;
  auto decode = StartDecodeNode(decode_opts);
  ASSERT_TRUE(decode.ok()) << decode.status();
  ASSERT_GT((*decode)->metrics_port(), 0);
  NodeOptions prefill_opts{.model = {.model_dir = (root / "m").string(), .threads = 1},
                           .decode_address = "127.0.0.1:" + std::to_string((*decode)->port())};
  prefill_opts.metrics_port = 0;
  prefill_opts.presets = presets;
  auto prefill = StartPrefillNode(prefill_opts);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  EXPECT_EQ((*prefill)->metrics_address(), "127.0.0.1:" + std::to_string((*prefill)->metrics_port()));

  auto stub = kvwire::v1::PrefillNode::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*prefill)->port()), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-request-id", "trace-42");  // request_id left empty: metadata wins
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    kvwire::v1::GenerateRequest req;
    req.set_context("The keeper's daughter rowed out to the reef and brought back nine sailors.");
    req.set_question("Who rowed out?");
    req.set_codec_preset("site-small");
    req.mutable_options()->set_max_new_tokens(4);
    kvwire::v1::GenerateReply reply;
    grpc::Status st = stub->Generate(&ctx, req, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(reply.request_id(), "trace-42");
  }
  {
    grpc::ClientContext ctx;
    kvwire::v1::GenerateRequest req;
    req.set_context("x y z");
    req.set_codec_preset("nosuch");
    kvwire::v1::GenerateReply reply;
    EXPECT_EQ(stub->Generate(&ctx, req, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  auto prefill_text = HttpGet("127.0.0.1", (*prefill)->metrics_port(), "/metrics");
  auto decode_text = HttpGet("127.0.0.1", (*decode)->metrics_port(), "/metrics");
  ASSERT_TRUE(prefill_text.ok()) << prefill_text.status();
  ASSERT_TRUE(decode_text.ok()) << decode_text.status();
  EXPECT_TRUE(PromtoolCheckMetrics(*prefill_text).ok()) << PromtoolCheckMetrics(*prefill_text);
  EXPECT_TRUE(PromtoolCheckMetrics(*decode_text).ok()) << PromtoolCheckMetrics(*decode_text);

  const auto p = ParseSamples(*prefill_text);
  EXPECT_EQ(Sample(p, R"(kvwire_requests_total{code="OK",role="prefill"})"), 1);
  EXPECT_EQ(Sample(p, R"(kvwire_requests_total{code="INVALID_ARGUMENT",role="prefill"})"), 1);
  EXPECT_GT(Sample(p, R"(kvwire_raw_bytes_total{preset="site-small",role="prefill"})"), 0);
  EXPECT_GT(Sample(p, R"(kvwire_wire_bytes_total{preset="site-small",role="prefill"})"), 0);
  EXPECT_EQ(Sample(p, R"(kvwire_kept_ratio_count{preset="site-small",role="prefill"})"), 1);
  EXPECT_LT(Sample(p, R"(kvwire_kept_ratio_sum{preset="site-small",role="prefill"})"), 1);
  for (const char* stage : {"prefill", "selection", "encode"}) {
    EXPECT_EQ(Sample(p, absl::StrCat(R"(kvwire_stage_duration_seconds_count{role="prefill",stage=")",
                                     stage, "\"}")),
              1)
        << stage;
  }
  EXPECT_EQ(Sample(p, R"(kvwire_time_to_first_token_seconds_count{role="prefill"})"), 1);
  EXPECT_GT(Sample(p, R"(kvwire_prompt_tokens_total{role="prefill"})"), 2);
  EXPECT_EQ(Sample(p, R"(kvwire_requests_in_flight{role="prefill"})"), 0);
  EXPECT_EQ(Sample(p, R"(kvwire_streams_in_flight{role="prefill"})"), 0);
  EXPECT_EQ(Sample(p, R"(kvwire_caches_held{role="prefill"})"), 0);
  EXPECT_EQ(Sample(p, R"(kvwire_caches_held_bytes{role="prefill"})"), 0);

  const auto d = ParseSamples(*decode_text);
  EXPECT_EQ(Sample(d, R"(kvwire_requests_total{code="OK",role="decode"})"), 1);
  // The preset's name came in the upload's metadata and is one the decode node knows.
  EXPECT_EQ(Sample(d, R"(kvwire_wire_bytes_total{preset="site-small",role="decode"})"),
            Sample(p, R"(kvwire_wire_bytes_total{preset="site-small",role="prefill"})"));
  for (const char* stage : {"transfer", "rebuild", "decode"}) {
    EXPECT_EQ(Sample(d, absl::StrCat(R"(kvwire_stage_duration_seconds_count{role="decode",stage=")",
                                     stage, "\"}")),
              1)
        << stage;
  }
  EXPECT_GT(Sample(d, R"(kvwire_generated_tokens_total{role="decode"})"), 0);
  EXPECT_EQ(Sample(d, R"(kvwire_streams_in_flight{role="decode"})"), 0);
  EXPECT_EQ(Sample(d, R"(kvwire_caches_held{role="decode"})"), 0);
  EXPECT_THAT(*decode_text, HasSubstr("kvwire_node_info{role=\"decode\""));

  // One request_done on the prefill node and one upload_done on the decode node, same id.
  const std::string text = logs.text();
  const auto done = Events(text, "request_done");
  const auto uploads = Events(text, "upload_done");
  ASSERT_EQ(done.size(), 2u) << text;
  ASSERT_EQ(uploads.size(), 1u) << text;
  EXPECT_EQ(done[0]["request_id"], "trace-42");
  EXPECT_EQ(done[0]["code"], "OK");
  EXPECT_EQ(done[0]["preset"], "site-small");
  EXPECT_EQ(uploads[0]["request_id"], "trace-42");
  EXPECT_EQ(uploads[0]["role"], "decode");
  EXPECT_EQ(done[1]["code"], "INVALID_ARGUMENT");
  EXPECT_THAT(done[1]["request_id"].get<std::string>(), ::testing::StartsWith("req-"));
}

// The decode node takes the request id from the call's metadata over the upload header's, and
// counts an unknown preset name as "custom" (labels stay bounded).
TEST(NodeMetricsTest, DecodeServiceUsesMetadataIdAndBoundsPresetLabels) {
  LogCapture logs;
  metrics::NodeMetrics m("decode");
  transport::DecodeNodeService service({.metrics = &m});
  grpc::ServerBuilder builder;
  transport::ConfigureServerBuilder(builder);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server && port > 0);
  auto stub = kvwire::v1::DecodeNode::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  const kvcodec::CacheShape shape{.num_layers = 2, .num_kv_heads = 2, .head_dim = 16,
                                  .num_tokens = 32, .dtype = kvcodec::DType::kBFloat16};
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, 3);
  auto config = kvcodec::CodecConfig::Parse("plan=*:int8");
  ASSERT_TRUE(config.ok());
  auto frame = kvcodec::EncodeFrame(shape, *config, "m", cache.positions, cache.views(),
                                    kvcodec::Selection::KeepAll(shape));
  ASSERT_TRUE(frame.ok()) << frame.status();
  kvwire::v1::UploadHeader header;
  header.set_request_id("from-header");
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
  ASSERT_TRUE(transport::SendFrame(*stub, header, *frame, 1000, deadline, nullptr,
                                   {{"x-request-id", "from-metadata"}, {"x-kvwire-preset", "made-up"}})
                  .ok());
  ASSERT_TRUE(transport::SendFrame(*stub, header, *frame, 1000, deadline, nullptr,
                                   {{"x-kvwire-preset", "int8"}})
                  .ok());
  // A corrupt frame: counted by its code.
  std::vector<uint8_t> bad = *frame;
  bad[bad.size() / 2] ^= 0xff;
  EXPECT_EQ(transport::SendFrame(*stub, header, bad, 1000, deadline, nullptr).code(),
            absl::StatusCode::kDataLoss);
  server->Shutdown();

  const auto uploads = Events(logs.text(), "upload_done");
  ASSERT_EQ(uploads.size(), 3u) << logs.text();
  EXPECT_EQ(uploads[0]["request_id"], "from-metadata");
  EXPECT_EQ(uploads[0]["preset"], "custom");
  EXPECT_EQ(uploads[1]["request_id"], "from-header");
  EXPECT_EQ(uploads[1]["preset"], "int8");
  EXPECT_EQ(uploads[2]["code"], "DATA_LOSS");
  EXPECT_EQ(uploads[2]["level"], "warning");

  auto ms = metrics::MetricsServer::Start("127.0.0.1", 0, m.registry());
  ASSERT_TRUE(ms.ok()) << ms.status();
  auto text = HttpGet("127.0.0.1", (*ms)->port(), "/metrics");
  ASSERT_TRUE(text.ok());
  const auto s = ParseSamples(*text);
  EXPECT_EQ(Sample(s, R"(kvwire_wire_bytes_total{preset="custom",role="decode"})"),
            static_cast<double>(frame->size()));
  EXPECT_EQ(Sample(s, R"(kvwire_wire_bytes_total{preset="int8",role="decode"})"),
            static_cast<double>(frame->size()));
  EXPECT_EQ(Sample(s, R"(kvwire_wire_bytes_total{preset="made-up",role="decode"})"), -1);
  EXPECT_EQ(Sample(s, R"(kvwire_requests_total{code="OK",role="decode"})"), 2);
  EXPECT_EQ(Sample(s, R"(kvwire_requests_total{code="DATA_LOSS",role="decode"})"), 1);
  EXPECT_EQ(Sample(s, R"(kvwire_streams_in_flight{role="decode"})"), 0);
  EXPECT_EQ(Sample(s, R"(kvwire_caches_held{role="decode"})"), 0);
  EXPECT_EQ(Sample(s, R"(kvwire_caches_held_bytes{role="decode"})"), 0);
}

}  // namespace
}  // namespace kvwire::nodes
