"""Driver-side checks of input columns and batch memory, before any Spark job; and the GPU
choice, from what the tasks of a fit's first job report."""
from __future__ import annotations

import logging
import math
import os

from pyspark.ml.linalg import VectorUDT
from pyspark.sql import types as T

from ..engine.devices import task_device


def _field(schema: T.StructType, name: str) -> T.StructField:
    if name not in schema.fieldNames():
        raise ValueError(f"column {name!r} not found; the DataFrame has: "
                         f"{', '.join(schema.fieldNames())}")
    return schema[name]


def _is_image_struct(dtype) -> bool:
    return isinstance(dtype, T.StructType) and {"height", "width", "nChannels", "data"} <= set(
        dtype.fieldNames())


def check_features(schema: T.StructType, name: str) -> None:
    """Raise unless ``name`` is a Vector, array of numbers, binary or image struct column."""
    dtype = _field(schema, name).dataType
    ok = (isinstance(dtype, (VectorUDT, T.BinaryType)) or _is_image_struct(dtype)
          or (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.NumericType)))
    if not ok:
        raise ValueError(f"features column {name!r} has type {dtype.simpleString()}; expected "
                         "vector, array<float|double>, binary or an image struct")


def holds_pixels(schema: T.StructType, name: str) -> bool:
    """Whether the features column ``name`` stores uint8 pixels: an image struct, or binary
    (whose rows may also be float32, decided per batch by their length)."""
    dtype = _field(schema, name).dataType
    return isinstance(dtype, T.BinaryType) or _is_image_struct(dtype)


def check_label(schema: T.StructType, name: str) -> None:
    """Raise unless ``name`` is a numeric column."""
    dtype = _field(schema, name).dataType
    if not isinstance(dtype, T.NumericType):
        raise ValueError(f"label column {name!r} has type {dtype.simpleString()}; expected a "
                         "numeric type (class index for classification)")


def check_boolean(schema: T.StructType, name: str) -> None:
    """Raise unless ``name`` is a boolean column."""
    dtype = _field(schema, name).dataType
    if not isinstance(dtype, T.BooleanType):
        raise ValueError(f"validation column {name!r} has type {dtype.simpleString()}; "
                         "expected boolean")


def check_outputs(stage, deploy_net, classification: bool) -> None:
    """Raise unless ``stage``'s outputBlobs are blobs of the deploy net and every output
    column name (rawPrediction, probability for classification nets, prediction, outputBlobs)
    is distinct: checked when fitting and when transforming, before any Spark job.

    Raises
    ------
    ValueError
        Naming the unknown blob (and the known ones) or the repeated column name.
    """
    known = {top for layer in deploy_net.layer for top in layer.top}
    for blob in stage.getOutputBlobs():
        if blob not in known:
            raise ValueError(f"outputBlobs: the deploy net has no blob {blob!r}; it has "
                             f"{', '.join(sorted(known))}")
    names = [stage.getRawPredictionCol(), *([stage.getProbabilityCol()] if classification else []),
             stage.getPredictionCol(), *stage.getOutputBlobs()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"output column name(s) {', '.join(map(repr, repeated))} given twice "
                         "(rawPredictionCol, probabilityCol, predictionCol, outputBlobs): "
                         "every output needs a column of its own")


MAX_INPUT_BATCH_BYTES = 2 ** 30
"""Largest float32 input batch, ``batchSize * prod(inputShape) * 4`` bytes (1 GiB)."""


def check_input_memory(batch: int, shape) -> None:
    """Raise when a float32 batch of ``batch`` examples of ``shape`` is over
    :data:`MAX_INPUT_BATCH_BYTES`."""
    size = int(batch) * math.prod(int(d) for d in shape) * 4
    if size > MAX_INPUT_BATCH_BYTES:
        raise ValueError(f"batchSize={batch} x inputShape={list(shape)} x 4 bytes = {size} bytes "
                         f"per input batch, over the {MAX_INPUT_BATCH_BYTES} bytes cap "
                         "(MAX_INPUT_BATCH_BYTES); lower batchSize or inputShape")


MAX_ROUND_EXAMPLES = 2 ** 24
"""Largest ``syncInterval * batchSize``: the examples one worker's round draws, whose row
indices (and crop draws) a task holds at once (16.8M rows: 128 MiB of int64 indices)."""


def check_round_size(sync_interval: int, batch: int) -> None:
    """Raise when a round would draw more than :data:`MAX_ROUND_EXAMPLES` examples."""
    if sync_interval * batch > MAX_ROUND_EXAMPLES:
        raise ValueError(f"syncInterval={sync_interval} x batchSize={batch} = "
                         f"{sync_interval * batch} examples a round, over the "
                         f"{MAX_ROUND_EXAMPLES} cap (MAX_ROUND_EXAMPLES); lower syncInterval")


def task_slots(conf) -> int:
    """How many tasks one executor runs at once: N of ``local[N]`` / ``local[N,F]``, else
    ``spark.executor.cores`` (default 1) divided by ``spark.task.cpus``."""
    master = conf.get("spark.master", "")
    if master.startswith("local["):
        cores = master[len("local["):].rstrip("]").split(",")[0]
        return os.cpu_count() or 1 if cores == "*" else int(cores)
    if master == "local":
        return 1
    return max(1, int(conf.get("spark.executor.cores", "1")) // int(conf.get("spark.task.cpus",
                                                                              "1")))


def resolve_gpu(use_gpu: str, conf=None, devices=None, purpose: str = "training") -> int | None:
    """0 when the workers train on GPUs (each task then takes the GPU Spark assigned it,
    see :func:`sparknet_ml.engine.devices.task_gpu`), or None for the CPU; the reason is
    logged.

    ``"auto"`` means GPUs when every task's pycaffe has CUDA and every task sees a GPU. A GPU
    is refused (``"true"``) or skipped with a warning (``"auto"``) when an executor runs
    several tasks at once but Spark does not assign them GPUs: they would share GPU 0.

    Parameters
    ----------
    use_gpu : str
        ``"auto"``, ``"true"`` or ``"false"``.
    conf : SparkConf or dict, optional
        The session's settings (task slots per executor, ``spark.task.resource.gpu.amount``).
    devices : list of TaskDevice, optional
        What the tasks of the fit's first job reported; without them, this process's own.
    purpose : str
        What the log line says the device is for (``"training"``, ``"scoring"``).

    Raises
    ------
    ValueError
        For ``"true"`` when a task's pycaffe is a CPU-only build, a task sees no GPU, or tasks
        would share a GPU by accident.
    """
    if use_gpu == "false":
        return None
    devices = devices or [task_device(None)]

    def hosts(found):
        return ", ".join(sorted({d.host for d in found}))
    no_cuda = [d for d in devices if not d.cuda_build]
    no_gpu = [d for d in devices if not d.gpu_visible]
    why, level = None, logging.INFO
    if no_cuda:
        why = (f"pycaffe is a CPU-only build on {hosts(no_cuda)} (sparknet-ml build-caffe "
               "--cuda)")
    elif no_gpu:
        why = f"no GPU is visible to the tasks on {hosts(no_gpu)} (nvidia-smi not found)"
    elif not all(d.gpu_assigned for d in devices):
        slots = task_slots(conf) if conf is not None else 1
        if slots > 1:
            level = logging.WARNING  # GPUs are there, but the settings would share one
            why = (f"{slots} tasks run at once on an executor but spark.task.resource.gpu."
                   "amount is not set, so they would all use GPU 0: set spark.task.resource."
                   "gpu.amount=1 with spark.executor.resource.gpu.amount and a discovery "
                   "script, or spark.executor.cores=1")
    if why is not None:
        if use_gpu == "true":
            raise ValueError(f"useGpu='true' but {why}")
        logging.getLogger("sparknet_ml").log(level, "%s on the CPU: %s", purpose, why)
        return None
    logging.getLogger("sparknet_ml").info("%s on GPUs: %d tasks with a CUDA pycaffe on %s",
                                          purpose, len(devices), hosts(devices))
    return 0
