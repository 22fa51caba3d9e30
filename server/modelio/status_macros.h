// Early-return helpers for absl::Status plumbing. Internal to modelio's .cc files; the
// names are prefixed so they cannot collide with other modules' macros.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MODELIO_RETURN_IF_ERROR(expr)        \
  do {                                       \
    if (absl::Status _st = (expr); !_st.ok()) \
      return _st;                            \
  } while (0)

#define MODELIO_CONCAT_INNER(a, b) a##b
#define MODELIO_CONCAT(a, b) MODELIO_CONCAT_INNER(a, b)

// MODELIO_ASSIGN_OR_RETURN(auto x, StatusOrExpr()); declares/assigns x or returns the error.
#define MODELIO_ASSIGN_OR_RETURN(lhs, expr) \
  MODELIO_ASSIGN_OR_RETURN_IMPL(MODELIO_CONCAT(_statusor_, __LINE__), lhs, expr)
#define MODELIO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

#include <string_view>

#include "absl/strings/string_view.h"

namespace kvwire::modelio::internal {

// The installed absl is built with its own string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), which does not convert from std::string_view. modelio's API speaks
// std::string_view, so values headed for absl::StrCat / absl::Status go through this.
// Where absl does use std::string_view it is the identity.
inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace kvwire::modelio::internal
