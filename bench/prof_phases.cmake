# prof-phases: per-phase timing of a batch_step-shaped pipeline next to same-byte read roofs
# (a profiling harness for kernel work; not run by CI).
add_executable(prof-phases ${CMAKE_CURRENT_LIST_DIR}/prof_phases.cpp)
sparq_target_defaults(prof-phases)
