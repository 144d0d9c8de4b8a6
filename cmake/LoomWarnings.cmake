# Warnings and sanitizers for loom's own targets.
#   loom_target_defaults(target): -Wall -Wextra (and -Werror with LOOM_WERROR) on C++ sources.
# LOOM_SANITIZE=address;undefined builds everything with those sanitizers (a separate build tree).

option(LOOM_WERROR "Treat warnings as errors" OFF)
set(LOOM_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address;undefined")

if(LOOM_SANITIZE)
  string(REPLACE ";" "," _loom_san "${LOOM_SANITIZE}")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${_loom_san}>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=undefined>)
  add_link_options(-fsanitize=${_loom_san})
endif()

function(loom_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${LOOM_WERROR}>>:-Werror>)
  if(LOOM_CUDA)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra ${LOOM_CUDA_GENCODE}>)
  endif()
endfunction()
