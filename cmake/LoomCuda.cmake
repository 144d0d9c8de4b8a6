# CUDA and NCCL, optional. LOOM_CUDA defaults to ON when nvcc is found (on PATH or in
# /usr/local/cuda); with it OFF, or with no CUDA on the machine, everything else builds and every CPU
# test runs. Sets LOOM_HAVE_NCCL when libnccl is found next to the toolkit.

if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "CUDA compiler")
endif()

include(CheckLanguage)
check_language(CUDA)
set(_loom_cuda_default OFF)
if(CMAKE_CUDA_COMPILER)
  set(_loom_cuda_default ON)
endif()
option(LOOM_CUDA "Build the CUDA kernels and backend (kernels/cuda)" ${_loom_cuda_default})

set(LOOM_HAVE_NCCL OFF)
if(LOOM_CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "LOOM_CUDA=ON but no CUDA compiler was found; set CMAKE_CUDA_COMPILER or LOOM_CUDA=OFF")
  endif()
  enable_language(CUDA)
  # CMake 3.25 predates nvcc 13 and does not know its C++20 flag: tell it.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  # Hopper machine code (wgmma and the tensor memory accelerator need the arch-specific 90a target)
  # plus its PTX, written out as -gencode flags so the choice is visible in the build log.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  set(LOOM_CUDA_GENCODE
      "-gencode=arch=compute_90a,code=sm_90a"
      "-gencode=arch=compute_90a,code=compute_90a")
  find_package(CUDAToolkit REQUIRED)
  find_library(NCCL_LIBRARY NAMES nccl HINTS "${CUDAToolkit_LIBRARY_DIR}" /usr/local/cuda/lib /usr/local/cuda/lib64)
  find_path(NCCL_INCLUDE_DIR NAMES nccl.h HINTS "${CUDAToolkit_INCLUDE_DIRS}" /usr/local/cuda/include)
  if(NCCL_LIBRARY AND NCCL_INCLUDE_DIR)
    set(LOOM_HAVE_NCCL ON)
    add_library(NCCL::nccl UNKNOWN IMPORTED)
    set_target_properties(NCCL::nccl PROPERTIES
      IMPORTED_LOCATION "${NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
  endif()
  message(STATUS "loom: CUDA ${CUDAToolkit_VERSION}, NCCL: ${LOOM_HAVE_NCCL}")
else()
  message(STATUS "loom: CUDA off (LOOM_CUDA=OFF or no nvcc); CPU backend only")
endif()
