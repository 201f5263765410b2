# CLI tests: each tests/cli/test_*.sh runs the real skv binary and checks exit codes, stdout,
# stderr and files. They source tests/cli/lib.sh.
file(GLOB SKV_CLI_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cli/test_*.sh)
foreach(t ${SKV_CLI_TESTS})
  get_filename_component(name ${t} NAME_WE)
  add_test(NAME cli.${name} COMMAND bash ${t} $<TARGET_FILE:skv_cli> ${PROJECT_SOURCE_DIR})
  set_tests_properties(cli.${name} PROPERTIES LABELS cli SKIP_RETURN_CODE 77 TIMEOUT 300
                       ENVIRONMENT "SKV_HOSTILE=$<TARGET_FILE:skv_hostile>")
endforeach()
