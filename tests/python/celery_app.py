"""A Celery app as a GPU/video team writes it with baton.celery (used by
test_celery.py; the worker runs it with the tests' Redis as broker)."""
import os
import time

from celery import Celery

from baton.celery import current_lock, gpu, lock

app = Celery("baton_it", broker=os.environ["CELERY_BROKER"], backend=os.environ["CELERY_BROKER"])
app.conf.update(baton_target=os.environ["BATON_TARGET"], worker_prefetch_multiplier=1,
                broker_connection_retry_on_startup=True, task_default_queue=os.environ["CELERY_QUEUE"])


@app.task
@gpu("node7", devices=4)
def transcribe(hold=0.0):
    time.sleep(hold)
    lk = current_lock()
    return {"device": lk.device, "key": lk.key, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid()}


@app.task
@gpu("node8", devices=4, count=2)
def train(hold=0.0):
    time.sleep(hold)
    lk = current_lock()
    return {"devices": list(lk.devices), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}


@app.task
@lock("video:{video_id}", if_busy="skip")
def transcode(video_id, hold=0.0, fail=False, pidfile=None):
    if pidfile:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
    time.sleep(hold)
    if fail:
        raise ValueError("transcode failed")
    return {"key": current_lock().key, "fencing": current_lock().fencing}


@app.task(bind=True, max_retries=100)
@lock("video:{video_id}", if_busy="retry", countdown="100ms")
def transcode_later(self, video_id):
    return {"retries": self.request.retries, "key": current_lock().key}
