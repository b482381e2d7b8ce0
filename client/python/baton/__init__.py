"""Baton: locks, GPU pools and watches from the Baton lock service.

    import baton

    client = baton.Client("127.0.0.1:50051")
    with client.lock("video:123", wait="30s") as lock:
        transcode(fencing=lock.fencing)

    with client.gpu("node7", devices=8) as gpu:   # CUDA_VISIBLE_DEVICES set
        run_model()

asyncio: baton.aio.Client (same API). Celery: baton.celery.
"""
from baton._common import (BatonError, Busy, Description, Event, InvalidArgument, LockLost,  # noqa: F401
                           Unavailable, seconds)
from baton._sync import Client, Lock, Watch  # noqa: F401

__all__ = ["Client", "Lock", "Watch", "Event", "Description", "BatonError", "Busy", "LockLost",
           "Unavailable", "InvalidArgument", "seconds"]
__version__ = "0.1.0"
