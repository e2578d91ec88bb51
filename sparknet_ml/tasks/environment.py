"""A task's set-up: the GPU Spark assigned it, and Caffe's messages where Spark reads them."""
from __future__ import annotations

import contextlib
import dataclasses
import os

from ..engine.devices import task_gpu


def on_task_gpu(spec):
    """``spec`` (a TrainSpec or ScoreSpec) on the GPU Spark assigned the running task;
    unchanged for the CPU."""
    if spec.gpu is None:
        return spec
    from pyspark import TaskContext
    return dataclasses.replace(spec, gpu=task_gpu(TaskContext.get().resources()))


def _open_fd_of(path: str) -> int | None:
    """The descriptor this process already has open on ``path`` (Linux), if any."""
    try:
        for fd in os.listdir("/proc/self/fd"):
            if os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(path):
                return int(fd)
    except OSError:
        pass
    return None


@contextlib.contextmanager
def caffe_messages_to_spark():
    """While Caffe runs in a task, point fd 2 (where glog writes) at the file PySpark reads
    back when a Python worker crashes (``spark.python.worker.faulthandler.enabled=true``), so
    an abort's ``Check failed`` line reaches the exception on the driver. The worker's own
    descriptor on that file is shared, so faulthandler's report follows glog's line instead
    of overwriting it."""
    directory = os.environ.get("PYTHON_FAULTHANDLER_DIR")
    target = _open_fd_of(os.path.join(directory, str(os.getpid()))) if directory else None
    if target is None:
        yield
        return
    saved = os.dup(2)
    os.dup2(target, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def partition_id(batches):
    """mapInArrow function: one row holding the running task's partition index (its rows
    are not read)."""
    import pyarrow as pa
    from pyspark import TaskContext
    yield pa.RecordBatch.from_pydict({"partition": [TaskContext.get().partitionId()]})
