#include "server/modelio/file_util.h"

#include <fstream>
#include <iterator>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvwire::modelio::internal {

absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path,
                                          std::uintmax_t max_bytes) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    }
    return absl::UnavailableError(absl::StrCat(path.string(), ": ", ec.message()));
  }
  if (size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", size,
                                                   " bytes exceeds the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat(path.string(), ": cannot open"));
  std::string contents(static_cast<size_t>(size), '\0');
  in.read(contents.data(), static_cast<std::streamsize>(size));
  // The file may have shrunk since file_size(); keep what was actually read.
  contents.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path.string(), ": read error"));
  return contents;
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::UnavailableError(absl::StrCat(tmp.string(), ": cannot create"));
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) return absl::UnavailableError(absl::StrCat(tmp.string(), ": write failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(path.string(), ": rename failed: ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::modelio::internal
