# sparq-bench: the main job (SparQ vs dense with the in-process bandwidth roof).
add_executable(sparq-bench ${CMAKE_CURRENT_LIST_DIR}/sparq_bench.cpp)
sparq_target_defaults(sparq-bench)
# Its command line (the first two exit before measuring anything), and its --quick run.
if(SPARQ_BUILD_TESTS AND NOT SPARQ_TESTS_ONLY)
  add_test(NAME sparq_bench_usage COMMAND sparq-bench --help)
  set_tests_properties(sparq_bench_usage PROPERTIES
                       PASS_REGULAR_EXPRESSION "usage: .*sparq-bench .*--dtype f16\\|f32\\|bf16")
  add_test(NAME sparq_bench_rejects_unknown_dtype COMMAND sparq-bench --dtype f64)
  set_tests_properties(sparq_bench_rejects_unknown_dtype PROPERTIES
                       PASS_REGULAR_EXPRESSION "--dtype f64: allowed: f16, f32, bf16")
  add_test(NAME sparq_bench_rejects_bad_threads COMMAND sparq-bench --threads abc)
  set_tests_properties(sparq_bench_rejects_bad_threads PROPERTIES
                       PASS_REGULAR_EXPRESSION "--threads abc: allowed: an integer from 1 to 1024")
  # An unwritable --json fails before anything is measured (a --quick run takes ~20-40 s).
  add_test(NAME sparq_bench_rejects_unwritable_json
           COMMAND sparq-bench --quick --json ${CMAKE_BINARY_DIR}/no-such-dir/x.json)
  set_tests_properties(sparq_bench_rejects_unwritable_json PROPERTIES TIMEOUT 15
                       PASS_REGULAR_EXPRESSION "no-such-dir/x.json: cannot open for writing")
  # The main job's --quick run (~30 s, 2 GiB): its JSON has issue 3's keys and cases, and its
  # derived numbers agree with the times and bytes (tests/check_bench_json.py; never a speed).
  find_program(SPARQ_PYTHON3 python3)
  if(SPARQ_PYTHON3)
    add_test(NAME sparq_bench_json
             COMMAND ${SPARQ_PYTHON3} ${PROJECT_SOURCE_DIR}/tests/check_bench_json.py
                     $<TARGET_FILE:sparq-bench>)
    # Alone (it times both cores; its checks do not depend on speed, but other tests' would
    # slow it); label bench, so `ctest -LE bench` leaves it out.
    set_tests_properties(sparq_bench_json PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE LABELS bench)
  endif()
endif()

# sparq-bench-kernels: Google Benchmark suite of the individual kernels.
find_package(benchmark QUIET)
if(benchmark_FOUND)
  add_executable(sparq-bench-kernels ${CMAKE_CURRENT_LIST_DIR}/bench_kernels.cpp)
  sparq_target_defaults(sparq-bench-kernels)
  target_link_libraries(sparq-bench-kernels PRIVATE benchmark::benchmark)
  if(SPARQ_BUILD_TESTS AND NOT SPARQ_TESTS_ONLY)
    # A smoke run of the smallest step pair (copies and roof array of 64 MiB, so it takes a
    # few seconds; its numbers mean nothing): both cases run and report a nonzero roof
    # percentage (values below 1 would print as e.g. 500m).
    add_test(NAME sparq_bench_kernels_smoke
             COMMAND sparq-bench-kernels --rotate_mib=64
                     "--benchmark_filter=^step/(dense|sparq)/f16/gqa32x8/B1/S1024(/|$)")
    string(CONCAT smoke_re
           "step/dense/f16/gqa32x8/B1/S1024[^\n]*roof_pct=[1-9][^\n]*\n"
           "step/sparq/f16/gqa32x8/B1/S1024/r16/k64[^\n]*roof_pct=[1-9]")
    set_tests_properties(sparq_bench_kernels_smoke PROPERTIES PASS_REGULAR_EXPRESSION
                         "${smoke_re}")
    add_test(NAME sparq_bench_kernels_rejects_bad_rotation
             COMMAND sparq-bench-kernels --rotate_mib=0)
    set_tests_properties(sparq_bench_kernels_rejects_bad_rotation PROPERTIES
      PASS_REGULAR_EXPRESSION "--rotate_mib=0: allowed: an integer number of MiB from 1 to")
  endif()
else()
  message(STATUS "sparq: Google Benchmark not found; sparq-bench-kernels is not built")
endif()

# sparq-bench-paged: the cost of paged KV views against contiguous ones.
add_executable(sparq-bench-paged ${CMAKE_CURRENT_LIST_DIR}/bench_paged.cpp)
sparq_target_defaults(sparq-bench-paged)
