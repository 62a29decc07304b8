# Third-party dependencies, all from Debian 12 packages (see README.md):
#   libxsimd-dev (CMake config), libhwloc-dev (pkg-config only), libopenblas-dev, libomp-dev,
#   libgtest-dev, libbenchmark-dev, libpng-dev (mask pictures).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(xsimd 8.1 REQUIRED CONFIG)
# Debian's xsimd config names an "xtl" link dependency that xsimd only needs for its optional
# xtl interop (not packaged as a library): use the headers alone.
get_target_property(SAMPLEATTN_XSIMD_INCLUDE xsimd INTERFACE_INCLUDE_DIRECTORIES)
add_library(sampleattn_xsimd INTERFACE)
target_include_directories(sampleattn_xsimd SYSTEM INTERFACE ${SAMPLEATTN_XSIMD_INCLUDE})
pkg_check_modules(HWLOC REQUIRED IMPORTED_TARGET hwloc>=2.0)

# OpenBLAS: Debian ships a CMake config and a pkg-config file; pkg-config finds the pthread flavour.
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)

find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(PNG REQUIRED)

if(SAMPLEATTN_BUILD_TESTS)
  find_package(GTest REQUIRED CONFIG)
endif()
if(SAMPLEATTN_BUILD_BENCH)
  find_package(benchmark REQUIRED CONFIG)
endif()
