# prof-phases: sparq::batch_step timed stage by stage (a timing traffic policy) next to same-byte read roofs
# (a profiling harness for kernel work; CI checks only its command line, below).
add_executable(prof-phases ${CMAKE_CURRENT_LIST_DIR}/prof_phases.cpp)
sparq_target_defaults(prof-phases)
# Its command line only (bad values exit before anything is allocated).
if(SPARQ_BUILD_TESTS AND NOT SPARQ_TESTS_ONLY)
  add_test(NAME prof_phases_rejects_zero_steps COMMAND prof-phases --steps 0)
  set_tests_properties(prof_phases_rejects_zero_steps PROPERTIES
                       PASS_REGULAR_EXPRESSION "--steps 0: allowed: an integer from 1 to")
  add_test(NAME prof_phases_rejects_unknown_only COMMAND prof-phases --only foo)
  set_tests_properties(prof_phases_rejects_unknown_only PROPERTIES
                       PASS_REGULAR_EXPRESSION "allowed: sparq, dense")
endif()
