#pragma once
/// \file error.hpp
/// The one exception type sparq throws at its API boundary.
///
/// Hot paths (the stage kernels, `sparq::step`, `sparq::dense_step`) never throw: they assume
/// the checks below already passed. Checked entry points (`config::validate`, the KV cache,
/// `sparq::checked_step`, `sparq::checked_dense_step`) throw `sparq::error` with a message that
/// names the argument, its value and the allowed range. The few preconditions only a hot path
/// can see (batch_step::run_phase's thread index and count) abort with a message instead
/// (detail::contract_violation).

#include <cstdio>
#include <cstdlib>
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

/// A broken precondition inside a noexcept hot path (one the API boundary cannot check, e.g.
/// a thread index an engine passes to a phase): prints "sparq: contract violation: ..." to
/// stderr and aborts, rather than writing out of bounds. Never allocates.
[[noreturn]] inline void contract_violation(const char* what) noexcept {
  std::fprintf(stderr, "sparq: contract violation: %s\n", what);
  std::fflush(stderr);
  std::abort();
}
/// The same, with the two values that disagree.
[[noreturn]] inline void contract_violation(const char* what, unsigned long long a,
                                            unsigned long long b) noexcept {
  std::fprintf(stderr, "sparq: contract violation: %s (%llu vs %llu)\n", what, a, b);
  std::fflush(stderr);
  std::abort();
}

}  // namespace detail
}  // namespace sparq
