# sparq-bench: the main job (SparQ vs dense with the in-process bandwidth roof).
add_executable(sparq-bench ${CMAKE_CURRENT_LIST_DIR}/sparq_bench.cpp)
sparq_target_defaults(sparq-bench)

# sparq-bench-kernels: Google Benchmark suite of the individual kernels.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  add_executable(sparq-bench-kernels ${CMAKE_CURRENT_LIST_DIR}/bench_kernels.cpp)
  sparq_target_defaults(sparq-bench-kernels)
  target_link_libraries(sparq-bench-kernels PRIVATE benchmark::benchmark)
else()
  message(STATUS "sparq: Google Benchmark not found; sparq-bench-kernels is not built")
endif()

# sparq-bench-paged: the cost of paged KV views against contiguous ones.
add_executable(sparq-bench-paged ${CMAKE_CURRENT_LIST_DIR}/bench_paged.cpp)
sparq_target_defaults(sparq-bench-paged)
