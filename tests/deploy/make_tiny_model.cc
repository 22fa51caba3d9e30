// Writes the tiny random Qwen2-style model directory of server/nodes/testing into DIR, for the
// deploy tests that start real `kvwire serve` processes.
// Usage: kvwire_tiny_model DIR [LAYERS]
#include <cstdlib>
#include <iostream>

#include "server/nodes/testing/tiny_model.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: kvwire_tiny_model DIR [LAYERS]\n";
    return 2;
  }
  const int layers = argc == 3 ? std::atoi(argv[2]) : 2;
  if (layers < 1 || layers > 64) {
    std::cerr << "kvwire_tiny_model: LAYERS must be in [1, 64]\n";
    return 2;
  }
  const absl::Status s =
      kvwire::nodes::testing::WriteTinyModel(argv[1], kvwire::nodes::testing::TinyConfig(layers));
  if (!s.ok()) {
    std::cerr << "kvwire_tiny_model: " << s << "\n";
    return 1;
  }
  return 0;
}
