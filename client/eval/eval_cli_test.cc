// `kvwire eval` and `kvwire calibrate` through the real binary on the tiny random model: output
// files, resume, refusal of a foreign log, exit codes, task files, stdin text and the ladder.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <vector>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "client/eval/ladder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/nodes/testing/tiny_model.h"

namespace kvwire::eval {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

struct Result {
  int rc = -1;
  std::string out, err;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t Lines(const fs::path& p) {
  const std::string s = ReadFile(p);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

class EvalCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("kvwire_eval_cli_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    ASSERT_TRUE(nodes::testing::WriteTinyModel(*dir_ / "model", nodes::testing::TinyConfig(2)).ok());
    std::string text;
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "ran", "to", "garden"};
    for (int i = 0; i < 400; ++i) text += std::string(words[(i * 7 + i / 3) % 10]) + (i % 9 == 8 ? ". " : " ");
    std::ofstream(*dir_ / "text.txt") << text;
    // Two kvwire-format task examples.
    std::ofstream tasks(*dir_ / "tasks.jsonl");
    tasks << json{{"id", "p0"}, {"task", "passkey"}, {"context", "the sky was grey . the pass key is 4 1 . go on ."},
                  {"question", "what is the pass key ? answer :"}, {"answers", {"4 1"}}}.dump() << "\n"
          << json{{"id", "p1"}, {"task", "passkey"}, {"context", "we walked far . the pass key is 7 7 2 . rest ."},
                  {"question", "what is the pass key ? answer :"}, {"answers", {"7 7 2"}}}.dump() << "\n";
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static Result Run(const std::string& args, const std::string& stdin_file = "") {
    const fs::path out = *dir_ / "stdout", err = *dir_ / "stderr";
    std::string cmd = "OMP_WAIT_POLICY=PASSIVE " KVWIRE_BINARY " " + args;
    if (!stdin_file.empty()) cmd += " < " + stdin_file;
    cmd += " > " + out.string() + " 2> " + err.string();
    const int status = std::system(cmd.c_str());
    Result r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadFile(out);
    r.err = ReadFile(err);
    return r;
  }

  static std::string Model() { return "--model " + (*dir_ / "model").string(); }
  static std::string Text() {
    return "--text " + (*dir_ / "text.txt").string() + " --context-tokens 100 --continuation 12 --samples 2";
  }
  static std::string Out(const std::string& name) { return (*dir_ / name).string(); }

  static fs::path* dir_;
};

fs::path* EvalCliTest::dir_ = nullptr;

TEST_F(EvalCliTest, TextRunWritesEveryOutputAndResumes) {
  const std::string prefix = Out("bits");
  Result r = Run("eval " + Model() + " " + Text() + " --config int8 --config low=plan=*:int2 --out " + prefix + " --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["configs"].size(), 3u);
  EXPECT_EQ(j["configs"][0]["config"], "full");  // the lossless reference is added first
  EXPECT_EQ(j["reference"], "full");
  EXPECT_EQ(j["quality"], "agreement");
  EXPECT_EQ(j["configs"][0]["mean_kl"], 0.0);
  EXPECT_EQ(j["configs"][0]["agreement"], 1.0);
  EXPECT_EQ(j["configs"][2]["config"], "low");
  EXPECT_EQ(j["configs"][2]["examples"], 2);
  EXPECT_GT(j["configs"][2]["mean_kl"].get<double>(), j["configs"][1]["mean_kl"].get<double>());
  for (const char* ext : {".jsonl", ".csv", ".json", ".svg", ".md"}) {
    EXPECT_TRUE(fs::exists(prefix + ext)) << ext;
  }
  EXPECT_EQ(Lines(prefix + ".jsonl"), 1u + 3 * 2);
  EXPECT_THAT(ReadFile(prefix + ".svg"), HasSubstr("<svg"));
  EXPECT_EQ(Lines(prefix + ".csv"), 4u);

  // Again with one more configuration: only its two records are computed.
  r = Run("eval " + Model() + " " + Text() + " --config int8 --config low=plan=*:int2 --config int4 --out " + prefix);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("resuming"));
  EXPECT_EQ(Lines(prefix + ".jsonl"), 1u + 4 * 2);
  EXPECT_THAT(r.out, HasSubstr("int4"));

  // Regression: a label run again with another codec averaged both codecs under one name.
  r = Run("eval " + Model() + " " + Text() + " --config int8 --config low=plan=*:int4 --out " + prefix);
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("labelled \"low\" for codec"));
  EXPECT_EQ(Lines(prefix + ".jsonl"), 1u + 4 * 2);

  // Other settings on the same log are refused; --overwrite starts over.
  r = Run("eval " + Model() + " " + Text() + " --fidelity-tokens 4 --config int8 --out " + prefix);
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("--overwrite"));
  r = Run("eval " + Model() + " " + Text() + " --fidelity-tokens 4 --config int8 --out " + prefix + " --overwrite");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(Lines(prefix + ".jsonl"), 1u + 2 * 2);

  // The ladder from the summary: rungs ascending in bytes and in agreement.
  const std::string ladder_path = Out("ladder.json");
  r = Run("calibrate --from " + prefix + ".json --ladder " + ladder_path);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto ladder = LoadLadderFile(ladder_path);
  ASSERT_TRUE(ladder.ok()) << ladder.status();
  EXPECT_EQ(ladder->quality_metric, "agreement");
  ASSERT_FALSE(ladder->rungs.empty());
  for (size_t i = 1; i < ladder->rungs.size(); ++i) {
    EXPECT_GT(ladder->rungs[i].bytes_per_token, ladder->rungs[i - 1].bytes_per_token);
    EXPECT_GT(ladder->rungs[i].score, ladder->rungs[i - 1].score);
  }
}

TEST_F(EvalCliTest, TaskFileAndStdin) {
  Result r = Run("eval " + Model() + " --tasks " + Out("tasks.jsonl") +
                 " --max-new-tokens 3 --fidelity-tokens 4 --config int4 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["quality"], "task_score");
  ASSERT_EQ(j["configs"].size(), 2u);
  EXPECT_TRUE(j["configs"][1]["score"].is_number());
  EXPECT_EQ(j["configs"][1]["examples"], 2);
  EXPECT_EQ(j["configs"][1]["fidelity_steps"], 8);

  r = Run("eval " + Model() + " --text - --context-tokens 60 --continuation 8 --samples 1 --config int8",
          Out("text.txt"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("int8"));
}

// A node process: its stdout's first line ("kvwire <role> node listening on ADDR model=...")
// gives the address. SIGTERM and reaped on destruction.
class Node {
 public:
  explicit Node(std::vector<std::string> args) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    fd_ = out[0];
  }
  ~Node() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      waitpid(pid_, &status, 0);
    }
    if (fd_ >= 0) close(fd_);
  }
  std::string Address(const std::string& role) {
    std::string text;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (text.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) continue;
      char buf[512];
      const ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, n);
    }
    std::smatch m;
    const std::string line = text.substr(0, text.find('\n'));
    const std::regex re("^kvwire " + role + " node listening on (127\\.0\\.0\\.1:[0-9]+) .*$");
    return std::regex_match(line, m, re) ? m[1].str() : "";
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

TEST_F(EvalCliTest, AgainstRunningNodes) {
  const std::string model = (*dir_ / "model").string();
  Node decode({KVWIRE_BINARY, "serve", "decode", "--listen", "127.0.0.1:0", "--model", model, "--threads", "1"});
  const std::string decode_addr = decode.Address("decode");
  ASSERT_FALSE(decode_addr.empty());
  Node prefill({KVWIRE_BINARY, "serve", "prefill", "--listen", "127.0.0.1:0", "--model", model, "--threads", "1",
                "--decode", decode_addr});
  const std::string prefill_addr = prefill.Address("prefill");
  ASSERT_FALSE(prefill_addr.empty());
  Result r = Run("eval --prefill " + prefill_addr + " --tasks " + Out("tasks.jsonl") +
                 " --max-new-tokens 3 --config int4 --timeout 60 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["configs"].size(), 2u);
  EXPECT_EQ(j["configs"][0]["config"], "full");
  EXPECT_EQ(j["configs"][1]["examples"], 2);
  EXPECT_TRUE(j["configs"][1]["score"].is_number());
  EXPECT_LT(j["configs"][1]["bytes_per_request"].get<double>(), j["configs"][0]["bytes_per_request"].get<double>());
  EXPECT_NEAR(j["configs"][0]["kept_fraction"].get<double>(), 1.0, 1e-9);
  EXPECT_TRUE(j["configs"][1]["agreement"].is_null());  // a node returns no logits
  EXPECT_THAT(j["model_fingerprint"].get<std::string>(), HasSubstr("qwen2-"));
  // The in-process run of the same model and task file gives the same answers and bytes.
  r = Run("eval " + Model() + " --tasks " + Out("tasks.jsonl") + " --max-new-tokens 3 --config int4 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const json local = json::parse(r.out);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(local["configs"][i]["score"], j["configs"][i]["score"]) << i;
    EXPECT_EQ(local["configs"][i]["bytes_per_request"], j["configs"][i]["bytes_per_request"]) << i;
  }
  EXPECT_EQ(Run("eval --prefill " + prefill_addr + " " + Text()).rc, 2);  // text needs logits
}

TEST_F(EvalCliTest, BadCommandLinesExitWith2) {
  EXPECT_EQ(Run("eval " + Model() + " --config int8").rc, 2);  // no input
  EXPECT_EQ(Run("eval " + Model() + " " + Text() + " --tasks " + Out("tasks.jsonl")).rc, 2);
  EXPECT_EQ(Run("eval " + Model() + " " + Text() + " --quality task_score").rc, 2);
  EXPECT_EQ(Run("eval --text x").rc, 2);  // no model
  Result r = Run("eval " + Model() + " " + Text() + " --config plan=*:int9");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("int9"));
  r = Run("eval " + Model() + " " + Text() + " --matrix nosuch");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("unknown matrix"));
  EXPECT_EQ(Run("calibrate --ladder " + Out("l.json")).rc, 2);
  // Regression: calibrate checked these only after its sweep (hours on a real model).
  EXPECT_EQ(Run("calibrate " + Model() + " --ladder " + Out("l.json")).rc, 2);  // no input
  EXPECT_EQ(Run("calibrate " + Model() + " " + Text() + " --quality kl --ladder " + Out("l.json")).rc, 2);
  // Regression: an --out whose directory cannot be created aborted (uncaught filesystem_error).
  std::ofstream(Out("afile")) << "x";
  r = Run("eval " + Model() + " " + Text() + " --config int8 --out " + Out("afile") + "/sub/run");
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot create"));
  // Regression: "label=" silently ran the lossless default codec.
  r = Run("eval " + Model() + " " + Text() + " --config foo=");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("empty codec"));
}

TEST_F(EvalCliTest, CalibrateRunsTheLayerSweepAndWritesALadder) {
  const std::string ladder_path = Out("ladder-run.json");
  Result r = Run("calibrate " + Model() + " " + Text() + " --config int8 --config int4 --config low=plan=*:int2 --ladder " +
                 ladder_path + " --out " + Out("cal"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("layer sweep proposes plan"));
  EXPECT_TRUE(fs::exists(Out("cal-layers.json")));
  EXPECT_TRUE(fs::exists(Out("cal-matrix.json")));
  const json matrix = json::parse(ReadFile(Out("cal-matrix.json")));
  bool proposed = false;
  for (const json& c : matrix["configs"]) proposed = proposed || c["config"] == "proposed";
  EXPECT_TRUE(proposed);
  auto ladder = LoadLadderFile(ladder_path);
  ASSERT_TRUE(ladder.ok()) << ladder.status();
  EXPECT_FALSE(ladder->model_fingerprint.empty());
  EXPECT_FALSE(ladder->rungs.empty());
}

}  // namespace
}  // namespace kvwire::eval
