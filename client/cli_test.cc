// End to end through the real `kvwire` binary: writes a tiny random Qwen2-style checkpoint with a
// byte-level tokenizer, starts `kvwire serve decode` and `kvwire serve prefill` as processes on
// OS-chosen loopback ports, runs `kvwire generate` and `kvwire health`, then SIGTERMs the nodes.
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/modelio/random_checkpoint.h"
#include "server/metrics/testing/scrape.h"
#include "server/nodes/testing/tiny_model.h"

namespace kvwire {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// A temporary directory holding the tiny model, removed with the object.
class TinyModelDir {
 public:
  TinyModelDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cli_test_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return;
    root_ = tmpl;
    ok_ = nodes::testing::WriteTinyModel(root_ / "model", nodes::testing::TinyConfig(2)).ok();
  }
  ~TinyModelDir() {
    if (!root_.empty()) std::filesystem::remove_all(root_);
  }
  bool ok() const { return ok_; }
  std::string model() const { return (root_ / "model").string(); }
  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
  bool ok_ = false;
};

// A child process with its stdout and stderr on pipes. Killed (SIGKILL) and reaped on
// destruction if still running.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(err[1], 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~Child() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      int status;
      waitpid(pid_, &status, 0);
    }
    if (out_ >= 0) close(out_);
    if (err_ >= 0) close(err_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& out() const { return out_text_; }
  const std::string& err() const { return err_text_; }

  // Reads until stdout holds a full line or `deadline`; returns the first line ("" on timeout).
  std::string FirstLine(Clock::time_point deadline) {
    while (out_text_.find('\n') == std::string::npos && Clock::now() < deadline) {
      if (!Pump(deadline)) break;
    }
    const size_t nl = out_text_.find('\n');
    return nl == std::string::npos ? "" : out_text_.substr(0, nl);
  }

  // Reads until stderr (stdout) contains `needle` or `deadline`; whether it does.
  bool WaitForErr(const std::string& needle, Clock::time_point deadline) {
    return WaitFor(err_text_, needle, deadline);
  }
  bool WaitForOut(const std::string& needle, Clock::time_point deadline) {
    return WaitFor(out_text_, needle, deadline);
  }

  // Drains the pipes and waits for exit until `deadline`. The exit code, or -1 on timeout or a
  // death by signal.
  int Wait(Clock::time_point deadline) {
    while ((out_ >= 0 || err_ >= 0) && Clock::now() < deadline) {
      if (!Pump(deadline)) break;
    }
    while (Clock::now() < deadline || !exited_) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (Clock::now() >= deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  bool WaitFor(const std::string& text, const std::string& needle, Clock::time_point deadline) {
    while (text.find(needle) == std::string::npos && Clock::now() < deadline) {
      if (!Pump(deadline)) break;
    }
    return text.find(needle) != std::string::npos;
  }

  // One poll round; false when both pipes are closed.
  bool Pump(Clock::time_point deadline) {
    pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    if (out_ < 0 && err_ < 0) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    const int n = poll(fds, 2, static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(left.count(), 200))));
    if (n <= 0) return true;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t got = read(fds[i].fd, buf, sizeof buf);
      int& fd = i == 0 ? out_ : err_;
      if (got <= 0) {
        close(fd);
        fd = -1;
      } else {
        (i == 0 ? out_text_ : err_text_).append(buf, static_cast<size_t>(got));
      }
    }
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  bool exited_ = false;
  std::string out_text_, err_text_;
};

// Parses "kvwire <role> node listening on 127.0.0.1:PORT model=..." into "127.0.0.1:PORT".
std::string ListenAddress(const std::string& line, const std::string& role) {
  std::smatch m;
  const std::regex re("^kvwire " + role + " node listening on (127\\.0\\.0\\.1:[0-9]+) model=(\\S+)$");
  if (!std::regex_match(line, m, re)) return "";
  return m[1].str();
}

Clock::time_point In(int seconds) { return Clock::now() + std::chrono::seconds(seconds); }

TEST(CliTest, ServeGenerateHealthShutdown) {
  const std::string kvwire = KVWIRE_BINARY;
  const TinyModelDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string model = dir.model();

  Child decode({kvwire, "serve", "decode", "--listen", "127.0.0.1:0", "--model", model,
                "--threads", "1", "--max-new-tokens", "8"});
  ASSERT_TRUE(decode.started());
  const std::string decode_line = decode.FirstLine(In(60));
  const std::string decode_addr = ListenAddress(decode_line, "decode");
  ASSERT_FALSE(decode_addr.empty()) << "stdout: " << decode.out() << "\nstderr: " << decode.err();

  {
    // Regression: gRPC's default SO_REUSEPORT let a second node share a served port.
    Child twin({kvwire, "serve", "decode", "--listen", decode_addr, "--model", model, "--threads", "1"});
    ASSERT_TRUE(twin.started());
    EXPECT_EQ(twin.Wait(In(60)), 1) << "stdout: " << twin.out() << "\nstderr: " << twin.err();
  }

  Child prefill({kvwire, "serve", "prefill", "--listen", "127.0.0.1:0", "--model", model,
                 "--threads", "1", "--decode", decode_addr});
  ASSERT_TRUE(prefill.started());
  const std::string prefill_line = prefill.FirstLine(In(60));
  const std::string prefill_addr = ListenAddress(prefill_line, "prefill");
  ASSERT_FALSE(prefill_addr.empty()) << "stdout: " << prefill.out() << "\nstderr: " << prefill.err();

  {
    Child gen({kvwire, "generate", "--prefill", prefill_addr, "--context",
               "The keeper's daughter rowed out to the reef and brought back nine sailors.",
               "--question", "Who rowed out?", "--preset", "full", "--max-new-tokens", "6",
               "--timeout", "60", "--json"});
    ASSERT_EQ(gen.Wait(In(90)), 0) << "stdout: " << gen.out() << "\nstderr: " << gen.err();
    const json j = json::parse(gen.out(), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << gen.out();
    EXPECT_TRUE(j.contains("text") && j["text"].is_string()) << gen.out();
    ASSERT_TRUE(j.contains("stats") && j["stats"].is_object()) << gen.out();
    EXPECT_GT(j["stats"]["raw_bytes"].get<uint64_t>(), 0u);
    EXPECT_GT(j["stats"]["wire_bytes"].get<uint64_t>(), 0u);
    EXPECT_GT(j["stats"]["generated_tokens"].get<int>(), 0);
    EXPECT_DOUBLE_EQ(j["stats"]["kept_fraction"].get<double>(), 1.0);
  }
  {
    Child gen({kvwire, "generate", "--prefill", prefill_addr, "--context", "some context",
               "--question", "a question?", "--preset", "full", "--max-new-tokens", "3",
               "--timeout", "60"});
    ASSERT_EQ(gen.Wait(In(90)), 0) << "stdout: " << gen.out() << "\nstderr: " << gen.err();
    EXPECT_THAT(gen.out(), HasSubstr("bits/element="));
    EXPECT_THAT(gen.out(), HasSubstr("tokens/s"));
  }
  {
    Child gen({kvwire, "generate", "--prefill", prefill_addr, "--context", "some context",
               "--preset", "nosuch", "--timeout", "30"});
    EXPECT_EQ(gen.Wait(In(60)), 1) << "stdout: " << gen.out() << "\nstderr: " << gen.err();
    EXPECT_THAT(gen.err(), HasSubstr("INVALID_ARGUMENT"));
  }
  {
    // Regression: invalid UTF-8 reached the wire and the server dropped the call with no message.
    Child gen({kvwire, "generate", "--prefill", prefill_addr, "--context", "caf\xC3",
               "--question", "ok?", "--timeout", "30"});
    EXPECT_EQ(gen.Wait(In(30)), 2) << "stdout: " << gen.out() << "\nstderr: " << gen.err();
    EXPECT_THAT(gen.err(), HasSubstr("--context is not valid UTF-8 (first bad byte at offset 3)"));
  }
  {
    // Rate control reaches the node, which has no ladder; a codec with it is a usage error.
    Child gen({kvwire, "generate", "--prefill", prefill_addr, "--context", "some context",
               "--byte-budget", "100000", "--timeout", "30"});
    EXPECT_EQ(gen.Wait(In(30)), 1) << "stdout: " << gen.out() << "\nstderr: " << gen.err();
    EXPECT_THAT(gen.err(), HasSubstr("FAILED_PRECONDITION: rate control needs a quality ladder"));
    Child both({kvwire, "generate", "--prefill", prefill_addr, "--context", "some context",
                "--byte-budget", "100000", "--preset", "int8"});
    EXPECT_EQ(both.Wait(In(30)), 2) << "stdout: " << both.out() << "\nstderr: " << both.err();
    Child fit({kvwire, "generate", "--prefill", prefill_addr, "--context", "c", "--require-fit"});
    EXPECT_EQ(fit.Wait(In(30)), 2) << "stdout: " << fit.out() << "\nstderr: " << fit.err();
  }
  {
    Child gen({kvwire, "generate", "--prefill", prefill_addr, "--context", "x", "--bogus-flag"});
    EXPECT_EQ(gen.Wait(In(30)), 2) << "stdout: " << gen.out() << "\nstderr: " << gen.err();
  }
  for (const std::string& target : {decode_addr, prefill_addr}) {
    Child health({kvwire, "health", "--target", target, "--timeout", "10"});
    EXPECT_EQ(health.Wait(In(30)), 0) << "stdout: " << health.out() << "\nstderr: " << health.err();
  }
  {
    // Port 1 of the loopback interface: nothing listens.
    Child health({kvwire, "health", "--target", "127.0.0.1:1", "--timeout", "2"});
    EXPECT_EQ(health.Wait(In(30)), 1) << "stdout: " << health.out() << "\nstderr: " << health.err();
  }

  ASSERT_EQ(kill(prefill.pid(), SIGTERM), 0);
  EXPECT_EQ(prefill.Wait(In(15)), 0) << "stderr: " << prefill.err();
  ASSERT_EQ(kill(decode.pid(), SIGTERM), 0);
  EXPECT_EQ(decode.Wait(In(15)), 0) << "stderr: " << decode.err();
}

// A prefill node killed (SIGKILL) while its upload is in flight: the client gets UNAVAILABLE,
// the decode node logs the upload as cancelled, generates nothing and stays healthy. The decode
// node reads its options from a --config file; the prefill node's --link-mbps keeps the upload
// slow enough to be cut. Both nodes require a bearer token (--auth-token-file): a client without
// it is UNAUTHENTICATED, health checks need none.
TEST(CliTest, PrefillKilledMidStreamDecodeGeneratesNothing) {
  const std::string kvwire = KVWIRE_BINARY;
  const TinyModelDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string model = dir.model();
  const std::string config = (dir.root() / "decode.toml").string();
  const std::string token = (dir.root() / "token").string();
  std::ofstream(token) << "  let-me-in\n";
  std::ofstream(config) << "model = \"" << model << "\"\nlisten = \"127.0.0.1:0\"\nthreads = 1\n"
                        << "max-cache-mib = 64\nmax-new-tokens = 4\nauth-token-file = \"" << token
                        << "\"\n";
  {
    const std::string bad = (dir.root() / "bad.toml").string();
    std::ofstream(bad) << "model = \"" << model << "\"\nno-such-option = 3\n";
    Child serve({kvwire, "serve", "decode", "--config", bad});
    EXPECT_EQ(serve.Wait(In(30)), 2) << serve.err();
    EXPECT_THAT(serve.err(), HasSubstr("no-such-option"));
    // Regression: a negative budget was accepted and wrapped around to a tiny one.
    std::ofstream(bad) << "model = \"" << model << "\"\nmax-cache-mib = -5\n";
    Child negative({kvwire, "serve", "decode", "--config", bad});
    EXPECT_EQ(negative.Wait(In(30)), 2) << negative.err();
    EXPECT_THAT(negative.err(), HasSubstr("max-cache-mib"));
    Child flag({kvwire, "serve", "decode", "--model", model, "--max-cache-mib", "-1"});
    EXPECT_EQ(flag.Wait(In(30)), 2) << flag.err();
  }
  {
    // Regression: a token with an inner newline made gRPC abort the client (invalid metadata).
    const std::string bad_token = (dir.root() / "bad_token").string();
    std::ofstream(bad_token) << "let\nme-in";
    Child gen({kvwire, "generate", "--prefill", "127.0.0.1:1", "--token-file", bad_token, "--context", "x"});
    EXPECT_EQ(gen.Wait(In(30)), 1) << gen.err();
    EXPECT_THAT(gen.err(), HasSubstr("visible ASCII"));
  }
  Child decode({kvwire, "serve", "decode", "--config", config});
  const std::string decode_addr = ListenAddress(decode.FirstLine(In(60)), "decode");
  ASSERT_FALSE(decode_addr.empty()) << decode.out() << decode.err();
  Child prefill({kvwire, "serve", "prefill", "--listen", "127.0.0.1:0", "--model", model,
                 "--threads", "1", "--decode", decode_addr, "--link-mbps", "0.1",
                 "--auth-token-file", token});
  const std::string prefill_addr = ListenAddress(prefill.FirstLine(In(60)), "prefill");
  ASSERT_FALSE(prefill_addr.empty()) << prefill.out() << prefill.err();

  {
    Child anonymous({kvwire, "generate", "--prefill", prefill_addr, "--context", "some context",
                     "--preset", "full", "--timeout", "30"});
    EXPECT_EQ(anonymous.Wait(In(60)), 1) << anonymous.out() << anonymous.err();
    EXPECT_THAT(anonymous.err(), HasSubstr("UNAUTHENTICATED"));
  }
  // ~150 tokens, float32 "full": ~150 KB, 12 s at 0.1 Mbit/s.
  Child gen({kvwire, "generate", "--prefill", prefill_addr, "--token-file", token, "--context",
             "The keeper's daughter rowed out to the reef and brought back nine sailors. The town "
             "named the new pier after her, and children race boats there every spring.",
             "--question", "Who rowed out?", "--preset", "full", "--timeout", "60"});
  // Kill the prefill node once the decode node has the upload open (its streams gauge).
  ASSERT_TRUE(decode.WaitForOut("/metrics\n", In(30))) << decode.out();
  const std::smatch port = [&] {
    std::smatch m;
    std::regex_search(decode.out(), m, std::regex("metrics on http://127\\.0\\.0\\.1:([0-9]+)/metrics"));
    return m;
  }();
  ASSERT_EQ(port.size(), 2u) << decode.out();
  const int metrics_port = std::stoi(port[1].str());
  bool streaming = false;
  for (const Clock::time_point end = In(30); !streaming && Clock::now() < end;) {
    auto text = kvwire::metrics::testing::HttpGet("127.0.0.1", metrics_port, "/metrics");
    streaming = text.ok() &&
                kvwire::metrics::testing::ParseSamples(*text)["kvwire_streams_in_flight{role=\"decode\"}"] == 1;
    if (!streaming) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(streaming) << "the upload never reached the decode node";
  ASSERT_EQ(kill(prefill.pid(), SIGKILL), 0);
  EXPECT_EQ(gen.Wait(In(30)), 1) << gen.out() << gen.err();
  EXPECT_THAT(gen.err(), HasSubstr("UNAVAILABLE"));
  EXPECT_TRUE(decode.WaitForErr("\"code\":\"CANCELLED\"", In(20))) << decode.err();
  EXPECT_THAT(decode.err(), HasSubstr("upload_done"));
  EXPECT_THAT(decode.err(), ::testing::Not(HasSubstr("\"code\":\"OK\"")));
  {
    // Nothing of the cut upload is held any more.
    auto text = kvwire::metrics::testing::HttpGet("127.0.0.1", metrics_port, "/metrics");
    ASSERT_TRUE(text.ok()) << text.status();
    auto samples = kvwire::metrics::testing::ParseSamples(*text);
    EXPECT_EQ(samples.at("kvwire_streams_in_flight{role=\"decode\"}"), 0);
    EXPECT_EQ(samples.at("kvwire_caches_held{role=\"decode\"}"), 0);
    EXPECT_EQ(samples.at("kvwire_caches_held_bytes{role=\"decode\"}"), 0);
    EXPECT_EQ(samples.at("kvwire_requests_total{code=\"CANCELLED\",role=\"decode\"}"), 1);
    EXPECT_EQ(samples.at("kvwire_generated_tokens_total{role=\"decode\"}"), 0);
  }
  Child health({kvwire, "health", "--target", decode_addr, "--timeout", "10"});
  EXPECT_EQ(health.Wait(In(30)), 0) << health.err();
  ASSERT_EQ(kill(decode.pid(), SIGTERM), 0);
  EXPECT_EQ(decode.Wait(In(15)), 0) << decode.err();
}

// Regression: scout-path presets without --scout were skipped one by one, and a demo of only
// those printed empty tables and exited 0.
TEST(CliTest, DemoOfScoutPresetsNeedsAScout) {
  Child demo({KVWIRE_BINARY, "demo", "--prefill", "127.0.0.1:1", "--preset", "text", "--preset",
              "scout-snapkv25"});
  EXPECT_EQ(demo.Wait(In(30)), 2) << demo.err();
  EXPECT_THAT(demo.err(), HasSubstr("give --scout"));
}

// Every option of the service commands has a description in --help, and the exit codes are
// stated there.
TEST(CliTest, HelpExplainsEveryOptionAndExitCodes) {
  const std::vector<std::vector<std::string>> commands = {
      {"serve", "decode"}, {"serve", "prefill"}, {"serve", "scout"}, {"generate"}, {"health"},
      {"bench", "e2e"}};
  for (const auto& command : commands) {
    std::vector<std::string> args = {KVWIRE_BINARY};
    args.insert(args.end(), command.begin(), command.end());
    args.push_back("--help");
    Child help(args);
    ASSERT_EQ(help.Wait(In(30)), 0) << help.err();
    const std::string& text = help.out();
    if (command[0] != "bench") {
      EXPECT_THAT(text, HasSubstr("Exit codes:")) << command[0];
    }
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    const std::regex option_line("^\\s+(-\\w, )?--[a-z0-9-]+.*$");
    // "  --name TYPE [default]   description", or a long name with the description on the next,
    // deeper indented line.
    const std::regex described("^\\s+\\S.*\\S\\s{2,}\\S.*$");
    const std::regex continuation("^\\s{20,}\\S.*$");
    int options = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (!std::regex_match(lines[i], option_line)) continue;
      ++options;
      const bool next_describes = i + 1 < lines.size() &&
                                  std::regex_match(lines[i + 1], continuation) &&
                                  !std::regex_match(lines[i + 1], option_line);
      EXPECT_TRUE(std::regex_match(lines[i], described) || next_describes)
          << command.back() << ": " << lines[i];
    }
    EXPECT_GT(options, 3) << text;
  }
}

TEST(CliTest, ServeBadModelDirFails) {
  Child serve({KVWIRE_BINARY, "serve", "decode", "--listen", "127.0.0.1:0", "--model",
               "/nonexistent/kvwire-model"});
  ASSERT_TRUE(serve.started());
  EXPECT_EQ(serve.Wait(In(60)), 1) << "stdout: " << serve.out() << "\nstderr: " << serve.err();
  EXPECT_FALSE(serve.err().empty());
}

TEST(CliTest, ServePortInUseFails) {
  const TinyModelDir dir;
  ASSERT_TRUE(dir.ok());
  // A listener without SO_REUSEPORT holds the port, so gRPC cannot share it.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  struct CloseFd {
    int fd;
    ~CloseFd() { close(fd); }
  } close_fd{fd};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  Child serve({KVWIRE_BINARY, "serve", "decode", "--listen", address, "--model",
               dir.model(), "--threads", "1"});
  ASSERT_TRUE(serve.started());
  EXPECT_EQ(serve.Wait(In(60)), 1) << "stdout: " << serve.out() << "\nstderr: " << serve.err();
  EXPECT_THAT(serve.err(), HasSubstr("cannot listen"));
}


// The scout and text paths as processes: a decode node (which also serves PromptNode) and a
// scout node in front of it; only token ids and positions cross; killing the big node makes the
// scout answer UNAVAILABLE, never hang.
TEST(CliTest, ServeScoutTextAndScoutPaths) {
  const std::string kvwire = KVWIRE_BINARY;
  const TinyModelDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string model = dir.model();

  Child decode({kvwire, "serve", "decode", "--listen", "127.0.0.1:0", "--model", model,
                "--threads", "1", "--max-new-tokens", "6"});
  const std::string decode_addr = ListenAddress(decode.FirstLine(In(60)), "decode");
  ASSERT_FALSE(decode_addr.empty()) << decode.err();
  Child scout({kvwire, "serve", "scout", "--listen", "127.0.0.1:0", "--model", model,
               "--threads", "1", "--target", decode_addr});
  const std::string scout_line = scout.FirstLine(In(60));
  const size_t at = scout_line.find("listening on ");
  ASSERT_NE(at, std::string::npos) << scout_line << scout.err();
  const std::string scout_addr =
      scout_line.substr(at + 13, scout_line.find(' ', at + 13) - (at + 13));

  const std::string context =
      "The keeper's daughter rowed out to the reef and brought back nine sailors. The town "
      "named the new pier after her, and the children race boats to the reef every spring.";
  for (const char* preset : {"text", "scout-q2c25"}) {
    Child gen({kvwire, "generate", "--scout", scout_addr, "--context", context, "--question",
               "Who rowed out?", "--preset", preset, "--max-new-tokens", "4", "--timeout", "60",
               "--json"});
    ASSERT_EQ(gen.Wait(In(90)), 0) << preset << " stdout: " << gen.out() << "\nstderr: " << gen.err();
    const json j = json::parse(gen.out(), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << gen.out();
    const json& s = j["stats"];
    EXPECT_GT(s["generated_tokens"].get<int>(), 0) << preset;
    EXPECT_LT(s["wire_bytes"].get<uint64_t>() * 20, s["raw_bytes"].get<uint64_t>()) << preset;
    if (std::string(preset) == "text") {
      EXPECT_DOUBLE_EQ(s["kept_fraction"].get<double>(), 1.0);
    } else {
      EXPECT_LT(s["kept_fraction"].get<double>(), 0.5);
      EXPECT_DOUBLE_EQ(s["selection_overlap"].get<double>(), 1.0);  // same model both ends
    }
  }
  {
    Child health({kvwire, "health", "--target", scout_addr, "--timeout", "10"});
    EXPECT_EQ(health.Wait(In(30)), 0) << health.err();
  }
  ASSERT_EQ(kill(decode.pid(), SIGKILL), 0);
  decode.Wait(In(15));
  {
    Child gen({kvwire, "generate", "--scout", scout_addr, "--context", context, "--question",
               "Who?", "--preset", "text", "--timeout", "30"});
    EXPECT_EQ(gen.Wait(In(60)), 1) << gen.out();
    EXPECT_THAT(gen.err(), HasSubstr("UNAVAILABLE"));
  }
  ASSERT_EQ(kill(scout.pid(), SIGTERM), 0);
  EXPECT_EQ(scout.Wait(In(15)), 0) << scout.err();
}

}  // namespace
}  // namespace kvwire
