# Per-ISA translation units. Each kernel family is written once as a template over the ISA and
# instantiated per ISA in its own translation unit, compiled with exactly that ISA's flags
# (SAMPLEATTN_ISA_FLAGS_<isa>, cmake/KernelLists.cmake).

# sampleattn_add_isa_sources(<target> <isa> <files...>): adds files compiled for one ISA.
function(sampleattn_add_isa_sources target isa)
  if(NOT isa IN_LIST SAMPLEATTN_ISAS)
    message(FATAL_ERROR "unknown ISA ${isa} (not in SAMPLEATTN_ISAS)")
  endif()
  target_sources(${target} PRIVATE ${ARGN})
  set(options ${SAMPLEATTN_ISA_FLAGS_${isa}})
  if(SAMPLEATTN_SANITIZE)
    # GCC's AddressSanitizer at -O2 took 6-7 minutes on the AVX-512 kernel unit alone, most of a
    # sanitizer build on two cores; -O1 is what ASan's own docs suggest (that unit at -O1 under
    # ASan + UBSan, 2026-12-06: 124 s with GCC 12, 65 s with clang 14, which CI's sanitizer
    # builds use).
    list(APPEND options -O1)
  endif()
  if(options)
    # Source properties belong to a directory: set them where the target is defined, which is
    # not CMAKE_SOURCE_DIR when this project is embedded (add_subdirectory, FetchContent).
    set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS "${options}")
  endif()
endfunction()

# sampleattn_add_kernel_family(<target> <dir>): adds <dir>/<family>_<isa>.cpp for every ISA in
# SAMPLEATTN_ISAS that has one (<family> is the folder's name). An ISA may skip a family; the
# tables in simd/kernel_config.cpp say which entry points each ISA provides.
function(sampleattn_add_kernel_family target dir)
  get_filename_component(family ${dir} NAME)
  foreach(isa ${SAMPLEATTN_ISAS})
    if(EXISTS ${dir}/${family}_${isa}.cpp)
      sampleattn_add_isa_sources(${target} ${isa} ${dir}/${family}_${isa}.cpp)
    endif()
  endforeach()
endfunction()
