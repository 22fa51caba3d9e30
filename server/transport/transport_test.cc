// DecodeNode service end to end: a real gRPC server on 127.0.0.1 (OS-chosen port) in process,
// frames encoded from synthetic caches, uploaded with SendFrame.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"
#include "server/transport/decode_service.h"
#include "server/transport/frame_upload.h"
#include "server/transport/security.h"
#include "server/transport/frame_receiver.h"

namespace kvwire::transport {
namespace {

using ::testing::HasSubstr;
using kvwire::v1::CacheUpload;
using kvwire::v1::GenerateReply;
using kvwire::v1::UploadHeader;

constexpr char kModel[] = "model-A";

kvcodec::CacheShape Shape(int layers = 4) {
  return {.num_layers = layers, .num_kv_heads = 2, .head_dim = 64, .num_tokens = 200,
          .dtype = kvcodec::DType::kBFloat16};
}

std::vector<uint8_t> Encode(const kvcodec::SyntheticCache& cache, std::string_view config_text,
                            std::string_view fingerprint = kModel) {
  auto config = kvcodec::CodecConfig::Parse(config_text);
  EXPECT_TRUE(config.ok()) << config.status();
  auto frame = kvcodec::EncodeFrame(cache.shape, *config, fingerprint, cache.positions,
                                    cache.views(), kvcodec::Selection::KeepAll(cache.shape));
  EXPECT_TRUE(frame.ok()) << frame.status();
  return *frame;
}

std::chrono::system_clock::time_point In(std::chrono::milliseconds ms) {
  return std::chrono::system_clock::now() + ms;
}

// Records what it is given; optionally works for `delay` to simulate generation, in 5 ms steps
// that ask the interrupt in between, as the engine's decode loop does.
class RecordingConsumer : public CacheConsumer {
 public:
  explicit RecordingConsumer(std::chrono::milliseconds delay = {}) : delay_(delay) {}

  absl::StatusOr<GenerateReply> Consume(const kvcodec::FrameInfo& info,
                                        std::vector<kvcodec::DecodedLayer> layers,
                                        const UploadHeader& header,
                                        const Interrupt& interrupt) override {
    ++started_;
    const auto until = std::chrono::steady_clock::now() + delay_;
    while (std::chrono::steady_clock::now() < until) {
      if (absl::Status s = interrupt(); !s.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        interrupted_.push_back(s);
        return s;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_;
    last_info_ = info;
    last_layers_ = std::move(layers);
    GenerateReply reply;
    reply.set_text(absl::StrCat("answer for ", header.request_id()));
    reply.mutable_stats()->set_generated_tokens(3);
    return reply;
  }

  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<kvcodec::DecodedLayer> last_layers() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_layers_;
  }
  int started() const { return started_.load(); }
  // The statuses that stopped work early, one per interrupted call.
  std::vector<absl::Status> interrupted() {
    std::lock_guard<std::mutex> lock(mu_);
    return interrupted_;
  }

 private:
  const std::chrono::milliseconds delay_;
  std::mutex mu_;
  int calls_ = 0;
  kvcodec::FrameInfo last_info_;
  std::vector<kvcodec::DecodedLayer> last_layers_;
  std::vector<absl::Status> interrupted_;
  std::atomic<int> started_{0};
};

// A DecodeNode on 127.0.0.1:<free port> and a stub connected to it.
class TestServer {
 public:
  explicit TestServer(DecodeServiceOptions options) : service_(std::move(options)) {
    grpc::ServerBuilder builder;
    ConfigureServerBuilder(builder);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port_, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = kvwire::v1::DecodeNode::NewStub(channel_);
  }
  ~TestServer() { server_->Shutdown(In(std::chrono::milliseconds(2000))); }

  kvwire::v1::DecodeNode::Stub& stub() { return *stub_; }
  DecodeNodeService& service() { return service_; }

 private:
  DecodeNodeService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<kvwire::v1::DecodeNode::Stub> stub_;
};

UploadHeader Header(std::string request_id, std::string fingerprint = kModel) {
  UploadHeader header;
  header.set_request_id(std::move(request_id));
  header.set_model_fingerprint(std::move(fingerprint));
  header.set_prompt_tokens(200);
  header.mutable_prefill_stats()->set_prefill_seconds(0.25);
  return header;
}

TEST(FrameReceiverTest, AcceptsSlicesCutAnywhere) {
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 1);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int4;entropy=rans;chunk=2");
  FrameReceiver receiver({}, kModel);
  int layers = 0;
  for (size_t off = 0; off < frame.size(); off += 777) {
    const size_t n = std::min<size_t>(777, frame.size() - off);
    ASSERT_TRUE(receiver.Accept(std::span(frame).subspan(off, n)).ok());
    layers += static_cast<int>(receiver.TakeLayers().size());
  }
  EXPECT_TRUE(receiver.complete());
  EXPECT_TRUE(receiver.Finish().ok());
  EXPECT_EQ(layers, 4);
  EXPECT_EQ(receiver.layers_taken(), 4);
  EXPECT_EQ(receiver.bytes_received(), frame.size());
}

// Regression: a slice carrying the frame header and its chunks was rebuilt whole before the
// owner saw the header, so a budget reserved "at the header" came after a 1 GiB rebuild.
TEST(FrameReceiverTest, HeaderCheckRunsBeforeAnyChunkIsRebuilt) {
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 1);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int8;chunk=1");
  for (size_t slice : {frame.size(), size_t{1}, size_t{7}, size_t{300}}) {
    int checks = 0;
    FrameReceiver refusing({}, kModel, [&](const kvcodec::FrameInfo& info) {
      ++checks;
      EXPECT_EQ(info.shape.num_layers, 4);
      return absl::ResourceExhaustedError("no room");
    });
    absl::Status s;
    for (size_t off = 0; off < frame.size() && s.ok(); off += slice) {
      s = refusing.Accept(std::span(frame).subspan(off, std::min(slice, frame.size() - off)));
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << slice;
    EXPECT_EQ(checks, 1) << slice;
    EXPECT_TRUE(refusing.TakeLayers().empty()) << slice;
    EXPECT_EQ(refusing.Accept(std::span(frame).first(1)).code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(refusing.Finish().code(), absl::StatusCode::kResourceExhausted);

    checks = 0;
    FrameReceiver accepting({}, kModel, [&](const kvcodec::FrameInfo&) {
      ++checks;
      return absl::OkStatus();
    });
    int layers = 0;
    for (size_t off = 0; off < frame.size(); off += slice) {
      ASSERT_TRUE(accepting.Accept(std::span(frame).subspan(off, std::min(slice, frame.size() - off))).ok());
      layers += static_cast<int>(accepting.TakeLayers().size());
    }
    EXPECT_EQ(checks, 1);
    EXPECT_EQ(layers, 4);
    EXPECT_TRUE(accepting.Finish().ok());
  }
  // A corrupt header is the decoder's error, and the check never runs.
  std::vector<uint8_t> bad = frame;
  bad[12] ^= 0x40;
  FrameReceiver receiver({}, kModel, [](const kvcodec::FrameInfo&) -> absl::Status {
    ADD_FAILURE() << "checked a corrupt header";
    return absl::OkStatus();
  });
  EXPECT_EQ(receiver.Accept(bad).code(), absl::StatusCode::kDataLoss);
}

TEST(DecodeServiceTest, ValidRawFrameArrivesBitExact) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 2);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:raw");

  GenerateReply reply;
  absl::Status s = SendFrame(server.stub(), Header("req-1"), frame, 10000,
                             In(std::chrono::seconds(5)), &reply);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(consumer.calls(), 1);
  EXPECT_EQ(reply.text(), "answer for req-1");
  EXPECT_EQ(reply.request_id(), "req-1");
  EXPECT_EQ(reply.stats().wire_bytes(), frame.size());
  EXPECT_EQ(reply.stats().raw_bytes(), cache.shape.num_elements() * 2);
  EXPECT_EQ(reply.stats().num_layers(), 4);
  EXPECT_EQ(reply.stats().num_tokens(), 200);
  EXPECT_DOUBLE_EQ(reply.stats().kept_fraction(), 1.0);
  EXPECT_NEAR(reply.stats().bits_per_element(), 8.0 * frame.size() / cache.shape.num_elements(),
              1e-12);
  EXPECT_GT(reply.stats().bits_per_element(), 16.0);  // raw bf16 plus framing
  EXPECT_EQ(reply.stats().generated_tokens(), 3);     // the consumer's
  EXPECT_DOUBLE_EQ(reply.stats().prefill_seconds(), 0.25);  // the prefill node's
  EXPECT_GT(reply.stats().transfer_seconds(), 0);

  const std::vector<kvcodec::DecodedLayer> layers = consumer.last_layers();
  ASSERT_EQ(layers.size(), 4u);
  const size_t row = 64 * 2;                       // head_dim * sizeof(bf16)
  const size_t head_bytes = row * 200;
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(layers[l].layer, l);
    ASSERT_EQ(layers[l].keys.size(), 2u);
    for (int h = 0; h < 2; ++h) {
      ASSERT_EQ(layers[l].keys[h].size(), head_bytes);
      ASSERT_EQ(layers[l].values[h].size(), head_bytes);
      EXPECT_EQ(0, std::memcmp(layers[l].keys[h].data(), cache.keys[l].data() + h * head_bytes,
                               head_bytes)) << "layer " << l << " head " << h << " keys";
      EXPECT_EQ(0, std::memcmp(layers[l].values[h].data(),
                               cache.values[l].data() + h * head_bytes, head_bytes))
          << "layer " << l << " head " << h << " values";
    }
  }
}

TEST(DecodeServiceTest, WithoutConsumerRepliesWithFrameStatistics) {
  TestServer server({.model_fingerprint = kModel});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 3);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int4;entropy=rans");
  GenerateReply reply;
  absl::Status s = SendFrame(server.stub(), Header("req-2"), frame, kMaxSliceBytes,
                             In(std::chrono::seconds(5)), &reply);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(reply.request_id(), "req-2");
  EXPECT_EQ(reply.model_fingerprint(), kModel);
  EXPECT_THAT(reply.codec_config(), HasSubstr("int4"));
  EXPECT_EQ(reply.stats().wire_bytes(), frame.size());
  EXPECT_LT(reply.stats().bits_per_element(), 8.0);
}

TEST(DecodeServiceTest, CorruptChunkIsDataLossAndNotConsumed) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 4);
  std::vector<uint8_t> frame = Encode(cache, "plan=*:int8");
  frame[frame.size() / 2] ^= 0x40;
  absl::Status s = SendFrame(server.stub(), Header("bad"), frame, 4096,
                             In(std::chrono::seconds(5)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("checksum mismatch"));
  EXPECT_EQ(consumer.calls(), 0);
}

TEST(DecodeServiceTest, StreamCutBeforeTrailerIsDataLoss) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 5);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int8");
  absl::Status s = SendFrame(server.stub(), Header("cut"), std::span(frame).first(frame.size() - 5),
                             4096, In(std::chrono::seconds(5)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("truncated"));
  EXPECT_EQ(consumer.calls(), 0);
}

TEST(DecodeServiceTest, WrongFingerprintIsFailedPrecondition) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 6);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int8", "model-B");
  // Rejected from the upload header, before any chunk.
  absl::Status s = SendFrame(server.stub(), Header("fp1", "model-B"), frame, 4096,
                             In(std::chrono::seconds(5)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  // A header that does not say: rejected from the frame's own header.
  s = SendFrame(server.stub(), Header("fp2", ""), frame, 4096, In(std::chrono::seconds(5)),
                nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("fingerprint"));
  EXPECT_EQ(consumer.calls(), 0);
}

TEST(DecodeServiceTest, LimitsAreResourceExhausted) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel,
                     .limits = {.max_layers = 2},
                     .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 7);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int8");
  absl::Status s = SendFrame(server.stub(), Header("big"), frame, 4096,
                             In(std::chrono::seconds(5)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(consumer.calls(), 0);
}

TEST(DecodeServiceTest, MissingHeaderIsInvalidArgument) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 8);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:int8");

  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(5)));
  GenerateReply reply;
  auto writer = server.stub().Generate(&context, &reply);
  CacheUpload message;
  message.mutable_chunk()->set_frame_bytes(frame.data(), frame.size());
  if (writer->Write(message)) writer->WritesDone();
  grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  // An empty stream has no header either.
  grpc::ClientContext context2;
  context2.set_deadline(In(std::chrono::seconds(5)));
  auto writer2 = server.stub().Generate(&context2, &reply);
  writer2->WritesDone();
  status = writer2->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(consumer.calls(), 0);
}

TEST(DecodeServiceTest, ChunkSizeIsChecked) {
  TestServer server({.model_fingerprint = kModel});
  const std::vector<uint8_t> frame(10);
  EXPECT_EQ(SendFrame(server.stub(), Header("x"), frame, 0, In(std::chrono::seconds(1)), nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendFrame(server.stub(), Header("x"), frame, kMaxSliceBytes + 1,
                      In(std::chrono::seconds(1)), nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DecodeServiceTest, EightConcurrentClientsSucceed) {
  RecordingConsumer consumer(std::chrono::milliseconds(20));
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  constexpr int kClients = 8;
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < kClients; ++i) {
    frames.push_back(Encode(kvcodec::MakeSyntheticCache(Shape(), 100 + i),
                            i % 2 ? "plan=*:int4;entropy=rans" : "plan=*:raw;entropy=zstd"));
  }
  std::vector<absl::Status> results(kClients);
  std::vector<GenerateReply> replies(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      results[i] = SendFrame(server.stub(), Header(absl::StrCat("c", i)), frames[i],
                             1000 + 997 * i, In(std::chrono::seconds(8)), &replies[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
    EXPECT_EQ(replies[i].text(), absl::StrCat("answer for c", i));
    EXPECT_EQ(replies[i].stats().wire_bytes(), frames[i].size());
  }
  EXPECT_EQ(consumer.calls(), kClients);
}

TEST(DecodeServiceTest, DeadlineShorterThanTheWorkIsDeadlineExceeded) {
  RecordingConsumer consumer(std::chrono::milliseconds(800));
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 9), "plan=*:int8");
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = SendFrame(server.stub(), Header("slow"), frame, 4096,
                             In(std::chrono::milliseconds(200)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(700));
}

// The work itself stops once the deadline passes or the sender cancels, not only the reply:
// the consumer sees the interrupt within a step and the cache memory is returned.
TEST(DecodeServiceTest, DeadlineOrCancelDuringGenerationStopsTheConsumer) {
  RecordingConsumer consumer(std::chrono::seconds(30));
  const uint64_t cache_bytes = Shape().num_elements() * 2;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer,
                     .max_cache_bytes = 4 * cache_bytes});
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 9), "plan=*:int8");
  auto wait_for_interrupts = [&](size_t n) {
    for (int i = 0; i < 400 && consumer.interrupted().size() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return consumer.interrupted();
  };

  absl::Status late = SendFrame(server.stub(), Header("late"), frame, 4096,
                                In(std::chrono::milliseconds(300)), nullptr);
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  std::vector<absl::Status> seen = wait_for_interrupts(1);
  ASSERT_EQ(seen.size(), 1u);
  // gRPC may report the passed deadline as a cancellation first; either way the work stopped.
  EXPECT_TRUE(seen[0].code() == absl::StatusCode::kDeadlineExceeded ||
              seen[0].code() == absl::StatusCode::kCancelled)
      << seen[0];

  grpc::ClientContext context;
  context.set_deadline(In(std::chrono::seconds(60)));
  GenerateReply reply;
  auto writer = server.stub().Generate(&context, &reply);
  CacheUpload message;
  *message.mutable_header() = Header("abandoned");
  ASSERT_TRUE(writer->Write(message));
  for (size_t at = 0; at < frame.size(); at += 4096) {
    message.mutable_chunk()->set_frame_bytes(frame.data() + at, std::min<size_t>(4096, frame.size() - at));
    ASSERT_TRUE(writer->Write(message));
  }
  writer->WritesDone();
  // Cancel once generation has begun.
  for (int i = 0; i < 400 && consumer.started() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(consumer.started(), 2);
  context.TryCancel();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  seen = wait_for_interrupts(2);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].code(), absl::StatusCode::kCancelled) << seen[1];
  for (int i = 0; i < 200 && server.service().reserved_cache_bytes() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server.service().reserved_cache_bytes(), 0u);
  EXPECT_EQ(consumer.calls(), 0);
}

// Six uploads at once against a budget of two and a half caches: the ones over the budget fail
// with RESOURCE_EXHAUSTED before anything is rebuilt, the others are generated from, and the
// budget is whole again afterwards.
TEST(DecodeServiceTest, CacheMemoryLimitRejectsUploadsBeyondIt) {
  RecordingConsumer consumer(std::chrono::milliseconds(800));
  const uint64_t cache_bytes = Shape().num_elements() * 2;  // bf16
  TestServer server({.model_fingerprint = kModel,
                     .consumer = &consumer,
                     .max_cache_bytes = cache_bytes * 5 / 2});
  constexpr int kClients = 6;
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 3), "plan=*:int4");
  std::vector<absl::Status> results(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      results[i] = SendFrame(server.stub(), Header(absl::StrCat("m", i)), frame, 65536,
                             In(std::chrono::seconds(20)), nullptr);
    });
  }
  for (std::thread& t : threads) t.join();
  int ok = 0, exhausted = 0;
  for (const absl::Status& s : results) {
    if (s.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
      EXPECT_THAT(s.message(), HasSubstr("memory limit")) << s;
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(exhausted, 1);
  EXPECT_EQ(ok + exhausted, kClients);
  EXPECT_EQ(consumer.calls(), ok);
  EXPECT_EQ(server.service().reserved_cache_bytes(), 0u);
  // One upload larger than the whole budget never fits, also when the whole frame comes in one
  // message (the reservation is made before the message's chunks are rebuilt).
  TestServer small({.model_fingerprint = kModel, .consumer = &consumer, .max_cache_bytes = 1000});
  for (size_t slice : {size_t{65536}, frame.size()}) {
    EXPECT_EQ(SendFrame(small.stub(), Header("big"), frame, slice, In(std::chrono::seconds(5)), nullptr)
                  .code(),
              absl::StatusCode::kResourceExhausted);
  }
}

// The consumer sees the frame header before the transfer and can refuse the upload there.
class RefusingConsumer : public RecordingConsumer {
 public:
  absl::Status CheckUpload(const kvcodec::FrameInfo& info, const UploadHeader&) const override {
    ++checks_;
    if (info.shape.num_layers != 2) return absl::InvalidArgumentError("this model has 2 layers");
    return absl::OkStatus();
  }
  mutable std::atomic<int> checks_{0};
};

TEST(DecodeServiceTest, ConsumerRefusesAShapeAtTheHeader) {
  RefusingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(4), 3), "plan=*:int4");
  const absl::Status s = SendFrame(server.stub(), Header("four"), frame, frame.size(),
                                   In(std::chrono::seconds(5)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("this model has 2 layers"));
  EXPECT_EQ(consumer.started(), 0);
  const std::vector<uint8_t> two = Encode(kvcodec::MakeSyntheticCache(Shape(2), 3), "plan=*:int4");
  EXPECT_TRUE(SendFrame(server.stub(), Header("two"), two, 4096, In(std::chrono::seconds(5)), nullptr).ok());
  EXPECT_EQ(consumer.checks_.load(), 2);
  EXPECT_EQ(consumer.calls(), 1);
}

// Regression: a sender that stopped mid-upload without a deadline held its cache reservation
// until it went away, starving every other request.
TEST(DecodeServiceTest, StalledUploadIsCancelledAndFreesItsReservation) {
  RecordingConsumer consumer;
  const uint64_t cache_bytes = Shape().num_elements() * 2;
  TestServer server({.model_fingerprint = kModel,
                     .consumer = &consumer,
                     .max_cache_bytes = cache_bytes * 3 / 2,
                     .upload_idle_timeout = std::chrono::milliseconds(1000)});
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 3), "plan=*:int4");
  grpc::ClientContext context;  // no deadline
  GenerateReply reply;
  auto writer = server.stub().Generate(&context, &reply);
  CacheUpload message;
  *message.mutable_header() = Header("stalled");
  ASSERT_TRUE(writer->Write(message));
  message.mutable_chunk()->set_frame_bytes(frame.data(), frame.size() / 2);  // header and a bit
  ASSERT_TRUE(writer->Write(message));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.service().reserved_cache_bytes() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server.service().reserved_cache_bytes(), cache_bytes);
  // Now silent: the node cancels the call and the budget is whole again.
  const grpc::Status stalled = writer->Finish();
  EXPECT_FALSE(stalled.ok());
  // The client may learn of the cancellation before the node's reactor has finished.
  while (server.service().reserved_cache_bytes() != 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server.service().reserved_cache_bytes(), 0u);
  EXPECT_EQ(consumer.started(), 0);
  // A sender that keeps sending is not cut off, however long the upload takes in total.
  absl::Status paced;
  {
    grpc::ClientContext ctx;
    GenerateReply r;
    auto w = server.stub().Generate(&ctx, &r);
    CacheUpload m;
    *m.mutable_header() = Header("paced");
    ASSERT_TRUE(w->Write(m));
    const size_t step = frame.size() / 8 + 1;
    for (size_t off = 0; off < frame.size(); off += step) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      m.mutable_chunk()->set_frame_bytes(frame.data() + off, std::min(step, frame.size() - off));
      ASSERT_TRUE(w->Write(m));
    }
    w->WritesDone();
    paced = FromGrpcStatus(w->Finish());
  }
  EXPECT_TRUE(paced.ok()) << paced;
  EXPECT_EQ(consumer.calls(), 1);
}

TEST(SecurityTest, TokenFilesHoldVisibleAsciiOnly) {
  const std::string path = ::testing::TempDir() + "/kvwire_token";
  auto write = [&](std::string_view text) { std::ofstream(path, std::ios::binary) << text; };
  write("  s3cr3t-token_+/=\n");
  EXPECT_EQ(ReadTokenFile(path).value_or(""), "s3cr3t-token_+/=");
  // Regression: an inner newline made gRPC abort the client on invalid metadata.
  for (std::string_view bad : {std::string_view("abc\ndef"), std::string_view("ab cd"),
                               std::string_view("caf\xc3\xa9")}) {
    write(bad);
    auto token = ReadTokenFile(path);
    EXPECT_EQ(token.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(token.status().message(), HasSubstr("visible ASCII")) << bad;
  }
  write(" \n");
  EXPECT_EQ(ReadTokenFile(path).status().code(), absl::StatusCode::kInvalidArgument);
}

// A frame pushed in pieces while it is "produced" arrives bit-exact; a paced link takes at least
// bytes / rate.
TEST(FrameUploadTest, StreamedPiecesArriveAndThePacerHoldsTheRate) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer});
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(Shape(), 4);
  const std::vector<uint8_t> frame = Encode(cache, "plan=*:raw");
  constexpr double kRate = 32e6;  // bits per second
  const auto start = std::chrono::steady_clock::now();
  auto upload = FrameUpload::Start(server.stub(), Header("s"),
                                   {.slice_bytes = 50000,
                                    .deadline = In(std::chrono::seconds(20)),
                                    .link_bits_per_second = kRate});
  ASSERT_TRUE(upload.ok()) << upload.status();
  for (size_t offset = 0; offset < frame.size(); offset += 77777) {
    const size_t n = std::min<size_t>(77777, frame.size() - offset);
    ASSERT_TRUE((*upload)->Push(std::vector<uint8_t>(frame.begin() + offset,
                                                     frame.begin() + offset + n)));
  }
  GenerateReply reply;
  ASSERT_TRUE((*upload)->Finish(&reply).ok());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 8.0 * frame.size() / kRate * 0.95);
  EXPECT_EQ((*upload)->bytes_sent(), frame.size());
  EXPECT_GE((*upload)->send_seconds(), 8.0 * frame.size() / kRate * 0.9);
  EXPECT_EQ(reply.stats().wire_bytes(), frame.size());
  ASSERT_EQ(consumer.calls(), 1);
  const auto layers = consumer.last_layers();
  ASSERT_EQ(layers.size(), 4u);
  EXPECT_EQ(layers[0].keys[0].size(), 200u * 64 * 2);
}

// A sender that goes away mid-frame: nothing is generated and the cache budget is returned.
TEST(FrameUploadTest, CancelledMidStreamFreesAndGeneratesNothing) {
  RecordingConsumer consumer;
  const uint64_t cache_bytes = Shape().num_elements() * 2;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer,
                     .max_cache_bytes = cache_bytes});
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 5), "plan=*:raw");
  auto upload = FrameUpload::Start(server.stub(), Header("gone"),
                                   {.slice_bytes = 4096, .deadline = In(std::chrono::seconds(20))});
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Push(std::vector<uint8_t>(frame.begin(), frame.begin() + frame.size() / 2)));
  // Wait until the decode node has the frame header (and so a reservation).
  for (int i = 0; i < 200 && server.service().reserved_cache_bytes() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server.service().reserved_cache_bytes(), cache_bytes);
  (*upload)->Cancel();
  for (int i = 0; i < 200 && server.service().reserved_cache_bytes() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server.service().reserved_cache_bytes(), 0u);
  EXPECT_EQ(consumer.calls(), 0);
  // The whole budget is free for the next upload.
  EXPECT_TRUE(SendFrame(server.stub(), Header("next"), frame, 65536, In(std::chrono::seconds(10)),
                        nullptr)
                  .ok());
}

// A bearer token: uploads without it (or with another) are UNAUTHENTICATED and nothing is
// consumed; with it they go through.
TEST(SecurityTest, BearerTokenIsRequiredWhenSet) {
  RecordingConsumer consumer;
  TestServer server({.model_fingerprint = kModel, .consumer = &consumer, .auth_token = "s3cret"});
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 6), "plan=*:int8");
  absl::Status s = SendFrame(server.stub(), Header("none"), frame, 65536, In(std::chrono::seconds(5)), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  s = SendFrame(server.stub(), Header("wrong"), frame, 65536, In(std::chrono::seconds(5)), nullptr,
                {{kAuthorizationMetadata, BearerValue("s3cre")}});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_EQ(consumer.calls(), 0);
  s = SendFrame(server.stub(), Header("right"), frame, 65536, In(std::chrono::seconds(5)), nullptr,
                {{kAuthorizationMetadata, BearerValue("s3cret")}});
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(consumer.calls(), 1);
}

// TLS with client certificates (testdata/: a self-signed certificate for localhost and
// 127.0.0.1, valid until 2126, serves as the server's, the client's and the CA): a TLS client
// with a certificate uploads, a plain-text client and a TLS client without a certificate cannot.
TEST(SecurityTest, MutualTlsUploads) {
  const std::filesystem::path dir = std::filesystem::path(__FILE__).parent_path() / "testdata";
  const std::string cert = (dir / "test_cert.pem").string(), key = (dir / "test_key.pem").string();
  SecurityOptions server_security{.tls_cert_file = cert, .tls_key_file = key,
                                  .tls_client_ca_file = cert};
  auto server_credentials = MakeServerCredentials(server_security);
  ASSERT_TRUE(server_credentials.ok()) << server_credentials.status();
  RecordingConsumer consumer;
  DecodeNodeService service({.model_fingerprint = kModel, .consumer = &consumer});
  grpc::ServerBuilder builder;
  ConfigureServerBuilder(builder);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", *server_credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const std::vector<uint8_t> frame = Encode(kvcodec::MakeSyntheticCache(Shape(), 7), "plan=*:int4");
  auto upload_with = [&](std::shared_ptr<grpc::ChannelCredentials> credentials) {
    auto stub = kvwire::v1::DecodeNode::NewStub(grpc::CreateChannel(address, credentials));
    return SendFrame(*stub, Header("tls"), frame, 65536, In(std::chrono::seconds(5)), nullptr);
  };
  auto mutual = MakeUpstreamCredentials({.tls_cert_file = cert, .tls_key_file = key,
                                         .upstream_ca_file = cert});
  ASSERT_TRUE(mutual.ok()) << mutual.status();
  EXPECT_TRUE(upload_with(*mutual).ok());
  EXPECT_FALSE(upload_with(grpc::InsecureChannelCredentials()).ok());
  auto no_cert = MakeUpstreamCredentials({.upstream_ca_file = cert});
  ASSERT_TRUE(no_cert.ok());
  EXPECT_FALSE(upload_with(*no_cert).ok());
  EXPECT_EQ(consumer.calls(), 1);
  server->Shutdown(In(std::chrono::seconds(2)));

  EXPECT_EQ(MakeServerCredentials({.tls_cert_file = cert}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeServerCredentials({.tls_client_ca_file = cert}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeUpstreamCredentials({.upstream_ca_file = "/nonexistent/ca.pem"}).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvwire::transport
