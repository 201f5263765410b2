# Model runner: the probe driver used by tools/*.py cross-checks, and those cross-checks as CTest
# entries that skip (exit 77) when Python's gguf / llama_cpp or the sample model is missing.
if(TARGET skv_model)
  add_executable(skv_model_probe ${CMAKE_CURRENT_LIST_DIR}/tools/skv_model_probe.cpp)
  target_link_libraries(skv_model_probe PRIVATE skv_model skv_warnings nlohmann_json::nlohmann_json)

  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_FOUND)
    foreach(check gguf_crosscheck pretokenize_crosscheck tokenizer_crosscheck llama_crosscheck)
      add_test(NAME model.${check}
               COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tools/${check}.py
                       --probe $<TARGET_FILE:skv_model_probe>
                       --model ${PROJECT_SOURCE_DIR}/samples/models/SmolLM2-135M-Instruct.Q4_1.gguf)
      set_tests_properties(model.${check} PROPERTIES SKIP_RETURN_CODE 77 LABELS model TIMEOUT 600)
    endforeach()
  endif()
endif()
