# skv_test_cuda: the CUDA codec against CPU references (tests/unit_cuda). Built only with the CUDA
# library; GPU tests skip with the reason when no device is present, host-only ones always run.
if(TARGET skv_cuda)
  file(GLOB SKV_CUDA_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/unit_cuda/*.cpp)
  add_executable(skv_test_cuda ${SKV_CUDA_TEST_SOURCES})
  target_link_libraries(skv_test_cuda PRIVATE skv_cuda skv skv_formats skv_warnings GTest::gtest_main)
  # The reference restates the spec's float steps; keep the compiler from fusing them.
  target_compile_options(skv_test_cuda PRIVATE -ffp-contract=off)
  gtest_discover_tests(skv_test_cuda
    PROPERTIES LABELS cuda SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" DISCOVERY_TIMEOUT 60)
endif()
