# Small helper programs for tests (tests/tools/*.cpp, one executable each) and the cross-checks
# that use them.
file(GLOB SKV_TEST_TOOLS CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/tools/*.cpp)
# The model probe needs skv_model and is registered by tests/model.cmake.
list(FILTER SKV_TEST_TOOLS EXCLUDE REGEX "skv_model_probe\\.cpp$")
foreach(src ${SKV_TEST_TOOLS})
  get_filename_component(tool ${src} NAME_WE)
  add_executable(${tool} ${src})
  target_link_libraries(${tool} PRIVATE skv skv_formats skv_warnings skv_test_support)
endforeach()

# Python cross-check against the reference safetensors library. Never needed by the build: when
# python3, numpy or safetensors is missing the script exits 77 and the test reports SKIPPED.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
  add_test(NAME safetensors_crosscheck
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/python/safetensors_crosscheck.py
                   $<TARGET_FILE:st_roundtrip> ${CMAKE_CURRENT_BINARY_DIR}/crosscheck)
  set_tests_properties(safetensors_crosscheck PROPERTIES SKIP_RETURN_CODE 77 LABELS python)
else()
  message(STATUS "skv: python3 not found; the safetensors cross-check test is not registered")
endif()
