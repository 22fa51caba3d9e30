#include "bench/transfer_bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"
#include "proto/kvwire.grpc.pb.h"
#include "proto/kvwire.pb.h"
#include "server/transport/decode_service.h"
#include "server/transport/frame_receiver.h"

namespace kvwire {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Gbps(uint64_t bytes, double seconds) { return seconds > 0 ? bytes / seconds / 1e9 : 0; }

absl::Status Errno(const std::string& what) {
  return absl::InternalError(what + ": " + std::strerror(errno));
}

// Receives CacheUpload streams and only counts the CacheChunk bytes: the transport's cost without
// verification or rebuilding.
class DrainService final : public kvwire::v1::DecodeNode::CallbackService {
 public:
  grpc::ServerReadReactor<kvwire::v1::CacheUpload>* Generate(
      grpc::CallbackServerContext* context, kvwire::v1::GenerateReply* reply) override {
    return new Reactor(reply);
  }

 private:
  class Reactor final : public grpc::ServerReadReactor<kvwire::v1::CacheUpload> {
   public:
    explicit Reactor(kvwire::v1::GenerateReply* reply) : reply_(reply) { StartRead(&message_); }
    void OnReadDone(bool ok) override {
      if (!ok) {  // the client half-closed
        reply_->mutable_stats()->set_wire_bytes(bytes_);
        Finish(grpc::Status::OK);
        return;
      }
      if (message_.has_chunk()) bytes_ += message_.chunk().frame_bytes().size();
      StartRead(&message_);
    }
    void OnDone() override { delete this; }

   private:
    kvwire::v1::GenerateReply* reply_;
    kvwire::v1::CacheUpload message_;
    uint64_t bytes_ = 0;
  };
};

// An in-process gRPC server on 127.0.0.1 with one DecodeNode service, and a stub to it.
struct LoopbackServer {
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<kvwire::v1::DecodeNode::Stub> stub;

  absl::Status Start(grpc::Service* service) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    transport::ConfigureServerBuilder(builder);
    builder.RegisterService(service);
    server = builder.BuildAndStart();
    if (server == nullptr || port == 0) return absl::InternalError("gRPC server did not start");
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                  grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError("gRPC channel did not connect");
    }
    stub = kvwire::v1::DecodeNode::NewStub(channel);
    return absl::OkStatus();
  }
  ~LoopbackServer() {
    if (server != nullptr) server->Shutdown(std::chrono::system_clock::now());
  }
};

absl::StatusOr<double> GrpcTransfer(kvwire::v1::DecodeNode::Stub& stub,
                                    std::span<const uint8_t> frame, size_t chunk) {
  kvwire::v1::UploadHeader header;
  header.set_request_id("bench-transfer");
  header.set_frame_bytes(frame.size());
  kvwire::v1::GenerateReply reply;
  const auto start = Clock::now();
  absl::Status status = transport::SendFrame(
      stub, header, frame, chunk, std::chrono::system_clock::now() + std::chrono::seconds(120),
      &reply);
  const double seconds = Seconds(start);
  if (!status.ok()) return status;
  if (reply.stats().wire_bytes() != frame.size()) {
    return absl::DataLossError("receiver counted " + std::to_string(reply.stats().wire_bytes()) +
                               " bytes of a " + std::to_string(frame.size()) + "-byte frame");
  }
  return seconds;
}

bool ReadAll(int fd, void* data, size_t n) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    const ssize_t got = ::recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

bool WriteAll(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t put = ::send(fd, p, n, MSG_NOSIGNAL);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    p += put;
    n -= static_cast<size_t>(put);
  }
  return true;
}

// A TCP connection over 127.0.0.1 whose far end is a thread that reads each transfer (an 8-byte
// length, then that many bytes) into a buffer and acknowledges it with one byte.
class TcpLoopback {
 public:
  absl::Status Start() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd_ < 0) return Errno("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return Errno("bind");
    }
    if (::listen(listen_fd_, 1) != 0) return Errno("listen");
    socklen_t len = sizeof(addr);
    if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return Errno("getsockname");
    }
    send_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (send_fd_ < 0) return Errno("socket");
    if (::connect(send_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return Errno("connect");
    }
    recv_fd_ = ::accept(listen_fd_, nullptr, nullptr);
    if (recv_fd_ < 0) return Errno("accept");
    reader_ = std::thread([this] { ReadLoop(); });
    return absl::OkStatus();
  }

  absl::StatusOr<double> Transfer(std::span<const uint8_t> frame, size_t chunk) {
    const uint64_t size = frame.size();
    const auto start = Clock::now();
    if (!WriteAll(send_fd_, &size, sizeof(size))) return Errno("send");
    for (size_t offset = 0; offset < frame.size(); offset += chunk) {
      if (!WriteAll(send_fd_, frame.data() + offset, std::min(chunk, frame.size() - offset))) {
        return Errno("send");
      }
    }
    uint8_t ack = 0;
    if (!ReadAll(send_fd_, &ack, 1)) return absl::InternalError("TCP receiver closed early");
    const double seconds = Seconds(start);
    if (ack != 1) return absl::DataLossError("TCP receiver failed");
    return seconds;
  }

  ~TcpLoopback() {
    if (send_fd_ >= 0) ::shutdown(send_fd_, SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
    for (int fd : {send_fd_, recv_fd_, listen_fd_}) {
      if (fd >= 0) ::close(fd);
    }
  }

 private:
  void ReadLoop() {
    for (;;) {
      uint64_t size = 0;
      if (!ReadAll(recv_fd_, &size, sizeof(size))) return;
      if (size > capacity_) {
        buffer_ = std::make_unique_for_overwrite<uint8_t[]>(size);
        capacity_ = size;
      }
      const uint8_t ack = ReadAll(recv_fd_, buffer_.get(), size) ? 1 : 0;
      if (!WriteAll(recv_fd_, &ack, 1) || ack == 0) return;
    }
  }

  int listen_fd_ = -1, send_fd_ = -1, recv_fd_ = -1;
  std::thread reader_;
  std::unique_ptr<uint8_t[]> buffer_;
  uint64_t capacity_ = 0;
};

template <typename F>
absl::StatusOr<double> BestOf(int reps, F&& transfer) {
  double best = 0;
  for (int i = 0; i < reps; ++i) {
    absl::StatusOr<double> s = transfer();
    if (!s.ok()) return s.status();
    if (i == 0 || *s < best) best = *s;
  }
  return best;
}

std::string ChunkName(size_t bytes) {
  if (bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes % (1 << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

}  // namespace

double TransferRow::grpc_verify_gbps() const { return Gbps(frame_bytes, grpc_verify_s); }
double TransferRow::grpc_drain_gbps() const { return Gbps(frame_bytes, grpc_drain_s); }
double TransferRow::tcp_gbps() const { return Gbps(frame_bytes, tcp_s); }

absl::StatusOr<TransferReport> MeasureTransfer(const TransferBenchOptions& o) {
  if (o.reps < 1) return absl::InvalidArgumentError("reps must be >= 1");
  for (size_t chunk : o.chunk_sizes) {
    if (chunk == 0 || chunk > transport::kMaxSliceBytes) {
      return absl::InvalidArgumentError("chunk sizes must be in [1, " +
                                        std::to_string(transport::kMaxSliceBytes) + "]");
    }
  }
  TransferReport report;
  report.config = o.bytes > 0 ? "full" : o.preset;
  report.layers = o.layers;
  report.kv_heads = o.kv_heads;
  report.head_dim = o.head_dim;
  report.reps = o.reps;
  kvcodec::CacheShape shape{.num_layers = o.layers,
                            .num_kv_heads = o.kv_heads,
                            .head_dim = o.head_dim,
                            .num_tokens = o.tokens,
                            .dtype = kvcodec::DType::kBFloat16};
  if (o.bytes > 0) {
    const uint64_t per_token = 2ull * o.layers * o.kv_heads * o.head_dim * 2;
    shape.num_tokens = static_cast<int>(std::max<uint64_t>(1, o.bytes / per_token));
  }
  report.tokens = shape.num_tokens;
  report.raw_bytes = shape.num_elements() * 2;

  absl::StatusOr<kvcodec::CodecConfig> config = kvcodec::Preset(report.config);
  if (!config.ok()) config = kvcodec::CodecConfig::Parse(report.config);
  if (!config.ok()) return config.status();
  std::vector<uint8_t> frame;
  {
    const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, o.seed);
    const auto views = cache.views();
    absl::StatusOr<std::vector<uint8_t>> encoded =
        kvcodec::EncodeFrame(shape, *config, "bench", cache.positions, views,
                             kvcodec::Selection::KeepAll(shape));
    if (!encoded.ok()) return encoded.status();
    frame = *std::move(encoded);
  }
  report.frame_bytes = frame.size();

  transport::DecodeNodeService verify_service(transport::DecodeServiceOptions{});
  DrainService drain_service;
  LoopbackServer verify_server, drain_server;
  if (absl::Status s = verify_server.Start(&verify_service); !s.ok()) return s;
  if (absl::Status s = drain_server.Start(&drain_service); !s.ok()) return s;
  TcpLoopback tcp;
  if (absl::Status s = tcp.Start(); !s.ok()) return s;

  // Warm-up: connections, flow-control windows, receive buffers.
  const size_t warm_chunk = *std::max_element(o.chunk_sizes.begin(), o.chunk_sizes.end());
  for (auto* stub : {verify_server.stub.get(), drain_server.stub.get()}) {
    if (auto s = GrpcTransfer(*stub, frame, warm_chunk); !s.ok()) return s.status();
  }
  if (auto s = tcp.Transfer(frame, warm_chunk); !s.ok()) return s.status();

  for (size_t chunk : o.chunk_sizes) {
    TransferRow row;
    row.chunk_bytes = chunk;
    row.frame_bytes = frame.size();
    auto verify = BestOf(o.reps, [&] { return GrpcTransfer(*verify_server.stub, frame, chunk); });
    if (!verify.ok()) return verify.status();
    auto drain = BestOf(o.reps, [&] { return GrpcTransfer(*drain_server.stub, frame, chunk); });
    if (!drain.ok()) return drain.status();
    auto tcp_s = BestOf(o.reps, [&] { return tcp.Transfer(frame, chunk); });
    if (!tcp_s.ok()) return tcp_s.status();
    row.grpc_verify_s = *verify;
    row.grpc_drain_s = *drain;
    row.tcp_s = *tcp_s;
    report.rows.push_back(row);
  }
  return report;
}

int RunTransferBench(const TransferBenchOptions& o) {
  absl::StatusOr<TransferReport> report = MeasureTransfer(o);
  if (!report.ok()) {
    std::fprintf(stderr, "bench transfer: %s\n", report.status().ToString().c_str());
    return 1;
  }
  const auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  if (o.json) {
    nlohmann::json j;
    j["config"] = report->config;
    j["shape"] = {{"tokens", report->tokens},
                  {"layers", report->layers},
                  {"kv_heads", report->kv_heads},
                  {"head_dim", report->head_dim}};
    j["raw_bytes"] = report->raw_bytes;
    j["frame_bytes"] = report->frame_bytes;
    j["reps"] = report->reps;
    j["rows"] = nlohmann::json::array();
    for (const TransferRow& r : report->rows) {
      j["rows"].push_back({{"chunk_bytes", r.chunk_bytes},
                           {"grpc_verify_gbps", r.grpc_verify_gbps()},
                           {"grpc_drain_gbps", r.grpc_drain_gbps()},
                           {"tcp_gbps", r.tcp_gbps()},
                           {"verify_over_tcp", ratio(r.grpc_verify_gbps(), r.tcp_gbps())},
                           {"drain_over_tcp", ratio(r.grpc_drain_gbps(), r.tcp_gbps())}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("frame: %s, %d tokens x %d layers x %d kv heads x %d, raw %.1f MB, frame %.1f MB; "
              "loopback, best of %d; GB = 1e9 bytes\n",
              report->config.c_str(), report->tokens, report->layers, report->kv_heads,
              report->head_dim, report->raw_bytes / 1e6, report->frame_bytes / 1e6, report->reps);
  std::printf("%-8s %16s %15s %9s %11s %10s\n", "chunk", "gRPC verify GB/s", "gRPC drain GB/s",
              "TCP GB/s", "verify/TCP", "drain/TCP");
  for (const TransferRow& r : report->rows) {
    std::printf("%-8s %16.2f %15.2f %9.2f %11.2f %10.2f\n", ChunkName(r.chunk_bytes).c_str(),
                r.grpc_verify_gbps(), r.grpc_drain_gbps(), r.tcp_gbps(),
                ratio(r.grpc_verify_gbps(), r.tcp_gbps()), ratio(r.grpc_drain_gbps(), r.tcp_gbps()));
  }
  std::printf("verify: DecodeNodeService checks and rebuilds every chunk (no consumer); drain: a "
              "service that only counts CacheChunk bytes; TCP: send()/recv() of the same bytes\n");
  return 0;
}

}  // namespace kvwire
