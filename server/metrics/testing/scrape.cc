#include "server/metrics/testing/scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvwire::metrics::testing {
namespace {

// name{b="2",a="1"} -> name{a="1",b="2"}: prometheus-cpp prints constant labels first.
std::string NormalizeSeries(const std::string& series) {
  const size_t open = series.find('{');
  if (open == std::string::npos || series.back() != '}') return series;
  std::map<std::string, std::string> labels;
  size_t i = open + 1;
  while (i < series.size() - 1) {
    const size_t eq = series.find('=', i);
    if (eq == std::string::npos || eq + 1 >= series.size() || series[eq + 1] != '"') break;
    std::string value;
    size_t j = eq + 2;
    for (; j < series.size() && series[j] != '"'; ++j) {
      if (series[j] == '\\' && j + 1 < series.size()) value += series[j++];
      value += series[j];
    }
    labels[series.substr(i, eq - i)] = value;
    i = j + 1;
    if (i < series.size() && series[i] == ',') ++i;
  }
  std::string out = series.substr(0, open) + "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, first ? "" : ",", k, "=\"", v, "\"");
    first = false;
  }
  return out + "}";
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad host ", host));
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host, ":", port));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    return absl::UnavailableError("send failed");
  }
  std::string response;
  char buf[8192];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) return absl::DeadlineExceededError("recv failed or timed out");
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  const size_t end = response.find("\r\n\r\n");
  if (end == std::string::npos) return absl::DataLossError("no HTTP header end");
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (status_line.find(" 200 ") == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("HTTP status: ", status_line));
  }
  return response.substr(end + 4);
}

absl::Status PromtoolCheckMetrics(std::string_view exposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    return absl::FailedPreconditionError(
        "promtool is not installed (scripts/setup.sh installs Debian's prometheus package)");
  }
  char tmpl[] = "/tmp/kvwire_promtool_XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) return absl::InternalError("mkstemp failed");
  close(fd);
  const std::string in = tmpl, out = in + ".out";
  std::ofstream(in, std::ios::binary) << exposition;
  const int rc = std::system(absl::StrCat("promtool check metrics < ", in, " > ", out, " 2>&1").c_str());
  std::stringstream text;
  text << std::ifstream(out).rdbuf();
  std::filesystem::remove(in);
  std::filesystem::remove(out);
  if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("promtool check metrics: ", text.str()));
  }
  return absl::OkStatus();
}

std::map<std::string, double> ParseSamples(std::string_view exposition) {
  std::map<std::string, double> samples;
  std::istringstream lines{std::string(exposition)};
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line.front() == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    double value = 0;
    if (!absl::SimpleAtod(line.substr(space + 1), &value)) continue;
    samples[NormalizeSeries(line.substr(0, space))] = value;
  }
  return samples;
}

}  // namespace kvwire::metrics::testing
