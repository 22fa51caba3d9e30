#include "server/transport/frame_upload.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/transport/decode_service.h"
#include "server/transport/frame_receiver.h"

namespace kvwire::transport {

using Clock = std::chrono::steady_clock;

double LinkPacer::SecondsFor(uint64_t bytes) const {
  return bits_per_second_ > 0 ? 8.0 * static_cast<double>(bytes) / bits_per_second_ : 0;
}

void LinkPacer::Pace(size_t bytes) {
  if (bits_per_second_ <= 0) return;
  const Clock::time_point start = std::max(Clock::now(), busy_until_);
  busy_until_ = start + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(SecondsFor(bytes)));
  std::this_thread::sleep_until(busy_until_);
}

absl::StatusOr<std::unique_ptr<FrameUpload>> FrameUpload::Start(
    kvwire::v1::DecodeNode::StubInterface& stub, const kvwire::v1::UploadHeader& header,
    FrameUploadOptions options) {
  if (options.slice_bytes == 0 || options.slice_bytes > kMaxSliceBytes) {
    return absl::InvalidArgumentError(absl::StrCat("slice size must be in [1, ", kMaxSliceBytes,
                                                   "], got ", options.slice_bytes));
  }
  std::unique_ptr<FrameUpload> upload(new FrameUpload());
  upload->options_ = std::move(options);
  upload->pacer_ = LinkPacer(upload->options_.link_bits_per_second);
  upload->context_.set_deadline(upload->options_.deadline);
  for (const auto& [key, value] : upload->options_.metadata) upload->context_.AddMetadata(key, value);
  upload->writer_ = stub.Generate(&upload->context_, &upload->reply_);
  kvwire::v1::CacheUpload first;
  *first.mutable_header() = header;
  if (!upload->writer_->Write(first)) upload->broken_ = true;
  upload->sender_ = std::thread([u = upload.get()] { u->SendLoop(); });
  return upload;
}

FrameUpload::~FrameUpload() {
  if (sender_.joinable()) Cancel();
}

void FrameUpload::SendLoop() {
  kvwire::v1::CacheUpload message;
  for (;;) {
    std::vector<uint8_t> bytes;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return closed_ || broken_ || !queue_.empty(); });
      if (broken_ || queue_.empty()) return;  // failed, or closed and drained
      bytes = std::move(queue_.front());
      queue_.pop_front();
    }
    for (size_t offset = 0; offset < bytes.size(); offset += options_.slice_bytes) {
      const size_t n = std::min(options_.slice_bytes, bytes.size() - offset);
      const Clock::time_point start = Clock::now();
      pacer_.Pace(n);
      message.mutable_chunk()->set_frame_bytes(bytes.data() + offset, n);
      const bool ok = writer_->Write(message);
      const Clock::time_point end = Clock::now();
      std::lock_guard<std::mutex> lock(mu_);
      send_seconds_ += std::chrono::duration<double>(end - start).count();
      if (!ok) {
        broken_ = true;
        cv_.notify_all();
        return;
      }
      bytes_sent_ += n;
      last_write_ = end;
    }
  }
}

bool FrameUpload::Push(std::vector<uint8_t> bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_ || closed_) return false;
    if (!bytes.empty()) queue_.push_back(std::move(bytes));
  }
  cv_.notify_all();
  return true;
}

absl::Status FrameUpload::Finish(kvwire::v1::GenerateReply* reply) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
  if (sender_.joinable()) sender_.join();
  if (finished_) return absl::FailedPreconditionError("upload already finished");
  finished_ = true;
  // A failed Write means the server already finished the call; Finish reports its status.
  if (!broken_) writer_->WritesDone();
  absl::Status status = FromGrpcStatus(writer_->Finish());
  if (status.ok() && reply != nullptr) *reply = std::move(reply_);
  return status;
}

void FrameUpload::Cancel() {
  context_.TryCancel();
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    broken_ = true;
  }
  cv_.notify_all();
  if (sender_.joinable()) sender_.join();
  if (!finished_) {
    finished_ = true;
    writer_->Finish();  // reaps the cancelled call
  }
}

uint64_t FrameUpload::bytes_sent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_sent_;
}

double FrameUpload::send_seconds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return send_seconds_;
}

Clock::time_point FrameUpload::last_write() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_write_;
}

}  // namespace kvwire::transport
