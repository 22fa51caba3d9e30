// Small file helpers shared by modelio's .cc files (internal, not part of the API).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvwire::modelio::internal {

// Reads a whole file. NotFound when it does not exist; InvalidArgument when it is larger
// than max_bytes (so a wrong path cannot make us slurp a multi-GB weight file as JSON).
// Messages start with the path.
absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path,
                                          std::uintmax_t max_bytes);

// Writes `contents` to a temporary sibling and renames it over `path`, so a crash or a
// concurrent reader never sees a half-written file.
absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents);

}  // namespace kvwire::modelio::internal
