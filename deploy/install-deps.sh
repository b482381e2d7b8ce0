#!/usr/bin/env bash
# Installs the Debian 12 packages Baton needs, only those that are missing.
#   install-deps.sh build   compilers and libraries to build batond, libbaton, baton
#   install-deps.sh test    build + what the test suite and the benchmark run against
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
            protobuf-compiler libprotobuf-dev libprotoc-dev libhiredis-dev libyaml-dev libevent-dev libssl-dev
            libmicrohttpd-dev redis-server)
test_pkgs=(libcmocka-dev python3 python3-grpcio python3-protobuf protobuf-compiler-grpc python3-pytest
           python3-venv python3-pip python3-setuptools python3-wheel python3-celery python3-redis
           etcd-server gnuplot-nox openssl
           systemd prometheus python3-yaml) # systemd-analyze, promtool, yaml: tests/deploy

want=("${build_pkgs[@]}")
[ "${1:-build}" = test ] && want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The etcd-server package starts a system etcd on the default ports; Baton's
# benchmark runs its own private etcd, so stop the system one if it started.
if printf '%s\n' "${missing[@]}" | grep -qx etcd-server; then
    $SUDO systemctl disable --now etcd >/dev/null 2>&1 || pkill -x etcd 2>/dev/null || true
fi
# The prometheus package (for promtool) enables a system Prometheus on :9090.
if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if printf '%s\n' "${missing[@]}" | grep -qx redis-server; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
