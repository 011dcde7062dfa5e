// Eigen, included with the warnings it trips under g++ 12 + AVX-512 silenced, so this example
// builds with -Wall -Wextra -Werror -march=native.
//
// Why: g++ 12.2's avx512fintrin.h self-initialises `__m512 __Y = __Y;` in _mm512_undefined_*,
// which -Wuninitialized / -Wmaybe-uninitialized report once Eigen's AVX-512 packet code is
// inlined (GCC bug 105593, fixed in 12.3 and 13); Eigen 3.4.0's bf16 packet code also has
// unused locals. The warnings are located in those headers, so suppressing them around the
// first inclusion silences them without hiding anything in this example's own code. This
// header must come before anything else that includes <immintrin.h>.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wunused-variable"
#endif

#include <Eigen/Dense>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
