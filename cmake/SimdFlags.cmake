# Per-ISA compile flags. Each kernel family is written once as a template over the ISA and
# instantiated per ISA in its own translation unit, compiled with exactly these flags.
set(SAMPLEATTN_AVX2_FLAGS -mavx2 -mfma -mf16c)
set(SAMPLEATTN_AVX512_FLAGS -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16)

# sampleattn_add_isa_sources(<target> <isa> <files...>): adds files compiled for one ISA.
function(sampleattn_add_isa_sources target isa)
  target_sources(${target} PRIVATE ${ARGN})
  if(isa STREQUAL "avx2")
    set_source_files_properties(${ARGN} DIRECTORY ${CMAKE_SOURCE_DIR} PROPERTIES COMPILE_OPTIONS "${SAMPLEATTN_AVX2_FLAGS}")
  elseif(isa STREQUAL "avx512")
    set_source_files_properties(${ARGN} DIRECTORY ${CMAKE_SOURCE_DIR} PROPERTIES COMPILE_OPTIONS "${SAMPLEATTN_AVX512_FLAGS}")
  elseif(NOT isa STREQUAL "scalar")
    message(FATAL_ERROR "unknown ISA ${isa}")
  endif()
endfunction()
