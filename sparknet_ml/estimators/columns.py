"""Driver-side checks of input columns, batch memory and the GPU choice, before any Spark job."""
from __future__ import annotations

import json
import math
import os
import shutil

from pyspark.ml.linalg import VectorUDT
from pyspark.sql import types as T


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


def caffe_has_cuda() -> bool:
    """Whether the installed pycaffe was built with CUDA (from its build_info.json)."""
    import caffe
    path = os.path.join(os.path.dirname(caffe.__file__), "build_info.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return bool(json.load(f).get("cuda"))


def resolve_gpu(use_gpu: str) -> int | None:
    """GPU id for the workers (0), or None for the CPU, from the useGpu param.

    Raises
    ------
    ValueError
        For ``"true"`` when pycaffe is a CPU-only build or no GPU is visible.
    """
    if use_gpu == "false":
        return None
    has_cuda = caffe_has_cuda()
    has_gpu = shutil.which("nvidia-smi") is not None
    if use_gpu == "true" and not (has_cuda and has_gpu):
        why = "pycaffe is a CPU-only build (sparknet-ml build-caffe --cuda)" if not has_cuda \
            else "no GPU is visible (nvidia-smi not found)"
        raise ValueError(f"useGpu='true' but {why}")
    return 0 if has_cuda and has_gpu else None
