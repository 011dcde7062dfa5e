# Flags for sparq's own tests, benchmarks and examples. Never applied to consumers.
#
# SPARQ_ARCH picks the SIMD tier the kernels compile for (xsimd::default_arch follows it):
#   native     -march=native (default)
#   x86-64-v4  AVX-512 (F/BW/DQ/VL)        x86-64-v3  AVX2 + FMA + F16C
#   x86-64     SSE2 baseline               scalar     no SIMD (SPARQ_NO_SIMD)
#   armv8-a    aarch64 with NEON (cross builds: cmake/toolchain-aarch64.cmake)
set(SPARQ_ARCH "native" CACHE STRING "SIMD tier for sparq's own targets")
set_property(CACHE SPARQ_ARCH PROPERTY STRINGS native x86-64-v4 x86-64-v3 x86-64 armv8-a scalar)
option(SPARQ_WERROR "Treat warnings as errors on sparq's own targets" ON)

find_package(Threads REQUIRED)

function(sparq_target_defaults target)
  target_link_libraries(${target} PRIVATE sparq::sparq Threads::Threads)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 flags _mm512_undefined_ps() inside its own intrinsics (GCC bug 105593) as
    # maybe-uninitialized once inlined into our kernels; the warning is a false positive.
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
  endif()
  if(SPARQ_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(SPARQ_ARCH STREQUAL "scalar")
    target_compile_definitions(${target} PRIVATE SPARQ_NO_SIMD=1)
  else()
    target_compile_options(${target} PRIVATE -march=${SPARQ_ARCH})
  endif()
endfunction()
