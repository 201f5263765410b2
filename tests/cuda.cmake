# CUDA codec tests (tests/unit_cuda).
# skv_test_cuda_ref: host-only, always built and run (no GPU, no nvcc): the layer plan, the test
# reference against the real CPU codec, and the codec's external-stream hooks. It compiles the
# host-only cuda/src/layer_plan.cpp directly so it needs no CUDA toolkit.
file(GLOB SKV_CUDA_REF_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/unit_cuda/*.cpp)
list(FILTER SKV_CUDA_REF_SOURCES EXCLUDE REGEX "/gpu_[^/]*\\.cpp$")
add_executable(skv_test_cuda_ref ${SKV_CUDA_REF_SOURCES} ${PROJECT_SOURCE_DIR}/cuda/src/layer_plan.cpp)
target_include_directories(skv_test_cuda_ref PRIVATE ${PROJECT_SOURCE_DIR}/cuda/include ${PROJECT_SOURCE_DIR}/cuda/src)
target_link_libraries(skv_test_cuda_ref PRIVATE skv skv_formats skv_warnings GTest::gtest_main)
# The reference restates the spec's float steps; keep the compiler from fusing them.
target_compile_options(skv_test_cuda_ref PRIVATE -ffp-contract=off)
gtest_discover_tests(skv_test_cuda_ref PROPERTIES LABELS cuda_ref DISCOVERY_TIMEOUT 60)

# skv_test_cuda: the kernels and the GPU container driver (gpu_*.cpp), built only with the CUDA
# library; every test skips with the reason when no device is present.
if(TARGET skv_cuda)
  file(GLOB SKV_CUDA_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/unit_cuda/gpu_*.cpp)
  add_executable(skv_test_cuda ${SKV_CUDA_TEST_SOURCES} ${CMAKE_CURRENT_LIST_DIR}/unit_cuda/layer_ref.cpp)
  target_link_libraries(skv_test_cuda PRIVATE skv_cuda skv skv_formats skv_warnings GTest::gtest_main)
  target_compile_options(skv_test_cuda PRIVATE -ffp-contract=off)
  gtest_discover_tests(skv_test_cuda
    PROPERTIES LABELS cuda SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" DISCOVERY_TIMEOUT 60)
endif()
