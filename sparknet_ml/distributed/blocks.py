"""Training data converted once into one block per partition, kept on the executor's disk.

Spark caches only a small handle per partition; the block itself is two ``.npy`` files in
Spark's local directory on the executor that converted it, memory-mapped by every round's
task (the OS page cache keeps them hot and shared between Python workers). So per round
only weights travel, and the JVM heap holds no training data. Rounds run where the handle
is cached (Spark's locality preference); if an executor is lost, Spark recomputes its
handles — converting those partitions again — on another one.

Features whose values are all integers in 0..255 (pixels) are stored as uint8, else float32;
the net's input transform (scale, mean) is applied per batch when the block is read.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """How DataFrame columns become a net's input blobs."""

    features_col: str
    label_col: str
    input_shape: tuple[int, ...]
    scale: float = 1.0
    mean: tuple[float, ...] = ()


@dataclass(frozen=True)
class BlockHandle:
    """Where one partition's block lives: what Spark caches instead of the data."""

    partition: int
    features_path: str
    labels_path: str
    rows: int
    host: str


def to_rows(batches, spec: InputSpec):
    """mapInArrow function: each Arrow batch → one row of raw float32 features and labels."""
    import pyarrow as pa
    from ..data.arrow import features_to_array, labels_to_array
    for batch in batches:
        x = features_to_array(batch.column(spec.features_col), spec.input_shape,
                              name=spec.features_col)
        y = labels_to_array(batch.column(spec.label_col), name=spec.label_col)
        yield pa.RecordBatch.from_pydict({"features": [x.tobytes()], "labels": [y.tobytes()]})


def compact(x: np.ndarray) -> np.ndarray:
    """``x`` as uint8 when every value is an integer in 0..255, else unchanged."""
    if x.size and x.min() >= 0 and x.max() <= 255 and np.array_equal(x, np.round(x)):
        return x.astype(np.uint8)
    return x


def block_dir(fit_id: str) -> str:
    """This executor's folder for a fit's blocks: under Spark's local dir when known."""
    local = os.environ.get("SPARK_LOCAL_DIRS", "").split(",")[0] or tempfile.gettempdir()
    return os.path.join(local, "sparknet_ml-blocks", fit_id)


def _save(path: str, array: np.ndarray) -> None:
    with open(path + ".tmp", "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(path + ".tmp", path)  # a retried task rewrites the same content atomically


def store_block(index: int, rows, input_shape: tuple[int, ...], fit_id: str):
    """Merge a partition's converted rows into one block on local disk; yield its handle."""
    features, labels = [], []
    for row in rows:
        features.append(np.frombuffer(row.features, np.float32))
        labels.append(np.frombuffer(row.labels, np.float32))
    x = np.concatenate(features) if features else np.empty(0, np.float32)
    y = np.concatenate(labels) if labels else np.empty(0, np.float32)
    directory = block_dir(fit_id)
    os.makedirs(directory, exist_ok=True)
    handle = BlockHandle(index, os.path.join(directory, f"part-{index:05d}-features.npy"),
                         os.path.join(directory, f"part-{index:05d}-labels.npy"), len(y),
                         socket.gethostname())
    _save(handle.features_path, compact(x).reshape((-1,) + tuple(input_shape)))
    _save(handle.labels_path, y)
    yield handle


_OPEN: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_block(handle: BlockHandle) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a block's features and labels (once per Python worker).

    Raises
    ------
    FileNotFoundError
        When the task runs on another host than the one holding the block.
    """
    block = _OPEN.get(handle.features_path)
    if block is None:
        if not os.path.exists(handle.features_path):
            raise FileNotFoundError(
                f"the training block of partition {handle.partition} is on host "
                f"{handle.host}, not on {socket.gethostname()}: SparkNet rounds run where "
                f"their block was cached (raise spark.locality.wait if tasks move)")
        block = (np.load(handle.features_path, mmap_mode="r", allow_pickle=False),
                 np.load(handle.labels_path, allow_pickle=False))
        _OPEN[handle.features_path] = block
    return block


def drop_blocks(handles) -> None:
    """Delete blocks' files on this host (best effort; Spark also removes its local dirs)."""
    for handle in handles:
        _OPEN.pop(handle.features_path, None)
        for path in (handle.features_path, handle.labels_path):
            if os.path.exists(path):
                os.remove(path)
