#include "server/transport/decode_service.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/metrics/log.h"
#include "server/transport/frame_receiver.h"
#include "server/transport/security.h"

namespace kvwire::transport {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The first value of client metadata `key`, or "".
std::string ClientMetadata(const grpc::CallbackServerContext* context, const char* key) {
  const auto& md = context->client_metadata();
  auto it = md.find(key);
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

uint64_t LayerBytes(const kvcodec::DecodedLayer& layer) {
  uint64_t n = 0;
  for (const kvcodec::ByteBuffer& b : layer.keys) n += b.size();
  for (const kvcodec::ByteBuffer& b : layer.values) n += b.size();
  return n;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void ConfigureServerBuilder(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 1);
  // gRPC enables SO_REUSEPORT by default, which lets a second node silently share a port that
  // one already serves; a node must instead fail to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
}

void ConfigureUploadChannel(grpc::ChannelArguments& args) {
  args.SetMaxSendMessageSize(kMaxReceiveMessageBytes);
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 1);
}

void FillFrameStats(const kvcodec::FrameInfo& info, std::span<const kvcodec::DecodedLayer> layers,
                    uint64_t wire_bytes, kvwire::v1::RequestStats* stats) {
  const uint64_t elements = info.shape.num_elements();
  uint64_t kept_elements = 0;
  for (const kvcodec::DecodedLayer& layer : layers) {
    for (const std::vector<int32_t>& head : layer.kept) {
      kept_elements += 2ull * head.size() * static_cast<uint64_t>(info.shape.head_dim);
    }
  }
  stats->set_raw_bytes(elements * 2);
  stats->set_wire_bytes(wire_bytes);
  stats->set_bits_per_element(elements ? 8.0 * static_cast<double>(wire_bytes) / elements : 0);
  stats->set_kept_fraction(elements ? static_cast<double>(kept_elements) / elements : 0);
  stats->set_num_layers(info.shape.num_layers);
  stats->set_num_tokens(info.shape.num_tokens);
}

// One upload. Reads are strictly sequential (one outstanding StartRead), so OnReadDone calls never
// overlap and need no lock. Deleted by gRPC's OnDone after Finish.
class DecodeNodeService::Reactor final : public grpc::ServerReadReactor<kvwire::v1::CacheUpload> {
 public:
  Reactor(DecodeNodeService* service, grpc::CallbackServerContext* context,
          kvwire::v1::GenerateReply* reply)
      : service_(service),
        context_(context),
        reply_(reply),
        metrics_(service->options_.metrics),
        request_id_(ClientMetadata(context, metrics::kRequestIdMetadata)),
        preset_(PresetLabel(ClientMetadata(context, kPresetMetadata))) {
    if (metrics_ != nullptr) stream_ = metrics_->TrackStream();
    if (absl::Status auth = CheckBearer(*context, service->options_.auth_token); !auth.ok()) {
      Fail(auth);
      return;
    }
    service_->watchdog_.Watch(this, [this] {
      idled_out_ = true;
      context_->TryCancel();
    });
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call was cancelled)
      EndOfStream();
      return;
    }
    service_->watchdog_.Touch(this);
    switch (message_.kind_case()) {
      case kvwire::v1::CacheUpload::kHeader:
        if (header_) {
          return Fail(absl::InvalidArgumentError("a second UploadHeader in one upload"));
        }
        return OnHeader();
      case kvwire::v1::CacheUpload::kChunk:
        if (!header_) {
          return Fail(absl::InvalidArgumentError(
              "the first message of an upload must be an UploadHeader"));
        }
        return OnChunk();
      default:
        return Fail(absl::InvalidArgumentError("CacheUpload with neither header nor chunk"));
    }
  }

  void OnDone() override { delete this; }

 private:
  // Bounded metric labels: known preset names, else "custom".
  std::string PresetLabel(const std::string& name) const {
    if (name.empty()) return "custom";
    if (service_->options_.preset_names.count(name) > 0) return name;
    for (const std::string& builtin : kvcodec::PresetNames()) {
      if (builtin == name) return name;
    }
    return "custom";
  }

  void OnHeader() {
    header_.emplace(std::move(*message_.mutable_header()));
    if (request_id_.empty()) request_id_ = header_->request_id();
    const std::string& node_fp = service_->options_.model_fingerprint;
    const std::string& header_fp = header_->model_fingerprint();
    if (!node_fp.empty() && !header_fp.empty() && node_fp != header_fp) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          "model fingerprint mismatch: upload is for '", header_fp, "', this node serves '",
          node_fp, "'")));
    }
    receiver_.emplace(service_->options_.limits, node_fp.empty() ? header_fp : node_fp,
                      [this](const kvcodec::FrameInfo& info) { return OnFrameHeader(info); });
    started_ = Clock::now();
    StartRead(&message_);
  }

  // The frame header is verified and no layer is rebuilt yet: the consumer may refuse the
  // upload now, and the whole rebuilt cache is reserved before any of it is allocated.
  absl::Status OnFrameHeader(const kvcodec::FrameInfo& info) {
    if (service_->options_.consumer != nullptr) {
      if (absl::Status s = service_->options_.consumer->CheckUpload(info, *header_); !s.ok()) {
        return s;
      }
    }
    const kvcodec::CacheShape& shape = info.shape;
    const uint64_t need = std::max<uint64_t>(1, shape.num_elements() * kvcodec::DTypeSize(shape.dtype));
    return CacheReservation::Make(service_->budget_.get(), need, &reservation_);
  }

  void OnChunk() {
    absl::Status s = receiver_->Accept(message_.chunk().frame_bytes());
    if (!s.ok()) return Fail(s);
    for (kvcodec::DecodedLayer& layer : receiver_->TakeLayers()) {
      held_bytes_ += LayerBytes(layer);
      layers_.push_back(std::move(layer));
    }
    if (metrics_ != nullptr && held_bytes_ > 0) {
      if (!hold_) hold_.emplace(metrics_->HoldCache());
      hold_->SetBytes(held_bytes_);
    }
    StartRead(&message_);
  }

  void EndOfStream() {
    service_->watchdog_.Forget(this);
    if (idled_out_) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          "the upload sent nothing for ", service_->watchdog_.timeout().count(),
          " ms; the decode node cancelled it")));
    }
    if (context_->IsCancelled()) {
      // The sender went away (killed, cancelled, deadline): nothing is generated and what was
      // received is freed with this reactor.
      return Fail(absl::CancelledError("upload cancelled by the sender before its end"));
    }
    if (!header_) {
      return Fail(absl::InvalidArgumentError("upload ended without an UploadHeader"));
    }
    absl::Status s = receiver_->Finish();
    if (!s.ok()) return Fail(s);
    const double transfer_seconds = SecondsSince(started_);
    // Generation may take long: run the consumer off the gRPC callback thread.
    service_->ConsumerStarted();
    std::thread([this, transfer_seconds] { Complete(transfer_seconds); }).detach();
  }

  void Complete(double transfer_seconds) {
    DecodeNodeService* service = service_;
    const kvcodec::FrameInfo& info = *receiver_->info();
    kvwire::v1::RequestStats stats;
    FillFrameStats(info, layers_, receiver_->bytes_received(), &stats);
    if (metrics_ != nullptr) {
      metrics_->ObserveStage(metrics::Stage::kTransfer, transfer_seconds);
      metrics_->ObserveStage(metrics::Stage::kRebuild, receiver_->decode_seconds());
      metrics_->ObserveFrame(preset_,
                             {.raw_bytes = stats.raw_bytes(),
                              .wire_bytes = stats.wire_bytes(),
                              .elements = info.shape.num_elements(),
                              .kept_ratio = stats.kept_fraction()},
                             /*with_ratios=*/false);
    }
    grpc::Status status;
    double decode_seconds = 0;
    if (context_->IsCancelled()) {
      // The client gave up (deadline, cancellation) while the frame was in flight.
      status = grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled before generation");
    } else if (service->options_.consumer == nullptr) {
      reply_->set_request_id(header_->request_id());
      reply_->set_codec_config(info.config_text);
      reply_->set_model_fingerprint(info.model_fingerprint);
    } else {
      const Clock::time_point decode_start = Clock::now();
      absl::StatusOr<kvwire::v1::GenerateReply> result =
          service->options_.consumer->Consume(info, std::move(layers_), *header_,
                                              CallInterrupt(context_));
      decode_seconds = SecondsSince(decode_start);
      if (metrics_ != nullptr) metrics_->ObserveStage(metrics::Stage::kDecode, decode_seconds);
      if (result.ok()) {
        *reply_ = *std::move(result);
        if (reply_->request_id().empty()) reply_->set_request_id(header_->request_id());
      } else {
        status = ToGrpcStatus(result.status());
      }
    }
    if (status.ok()) {
      // Prefill-side figures, then the consumer's, then what the transport measured.
      kvwire::v1::RequestStats merged = header_->prefill_stats();
      merged.MergeFrom(reply_->stats());
      merged.MergeFrom(stats);
      merged.set_transfer_seconds(transfer_seconds);
      merged.set_rebuild_seconds(receiver_->decode_seconds());
      *reply_->mutable_stats() = std::move(merged);
      if (metrics_ != nullptr) metrics_->AddTokens(0, reply_->stats().generated_tokens());
    }
    // The consumer has returned: its copy of the cache is gone, and ours was moved into it.
    hold_.reset();
    Done(status, {{"wire_bytes", stats.wire_bytes()},
                  {"raw_bytes", stats.raw_bytes()},
                  {"kept_ratio", stats.kept_fraction()},
                  {"layers", stats.num_layers()},
                  {"tokens", stats.num_tokens()},
                  {"transfer_seconds", transfer_seconds},
                  {"rebuild_seconds", receiver_->decode_seconds()},
                  {"decode_seconds", decode_seconds},
                  {"generated_tokens", status.ok() ? reply_->stats().generated_tokens() : 0}});
    // `this` may be deleted from here on.
    service->ConsumerDone();
  }

  void Fail(const absl::Status& status) {
    Done(ToGrpcStatus(status), {{"bytes_received", receiver_ ? receiver_->bytes_received() : 0}});
  }

  // Counts and logs the call's outcome, then finishes it (after which `this` may be deleted).
  void Done(const grpc::Status& status, nlohmann::json fields) {
    const auto code = static_cast<absl::StatusCode>(status.error_code());
    service_->watchdog_.Forget(this);
    if (metrics_ != nullptr) metrics_->CountRequest(code);
    stream_.Release();
    hold_.reset();
    reservation_.Reset();
    fields["role"] = "decode";
    fields["request_id"] = request_id_;
    fields["preset"] = preset_;
    fields["code"] = absl::StatusCodeToString(code);
    if (!status.ok()) fields["message"] = status.error_message();
    metrics::LogEvent(status.ok() ? metrics::LogLevel::kInfo : metrics::LogLevel::kWarning,
                      "upload_done", fields);
    Finish(status);
  }

  DecodeNodeService* const service_;
  grpc::CallbackServerContext* const context_;
  kvwire::v1::GenerateReply* const reply_;
  kvwire::v1::CacheUpload message_;
  std::optional<kvwire::v1::UploadHeader> header_;
  std::optional<FrameReceiver> receiver_;
  std::vector<kvcodec::DecodedLayer> layers_;
  Clock::time_point started_;
  metrics::NodeMetrics* const metrics_;
  std::string request_id_;  // from x-request-id, else the upload header's
  const std::string preset_;
  metrics::NodeMetrics::Scoped stream_;
  std::optional<metrics::NodeMetrics::CacheHold> hold_;
  uint64_t held_bytes_ = 0;
  CacheReservation reservation_;    // the rebuilt cache's bytes, from the frame header on
  std::atomic<bool> idled_out_ = false;  // cancelled by the watchdog
};

Interrupt CallInterrupt(const grpc::ServerContextBase* context) {
  return [context]() -> absl::Status {
    // A passed deadline is checked first: gRPC also marks such a call cancelled, and the
    // deadline is the more useful reason to log.
    if (std::chrono::system_clock::now() > context->deadline()) {
      return absl::DeadlineExceededError("the call's deadline passed");
    }
    if (context->IsCancelled()) {
      return absl::CancelledError("the client cancelled the call or went away");
    }
    return absl::OkStatus();
  };
}

DecodeNodeService::DecodeNodeService(DecodeServiceOptions options)
    : options_(std::move(options)),
      budget_(options_.cache_budget ? options_.cache_budget
                                    : std::make_shared<CacheBudget>(options_.max_cache_bytes)),
      watchdog_(options_.upload_idle_timeout) {}

DecodeNodeService::~DecodeNodeService() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return running_consumers_ == 0; });
}

uint64_t DecodeNodeService::reserved_cache_bytes() const { return budget_->reserved(); }

void DecodeNodeService::ConsumerStarted() {
  std::lock_guard<std::mutex> lock(mu_);
  ++running_consumers_;
}

void DecodeNodeService::ConsumerDone() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--running_consumers_ == 0) idle_.notify_all();
}

grpc::ServerReadReactor<kvwire::v1::CacheUpload>* DecodeNodeService::Generate(
    grpc::CallbackServerContext* context, kvwire::v1::GenerateReply* reply) {
  return new Reactor(this, context, reply);
}

absl::Status SendFrame(kvwire::v1::DecodeNode::StubInterface& stub,
                       const kvwire::v1::UploadHeader& header, std::span<const uint8_t> frame,
                       size_t chunk_size, std::chrono::system_clock::time_point deadline,
                       kvwire::v1::GenerateReply* reply,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
  if (chunk_size == 0 || chunk_size > kMaxSliceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_size must be in [1, ", kMaxSliceBytes, "], got ", chunk_size));
  }
  grpc::ClientContext context;
  context.set_deadline(deadline);
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  kvwire::v1::GenerateReply local_reply;
  std::unique_ptr<grpc::ClientWriterInterface<kvwire::v1::CacheUpload>> writer =
      stub.Generate(&context, &local_reply);
  kvwire::v1::CacheUpload message;
  *message.mutable_header() = header;
  bool open = writer->Write(message);
  for (size_t offset = 0; open && offset < frame.size(); offset += chunk_size) {
    const size_t n = std::min(chunk_size, frame.size() - offset);
    message.mutable_chunk()->set_frame_bytes(frame.data() + offset, n);
    open = writer->Write(message);
  }
  // A failed Write means the server already finished the call (e.g. a rejected chunk); Finish
  // reports its status.
  if (open) writer->WritesDone();
  absl::Status status = FromGrpcStatus(writer->Finish());
  if (status.ok() && reply != nullptr) *reply = std::move(local_reply);
  return status;
}

}  // namespace kvwire::transport
