# Warnings for our own targets: the build stays clean under -Wall -Wextra, with GCC and Clang.
# -Wshadow=local (a local hiding another local) is GCC's; Clang has no such level and would warn
# that it does not know the option.
add_library(sampleattn_warnings INTERFACE)
target_compile_options(sampleattn_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:C,CXX>:-Wall -Wextra -Wno-unused-parameter>
  $<$<COMPILE_LANG_AND_ID:C,GNU>:-Wshadow=local>
  $<$<COMPILE_LANG_AND_ID:CXX,GNU>:-Wshadow=local>)
option(SAMPLEATTN_WERROR "Treat warnings in our own code as errors" OFF)
if(SAMPLEATTN_WERROR)
  target_compile_options(sampleattn_warnings INTERFACE $<$<COMPILE_LANGUAGE:C,CXX>:-Werror>)
endif()
