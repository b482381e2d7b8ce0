# grpc_c_generate(<OUT_SRCS var> <OUT_HDRS var>
#                 PROTO_PATH <dir> PROTOS <file.proto...> OUTPUT_DIR <dir>
#                 [IMPORT_DIRS <dir>...])
#
# At build time runs protoc-c and protoc-gen-grpc-c on PROTOS (paths relative
# to PROTO_PATH, or absolute paths inside it) and sets OUT_SRCS / OUT_HDRS to
# the generated X.pb-c.c + X.grpc-c.c and X.pb-c.h + X.grpc-c.h under
# OUTPUT_DIR (same relative layout as the .proto files). Add the sources to a
# target, add OUTPUT_DIR to its include directories and link grpc_c_runtime.
# Generated files live in the build tree only; they are never committed.
# Works from any directory added after client/protoc-gen-grpc-c (functions are global).

function(grpc_c_generate out_srcs out_hdrs)
  cmake_parse_arguments(G "" "PROTO_PATH;OUTPUT_DIR" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT G_PROTO_PATH OR NOT G_OUTPUT_DIR OR NOT G_PROTOS)
    message(FATAL_ERROR "grpc_c_generate: PROTO_PATH, PROTOS and OUTPUT_DIR are required")
  endif()
  get_filename_component(proto_path ${G_PROTO_PATH} ABSOLUTE)
  file(MAKE_DIRECTORY ${G_OUTPUT_DIR})
  set(includes --proto_path=${proto_path})
  foreach(dir ${G_IMPORT_DIRS})
    list(APPEND includes --proto_path=${dir})
  endforeach()

  set(srcs)
  set(hdrs)
  foreach(proto ${G_PROTOS})
    if(IS_ABSOLUTE ${proto})
      file(RELATIVE_PATH rel ${proto_path} ${proto})
    else()
      set(rel ${proto})
    endif()
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    set(gen_c ${G_OUTPUT_DIR}/${base}.pb-c.c ${G_OUTPUT_DIR}/${base}.grpc-c.c)
    set(gen_h ${G_OUTPUT_DIR}/${base}.pb-c.h ${G_OUTPUT_DIR}/${base}.grpc-c.h)
    add_custom_command(
      OUTPUT ${gen_c} ${gen_h}
      COMMAND ${PROTOC_C} ${includes} --c_out=${G_OUTPUT_DIR} ${proto_path}/${rel}
      COMMAND ${PROTOC} ${includes}
              --plugin=protoc-gen-grpc-c=$<TARGET_FILE:protoc-gen-grpc-c>
              --grpc-c_out=${G_OUTPUT_DIR} ${proto_path}/${rel}
      DEPENDS ${proto_path}/${rel} protoc-gen-grpc-c
      COMMENT "grpc_c_generate ${rel}"
      VERBATIM)
    list(APPEND srcs ${gen_c})
    list(APPEND hdrs ${gen_h})
  endforeach()
  set(${out_srcs} ${srcs} PARENT_SCOPE)
  set(${out_hdrs} ${hdrs} PARENT_SCOPE)
endfunction()
