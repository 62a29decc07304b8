# Warnings for our own targets: the build stays clean under -Wall -Wextra.
add_library(sampleattn_warnings INTERFACE)
target_compile_options(sampleattn_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:C,CXX>:-Wall -Wextra -Wshadow=local -Wno-unused-parameter>)
option(SAMPLEATTN_WERROR "Treat warnings in our own code as errors" OFF)
if(SAMPLEATTN_WERROR)
  target_compile_options(sampleattn_warnings INTERFACE $<$<COMPILE_LANGUAGE:C,CXX>:-Werror>)
endif()
