# Extra test registrations, included by tests/CMakeLists.txt.

# Independent check of the traffic counters with valgrind DHAT: dhat_step runs one SparQ and
# one dense step over separately allocated K/Kt/V blocks; check_dhat.py runs it under
# `valgrind --tool=dhat` and compares DHAT's bytes read per block with sparq's counters.
# Valgrind 3.19 has no AVX-512, so this program is built for AVX2 (x86-64-v3) whatever
# SPARQ_ARCH says: the -march from sparq_target_defaults is removed, not just overridden.
if(SPARQ_TESTS_ONLY AND NOT "dhat" MATCHES "${SPARQ_TESTS_ONLY}")
  return()  # a subset build (see SPARQ_TESTS_ONLY) that does not ask for the DHAT check
endif()
add_executable(dhat_step ${CMAKE_CURRENT_SOURCE_DIR}/dhat/dhat_step.cpp)
sparq_target_defaults(dhat_step)
get_target_property(_sparq_dhat_opts dhat_step COMPILE_OPTIONS)
list(FILTER _sparq_dhat_opts EXCLUDE REGEX "^-march=")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  list(APPEND _sparq_dhat_opts -march=x86-64-v3)
endif()
# -g: DHAT names allocation sites by function; keep each site's frame (no sibling calls)
# and keep the six identical site functions apart (no identical-code folding).
list(APPEND _sparq_dhat_opts -g -fno-omit-frame-pointer -fno-optimize-sibling-calls)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND _sparq_dhat_opts -fno-ipa-icf)
endif()
set_property(TARGET dhat_step PROPERTY COMPILE_OPTIONS ${_sparq_dhat_opts})
unset(_sparq_dhat_opts)

find_program(SPARQ_VALGRIND valgrind)
find_package(Python3 COMPONENTS Interpreter QUIET)
if(SPARQ_VALGRIND AND Python3_Interpreter_FOUND AND NOT CMAKE_CROSSCOMPILING)
  add_test(NAME dhat_traffic_check
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/dhat/check_dhat.py
                   --valgrind ${SPARQ_VALGRIND} $<TARGET_FILE:dhat_step>)
  set_tests_properties(dhat_traffic_check PROPERTIES TIMEOUT 300 LABELS valgrind)
else()
  message(STATUS "sparq: no valgrind/python3 (or cross-compiling); dhat_traffic_check not registered")
endif()
