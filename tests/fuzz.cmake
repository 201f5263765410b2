# libFuzzer targets: every tests/fuzz/fuzz_*.cpp becomes one executable when SKV_FUZZ=ON (clang
# only; SkvOptions.cmake enforces that). The project libraries get coverage instrumentation
# (-fsanitize=fuzzer-no-link) and the same sanitizers, so the fuzzer sees inside the parsers.
if(NOT SKV_FUZZ)
  return()
endif()
set(SKV_FUZZ_SANITIZERS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
foreach(lib skv_core skv_formats skv)
  target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link ${SKV_FUZZ_SANITIZERS})
endforeach()
file(GLOB SKV_FUZZ_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_*.cpp)
foreach(src ${SKV_FUZZ_SOURCES})
  get_filename_component(target ${src} NAME_WE)
  add_executable(${target} ${src})
  target_compile_options(${target} PRIVATE -fsanitize=fuzzer ${SKV_FUZZ_SANITIZERS})
  target_link_options(${target} PRIVATE -fsanitize=fuzzer ${SKV_FUZZ_SANITIZERS})
  target_link_libraries(${target} PRIVATE skv skv_formats skv_warnings)
  set_target_properties(${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
endforeach()
