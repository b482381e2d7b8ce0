# The generated stubs lock_pb2.py and lock_pb2_grpc.py are written here at
# build time (setup.py runs protoc on proto/baton/v1/lock.proto).
