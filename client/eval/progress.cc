#include "client/eval/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace kvwire::eval {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string FormatProgress(int64_t done, int64_t total, int64_t done_this_run, double elapsed_seconds,
                           std::string_view label, int bar_width) {
  const double fraction = total > 0 ? std::clamp(static_cast<double>(done) / total, 0.0, 1.0) : 1.0;
  const int filled = static_cast<int>(fraction * bar_width);
  std::string bar(filled, '#');
  bar.append(bar_width - filled, '.');
  std::string rate = "-", eta = "?";
  if (done_this_run > 0 && elapsed_seconds > 0) {
    const double per_second = done_this_run / elapsed_seconds;
    rate = per_second >= 1 ? absl::StrFormat("%.1f/s", per_second)
                           : absl::StrFormat("%.1fs/it", 1 / per_second);
    eta = FormatDuration((total - done) / per_second);
  }
  return absl::StrFormat("[%s] %d/%d %3d%% %s ETA %s  %s", bar, done, total,
                         static_cast<int>(100 * fraction), rate, eta, label);
}

ProgressBar::ProgressBar(int64_t total, int64_t already_done, FILE* out, bool enabled)
    : total_(total),
      done_(already_done),
      out_(out),
      drawing_(enabled && out != nullptr && isatty(fileno(out))),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Advance(std::string_view label, int64_t n) {
  done_ += n;
  done_this_run_ += n;
  const auto now = std::chrono::steady_clock::now();
  // At most ten redraws a second, but always the last one.
  if (done_ < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  Draw(label);
}

void ProgressBar::Draw(std::string_view label) {
  if (!drawing_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string line = FormatProgress(done_, total_, done_this_run_, elapsed, label);
  if (line.size() > 118) line.resize(118);
  std::fprintf(out_, "\r\033[K%s", line.c_str());
  std::fflush(out_);
  drew_ = true;
}

void ProgressBar::Finish() {
  if (drew_) {
    std::fputc('\n', out_);
    std::fflush(out_);
    drew_ = false;
  }
}

}  // namespace kvwire::eval
