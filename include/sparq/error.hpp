#pragma once
/// \file error.hpp
/// The one exception type sparq throws at its API boundary.
///
/// Hot paths (the stage kernels, `sparq::step`, `sparq::dense_step`) never throw: they assume
/// the checks below already passed. Checked entry points (`config::validate`, the KV cache,
/// `sparq::checked_step`, `sparq::checked_dense_step`) throw `sparq::error` with a message that
/// names the argument, its value and the allowed range.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace sparq {

/// Thrown for invalid arguments at the API boundary.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
[[noreturn]] inline void fail(Parts&&... parts) {
  std::ostringstream os;
  os << "sparq: ";
  (os << ... << std::forward<Parts>(parts));
  throw error(os.str());
}

}  // namespace detail
}  // namespace sparq
