#!/bin/sh
# install.sh VENV_DIR SOURCE_DIR
#
# What a user does, offline: a venv on the system Python with Debian's
# grpcio and protobuf (--system-site-packages), then
#   pip install --no-index ./client/python
# The package is built from a copy in the venv's directory, so the source
# tree gets no build/ or egg-info from the tests. The Python tests then run
# with VENV_DIR/bin/python, against the installed package.
set -eu
venv=$1
src=$(cd "$2" && pwd)
rm -rf "$venv"
/usr/bin/python3 -m venv --system-site-packages "$venv"
mkdir -p "$venv/src"
cp -r "$src/client/python" "$venv/src/python"
rm -rf "$venv/src/python/build" "$venv/src/python"/*.egg-info
BATON_PROTO_DIR="$src/proto" PIP_NO_INDEX=1 \
    "$venv/bin/python" -m pip install --quiet --no-index --no-cache-dir "$venv/src/python"
cd /
"$venv/bin/python" -c 'import baton, baton.aio, baton.v1.lock_pb2_grpc; print("installed", baton.__file__)'
