# Installation and packaging (SAMPLEATTN_INSTALL; on by default when this is the top-level
# project). GNUInstallDirs layout:
#   <libdir>/libsampleattn.so.<soversion> (+ links)   the shared library        component runtime
#   <libdir>/libsampleattn_cuda.so                    the CUDA module, if built component runtime
#   <bindir>/sampleattn                               the program, when built   component runtime
#   <libdir>/libsampleattn_mpi.so.1 (+ links)         the MPI layer, when built component runtime
#   <libdir>/libsampleattn.a                          the static archive        component development
#   <includedir>/sampleattn/sampleattn.h, .hpp        the public headers        component development
#   <libdir>/cmake/sampleattn/                        find_package(sampleattn)  component development
#   <libdir>/pkgconfig/sampleattn.pc                  pkg-config                component development
# docs/PACKAGING.md says how consumers use each, and why the package's version compatibility is
# what it is. Backend modules (libraries the core loads at run time) are installed with
# sampleattn_install_backend_module() below.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SAMPLEATTN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/sampleattn CACHE STRING
    "Where sampleattnConfig.cmake is installed, relative to the prefix")
mark_as_advanced(SAMPLEATTN_INSTALL_CMAKEDIR)

# The static archive never contains CUDA code (the CUDA backend is a module, docs/ABI.md), so it
# is installed in every build.
set(SAMPLEATTN_INSTALL_STATIC ON)

# What a program that links the static archive needs besides it. hwloc and threads come from the
# targets' link dependencies; the C++ runtime is what the C++ compiler links by itself and the C
# compiler does not (libstdc++ and libm with GCC), so that C programs link the archive as well.
set(SAMPLEATTN_CXX_RUNTIME_LIBS ${CMAKE_CXX_IMPLICIT_LINK_LIBRARIES})
list(REMOVE_ITEM SAMPLEATTN_CXX_RUNTIME_LIBS ${CMAKE_C_IMPLICIT_LINK_LIBRARIES})
list(REMOVE_DUPLICATES SAMPLEATTN_CXX_RUNTIME_LIBS)

# --- the libraries, headers and the program -------------------------------------------------------
set_target_properties(sampleattn PROPERTIES EXPORT_NAME sampleattn)
install(TARGETS sampleattn EXPORT sampleattnTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(SAMPLEATTN_INSTALL_STATIC)
  set_target_properties(sampleattn_static PROPERTIES EXPORT_NAME sampleattn_static)
  foreach(lib ${SAMPLEATTN_CXX_RUNTIME_LIBS})
    target_link_libraries(sampleattn_static INTERFACE "$<INSTALL_INTERFACE:$<LINK_ONLY:${lib}>>")
  endforeach()
  install(TARGETS sampleattn_static EXPORT sampleattnStaticTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()
install(FILES ${PROJECT_SOURCE_DIR}/include/sampleattn/sampleattn.h
              ${PROJECT_SOURCE_DIR}/include/sampleattn/sampleattn.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sampleattn COMPONENT development)
# The context-parallel layer (built with MPI): its library and header. Not in the CMake package's
# exports (a consumer links it with its own MPI: -lsampleattn_mpi, docs/PACKAGING.md).
if(TARGET sampleattn_mpi)
  install(TARGETS sampleattn_mpi
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development)
  install(FILES ${PROJECT_SOURCE_DIR}/include/sampleattn/sampleattn_mpi.h
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sampleattn COMPONENT development)
endif()
if(TARGET sampleattn_cli)
  install(TARGETS sampleattn_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
endif()

# sampleattn_install_backend_module(<target>): installs a backend MODULE library (one the core
# loads at run time, e.g. a CUDA backend sampleattn_cuda) next to libsampleattn.so, in the runtime
# component. Modules are not linked against, so they are not part of the CMake package's exports.
function(sampleattn_install_backend_module target)
  get_target_property(type ${target} TYPE)
  if(NOT type STREQUAL "MODULE_LIBRARY")
    message(FATAL_ERROR "sampleattn_install_backend_module: ${target} is a ${type}, not a MODULE library")
  endif()
  install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime)
endfunction()
# Backend modules: the CUDA backend, beside libsampleattn.so where the library looks for it.
if(TARGET sampleattn_cuda)
  sampleattn_install_backend_module(sampleattn_cuda)
endif()

# --- the CMake package -------------------------------------------------------------------------
# One export set per library, so that the shared one is usable without the static one's
# dependencies (hwloc through pkg-config); sampleattnConfig.cmake includes each.
install(EXPORT sampleattnTargets NAMESPACE sampleattn:: DESTINATION ${SAMPLEATTN_INSTALL_CMAKEDIR}
        COMPONENT development)
if(SAMPLEATTN_INSTALL_STATIC)
  install(EXPORT sampleattnStaticTargets NAMESPACE sampleattn:: DESTINATION ${SAMPLEATTN_INSTALL_CMAKEDIR}
          COMPONENT development)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/sampleattnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/sampleattnConfig.cmake
                              INSTALL_DESTINATION ${SAMPLEATTN_INSTALL_CMAKEDIR})
# Version compatibility of the package (the source API; the binary ABI has its own number, the
# soname, docs/ABI.md): before 1.0 a minor release may change the API, so a request for 0.2
# accepts 0.2.x only; from 1.0 on, the same major.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_sampleattn_compatibility SameMinorVersion)
else()
  set(_sampleattn_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/sampleattnConfigVersion.cmake
                                 COMPATIBILITY ${_sampleattn_compatibility})
install(FILES ${PROJECT_BINARY_DIR}/package/sampleattnConfig.cmake
              ${PROJECT_BINARY_DIR}/package/sampleattnConfigVersion.cmake
        DESTINATION ${SAMPLEATTN_INSTALL_CMAKEDIR} COMPONENT development)

# --- sampleattn.pc ------------------------------------------------------------------------------
# Libs.private: what a static link adds to -lsampleattn. hwloc is named by its flags rather than
# as Requires.private: hwloc.pc's own private libraries (-ludev, for a static libhwloc) would then
# be added too, and Debian's libhwloc-dev does not bring libudev.so.
set(SAMPLEATTN_PC_LIBS_PRIVATE "")
foreach(dir ${SAMPLEATTN_HWLOC_LIBRARY_DIRS})
  if(NOT dir IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
    list(APPEND SAMPLEATTN_PC_LIBS_PRIVATE -L${dir})
  endif()
endforeach()
# CMAKE_DL_LIBS: dlopen, for the backend modules (part of libc from glibc 2.34 on).
foreach(lib ${SAMPLEATTN_HWLOC_LIBRARIES} ${SAMPLEATTN_CXX_RUNTIME_LIBS} ${CMAKE_DL_LIBS})
  list(APPEND SAMPLEATTN_PC_LIBS_PRIVATE -l${lib})
endforeach()
list(APPEND SAMPLEATTN_PC_LIBS_PRIVATE -pthread)
list(JOIN SAMPLEATTN_PC_LIBS_PRIVATE " " SAMPLEATTN_PC_LIBS_PRIVATE)
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(SAMPLEATTN_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(SAMPLEATTN_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
# The prefix is filled in at install time, when it is known: `cmake --install --prefix P` changes
# it after configuration. Configuring keeps the placeholder @SAMPLEATTN_PC_PREFIX@ for then.
set(SAMPLEATTN_PC_PREFIX "@SAMPLEATTN_PC_PREFIX@")
configure_file(${PROJECT_SOURCE_DIR}/cmake/sampleattn.pc.in ${PROJECT_BINARY_DIR}/package/sampleattn.pc.in @ONLY)
install(CODE "
  set(SAMPLEATTN_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/package/sampleattn.pc.in\" \"${PROJECT_BINARY_DIR}/package/sampleattn.pc\" @ONLY)
" COMPONENT development)
install(FILES ${PROJECT_BINARY_DIR}/package/sampleattn.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT development)
