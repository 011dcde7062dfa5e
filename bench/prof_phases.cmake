# prof-phases: sparq::batch_step timed stage by stage (a timing traffic policy) next to same-byte read roofs
# (a profiling harness for kernel work; not run by CI).
add_executable(prof-phases ${CMAKE_CURRENT_LIST_DIR}/prof_phases.cpp)
sparq_target_defaults(prof-phases)
