# Third-party dependencies, all from Debian 12 packages (see README.md):
#   the library: libxsimd-dev (CMake config, headers only), libhwloc-dev (pkg-config only);
#   the tools (tests, benchmarks, the program): libomp-dev, libpng-dev (mask pictures);
#   the program and benchmarks: libopenblas-dev; tests: libgtest-dev; benchmarks: libbenchmark-dev.
# Each is looked for only when something that is built uses it, so that a project embedding the
# library needs only the library's two.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(xsimd 8.1 REQUIRED CONFIG)
# Debian's xsimd config names an "xtl" link dependency that xsimd only needs for its optional
# xtl interop (not packaged as a library): use the headers alone.
get_target_property(SAMPLEATTN_XSIMD_INCLUDE xsimd INTERFACE_INCLUDE_DIRECTORIES)
add_library(sampleattn_xsimd INTERFACE)
target_include_directories(sampleattn_xsimd SYSTEM INTERFACE ${SAMPLEATTN_XSIMD_INCLUDE})
# PkgConfig::SAMPLEATTN_HWLOC; the installed package config (cmake/sampleattnConfig.cmake.in)
# recreates the same name for the static library's consumers.
set(SAMPLEATTN_HWLOC_MIN_VERSION 2.0)
pkg_check_modules(SAMPLEATTN_HWLOC REQUIRED IMPORTED_TARGET hwloc>=${SAMPLEATTN_HWLOC_MIN_VERSION})

# OpenBLAS (SGEMM as the speed reference): Debian ships a CMake config and a pkg-config file;
# pkg-config finds the pthread flavour.
if(SAMPLEATTN_BUILD_CLI OR SAMPLEATTN_BUILD_BENCH)
  pkg_check_modules(SAMPLEATTN_OPENBLAS REQUIRED IMPORTED_TARGET openblas)
endif()

if(SAMPLEATTN_BUILD_TOOLS)
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  find_package(PNG REQUIRED)
endif()

if(SAMPLEATTN_BUILD_TESTS)
  find_package(GTest REQUIRED CONFIG)
endif()
if(SAMPLEATTN_BUILD_BENCH)
  find_package(benchmark REQUIRED CONFIG)
endif()

# MPI (Debian's libopenmpi-dev + openmpi-bin) for libsampleattn_mpi, the context-parallel layer
# (src/mpi, docs/SCALING.md): AUTO builds it when MPI's C bindings are found. A project that embeds
# the library (add_subdirectory, FetchContent) gets it only when it asks (OFF by default there).
if(PROJECT_IS_TOP_LEVEL)
  set(SAMPLEATTN_MPI_DEFAULT AUTO)
else()
  set(SAMPLEATTN_MPI_DEFAULT OFF)
endif()
set(SAMPLEATTN_MPI ${SAMPLEATTN_MPI_DEFAULT} CACHE STRING "Build libsampleattn_mpi: AUTO (when MPI is found), ON or OFF")
set_property(CACHE SAMPLEATTN_MPI PROPERTY STRINGS AUTO ON OFF)
set(SAMPLEATTN_HAVE_MPI OFF)
if(NOT SAMPLEATTN_MPI STREQUAL "OFF")
  if(SAMPLEATTN_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS C)
  else()
    find_package(MPI QUIET COMPONENTS C)
  endif()
  if(MPI_C_FOUND)
    set(SAMPLEATTN_HAVE_MPI ON)
  endif()
endif()
message(STATUS "sampleattn: MPI layer ${SAMPLEATTN_HAVE_MPI}")
