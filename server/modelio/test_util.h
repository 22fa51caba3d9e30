// Scratch directories for modelio's tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace kvwire::modelio::test {

// Per-process root under gtest's TempDir(). ctest runs every test case as its own
// process, possibly in parallel and from several build trees, so the pid keeps them apart;
// the environment below deletes the root when the test program ends.
inline const std::filesystem::path& ScratchRoot() {
  static const std::filesystem::path root = [] {
    std::filesystem::path p = std::filesystem::path(::testing::TempDir()) /
                              ("kvwire_modelio_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p;
  }();
  return root;
}

// An empty directory named after the running test (plus `suffix`).
inline std::filesystem::path FreshTestDir(std::string_view suffix = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir =
      ScratchRoot() / (std::string(info->test_suite_name()) + "." + info->name() +
                       std::string(suffix));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(ScratchRoot(), ec);
  }
};

// Registered during static initialisation, i.e. before gtest_main runs the tests.
inline ::testing::Environment* const kScratchCleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace kvwire::modelio::test
