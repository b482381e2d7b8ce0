#!/bin/sh
# test_install.sh BUILD_DIR EXAMPLE_C
# Installs the client component into a temp prefix, then builds EXAMPLE_C
# against it twice - with pkg-config (shared and --static) and with
# find_package(Baton) - and runs the results. With BATON_TEST_TARGET set
# (via with_batond.sh) the programs talk to a real batond.
set -eu
build=$1
example=$2
cc=${CC:-cc}
# EXAMPLE_CFLAGS: extra flags for the example (e.g. -fsanitize=... in a sanitizer build).
xflags=${EXAMPLE_CFLAGS:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/baton_install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --component client --prefix "$prefix" >"$tmp/install.log"
test -f "$prefix/include/baton/baton.h"
pc=$(find "$prefix" -name baton.pc)
test -n "$pc"
ls "$(dirname "$(dirname "$pc")")"/libbaton.so* "$(dirname "$(dirname "$pc")")"/libbaton.a >/dev/null
test -x "$prefix/bin/baton"

# The public header must not need gRPC or protobuf-c.
if grep -E '#include <(grpc|protobuf)' "$prefix/include/baton/baton.h"; then
    echo "baton.h includes gRPC/protobuf headers" >&2
    exit 1
fi

export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir baton)
# shellcheck disable=SC2046
$cc -std=c11 -Wall -Wextra -Werror $xflags -o "$tmp/ex_shared" "$example" $(pkg-config --cflags --libs baton)
# shellcheck disable=SC2046
$cc -std=c11 -Wall -Wextra -Werror $xflags -o "$tmp/ex_static" "$example" $(pkg-config --cflags baton) \
    "$libdir/libbaton.a" $(pkg-config --libs-only-other --libs-only-L --libs-only-l --static baton | sed 's/-lbaton//')

# find_package(Baton) -> Baton::baton
mkdir -p "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(baton_consumer C)
find_package(Baton 0.1 REQUIRED)
add_executable(ex_cmake "$example")
target_link_libraries(ex_cmake PRIVATE Baton::baton)
CMAKE
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$xflags" -DCMAKE_EXE_LINKER_FLAGS="$xflags" >"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; exit 1; }
cmake --build "$tmp/cm/build" >>"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; exit 1; }

for ex in "$tmp/ex_shared" "$tmp/ex_static" "$tmp/cm/build/ex_cmake"; do
    if [ -n "${BATON_TEST_TARGET:-}" ]; then
        LD_LIBRARY_PATH=$libdir "$ex" "$BATON_TEST_TARGET" | grep -q '^holding video:123, fencing [0-9]'
    else
        # No server: the program must still load and fail cleanly (exit 1).
        rc=0
        LD_LIBRARY_PATH=$libdir "$ex" 127.0.0.1:1 2>/dev/null || rc=$?
        [ "$rc" = 1 ]
    fi
done
echo "install test ok: $prefix"
