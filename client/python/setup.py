"""Builds the `baton` package. The gRPC stubs (baton/v1/lock_pb2*.py) are
generated here from the repository's proto/ with protoc and the standard
grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc); they
are never committed. Nothing is downloaded: `pip install ./client/python`
works offline. There is deliberately no pyproject.toml: with one, pip would
build in an isolated environment and download setuptools into it; without
one, it builds with the setuptools and wheel already installed (Debian:
python3-setuptools, python3-wheel). `--no-build-isolation` works as well.

Where proto/ is not at ../../proto (a copied tree), set BATON_PROTO_DIR.
Other tools: $PROTOC, $GRPC_PYTHON_PLUGIN.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["baton/v1/lock.proto"]


def proto_dir():
    for cand in (os.environ.get("BATON_PROTO_DIR"), os.path.join(HERE, "proto"),
                 os.path.join(HERE, "..", "..", "proto")):
        if cand and os.path.isfile(os.path.join(cand, PROTOS[0])):
            return os.path.abspath(cand)
    raise SystemExit("baton: cannot find proto/baton/v1/lock.proto (set BATON_PROTO_DIR)")


def tool(env, name, fallback):
    path = os.environ.get(env) or shutil.which(name) or fallback
    if not path or not os.access(path, os.X_OK):
        raise SystemExit("baton: %s not found (Debian: %s); set $%s" % (
            name, "protobuf-compiler-grpc" if "grpc" in name else "protobuf-compiler", env))
    return path


class BuildWithStubs(build_py):
    """build_py, then protoc writes the stubs next to the package's modules."""

    def run(self):
        super().run()
        src = proto_dir()
        out = os.path.abspath(self.build_lib)
        os.makedirs(os.path.join(out, "baton", "v1"), exist_ok=True)
        cmd = [tool("PROTOC", "protoc", "/usr/bin/protoc"), "-I", src,
               "--python_out=" + out, "--grpc_python_out=" + out,
               "--plugin=protoc-gen-grpc_python=" + tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin",
                                                         "/usr/bin/grpc_python_plugin")]
        subprocess.run(cmd + PROTOS, check=True)


setup(
    name="baton",
    version="0.1.0",
    description="Python client for the Baton lock service (sync, asyncio, GPU pools, Celery)",
    packages=["baton", "baton.v1"],
    python_requires=">=3.9",
    install_requires=["grpcio", "protobuf"],
    extras_require={"celery": ["celery"]},
    cmdclass={"build_py": BuildWithStubs},
)
