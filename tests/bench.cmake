# Google Benchmark micro-benchmarks (SKV_BUILD_BENCH): codec encode/decode throughput.
if(SKV_BUILD_BENCH)
  find_package(benchmark REQUIRED)
  add_executable(skv_bench_codec ${CMAKE_CURRENT_LIST_DIR}/bench/codec_bench.cpp)
  target_link_libraries(skv_bench_codec PRIVATE skv skv_warnings benchmark::benchmark)
endif()
