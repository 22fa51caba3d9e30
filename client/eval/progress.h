// A one-line progress bar with rate and ETA for long evaluation runs. It redraws in place only on
// a terminal; elsewhere (logs, CI, tests) it stays silent, so output files and pipes carry no
// control characters.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace kvwire::eval {

// "[#######.......]  42/100  42%  1.3/s  ETA 0:45  <label>". The ETA extrapolates the rate of
// this run's own items (items resumed from a log do not count as fast work).
std::string FormatProgress(int64_t done, int64_t total, int64_t done_this_run, double elapsed_seconds,
                           std::string_view label, int bar_width = 24);
// "1:05:03", "4:07", "0:09"; "?" for a negative or non-finite value.
std::string FormatDuration(double seconds);

class ProgressBar {
 public:
  // Draws on `out` only if it is a terminal (isatty) and `enabled`.
  ProgressBar(int64_t total, int64_t already_done, FILE* out = stderr, bool enabled = true);
  ~ProgressBar();  // ends the line if anything was drawn
  void Advance(std::string_view label, int64_t n = 1);
  void Finish();
  bool drawing() const { return drawing_; }

 private:
  void Draw(std::string_view label);
  int64_t total_;
  int64_t done_;
  int64_t done_this_run_ = 0;
  FILE* out_;
  bool drawing_;
  bool drew_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace kvwire::eval
