"""Training data converted once into one block per partition, kept on the executor's disk.

Spark caches only a small handle per partition; the block itself is two ``.npy`` files in
Spark's local directory on the executor that converted it, memory-mapped by every round's
task (the OS page cache keeps them hot and shared between Python workers). So per round
only weights travel, and the JVM heap holds no training data. Rounds run where the handle
is cached (Spark's locality preference); if an executor is lost, Spark recomputes its
handles — converting those partitions again — on another one.

Features whose values are all integers in 0..255 (pixels) are stored as uint8, else float32;
the net's data transform (crop, mirror, mean, scale) is applied per batch when the block is
read. Rows are stored in a canonical order (sorted by label and feature bytes), so a block
converted again after a lost executor or a restarted driver is bit-identical whatever order
Spark's shuffle delivered its rows in. Rows with a null or non-finite feature or label are
dropped and counted: the driver refuses them or, with ``handleInvalid="skip"``, trains without
them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
from dataclasses import dataclass

import numpy as np

from ..engine.caches import BoundedCache
from ..engine.devices import TaskDevice, task_device


@dataclass(frozen=True)
class InputSpec:
    """How DataFrame columns become stored examples of the net's input (before the data
    transform)."""

    features_col: str
    label_col: str  # empty for a net that takes no label (an autoencoder)
    input_shape: tuple[int, ...]
    resize: bool = False  # images of other sizes resized to input_shape (ImageData's resize)
    ignore_label: float | None = None  # the loss's ignore_label: exempt from the range check


@dataclass(frozen=True)
class BlockHandle:
    """Where one partition's block lives, and what the validation pass found in it: what
    Spark caches instead of the data."""

    partition: int
    features_path: str
    labels_path: str
    rows: int
    host: str
    invalid: int = 0             # rows dropped: null or non-finite feature or label
    label_min: float = 0.0
    label_max: float = 0.0
    fractional_labels: int = 0   # labels that are not integers
    device: TaskDevice | None = None  # what the task that stored it could train on


ROWS_SCHEMA = "features binary, labels binary, invalid long, uint8 boolean"
# Feature bytes per row handed back to the JVM: bounds the executor heap the conversion uses.
_ROW_BYTES = 4 * 2 ** 20


def to_rows(batches, spec: InputSpec):
    """mapInArrow function: each Arrow batch (its features column first, then its label
    column unless ``spec.label_col`` is empty: a net that takes no label gets zeros) → rows of
    raw features (uint8 when they are pixels, else float32; at most ``_ROW_BYTES`` a row) and
    labels, the first row carrying the count of invalid rows (null or non-finite) the batch
    dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from ..data.arrow import features_to_array, labels_to_array
    schema = pa.schema([("features", pa.binary()), ("labels", pa.binary()),
                        ("invalid", pa.int64()), ("uint8", pa.bool_())])
    for batch in batches:
        features = batch.column(0)
        labels = batch.column(1) if spec.label_col else pa.array(np.zeros(len(batch), np.float32))
        present = pc.and_(pc.is_valid(features), pc.is_valid(labels))
        nulls = len(batch) - pc.sum(present.cast(pa.int64())).as_py() if len(batch) else 0
        if nulls:
            features, labels = features.filter(present), labels.filter(present)
        x = features_to_array(features, spec.input_shape, name=spec.features_col,
                              resize=spec.resize)
        y = labels_to_array(labels, name=spec.label_col)
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1) & np.isfinite(y)
        if not finite.all():
            x, y = x[finite], y[finite]
        x = compact(x)
        step = max(1, _ROW_BYTES // max(1, x[:1].nbytes))
        for start in range(0, max(len(x), 1), step):
            yield pa.RecordBatch.from_pydict(
                {"features": [x[start:start + step].tobytes()],
                 "labels": [y[start:start + step].tobytes()],
                 "invalid": [nulls + int((~finite).sum()) if start == 0 else 0],
                 "uint8": [x.dtype == np.uint8]}, schema=schema)


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


def canonical_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row order sorted by (label, feature bytes): independent of the order rows arrived in."""
    if len(y) == 0:
        return np.arange(0)
    keys = np.concatenate([y.astype(">f4").view(np.uint8).reshape(len(y), 4),
                           np.ascontiguousarray(x).reshape(len(y), -1).view(np.uint8)], axis=1)
    return np.argsort(keys.view(np.dtype((np.void, keys.shape[1]))).ravel(), kind="stable")


HANDLES_SCHEMA = ("partition long, features_path string, labels_path string, rows long, "
                  "host string, invalid long, label_min double, label_max double, "
                  "fractional_labels long, device string")


def handle_batch(handle: BlockHandle):
    """``handle`` as a one-row Arrow batch of :data:`HANDLES_SCHEMA` (its device as JSON)."""
    import pyarrow as pa
    values = dataclasses.asdict(handle)
    values["device"] = json.dumps(values["device"])
    return pa.RecordBatch.from_pydict({name: [value] for name, value in values.items()})


def handles_of(batches) -> list[BlockHandle]:
    """The handles in Arrow batches of :data:`HANDLES_SCHEMA` rows."""
    handles = []
    for batch in batches:
        for row in batch.to_pylist():
            device = json.loads(row.pop("device"))
            handles.append(BlockHandle(**row, device=device and TaskDevice(**device)))
    return handles


def store_block(batches, input_shape: tuple[int, ...], fit_id: str,
                ignore_label: float | None = None):
    """mapInArrow function: :func:`write_block` for the running task's partition; yields the
    handle as a :data:`HANDLES_SCHEMA` row."""
    from pyspark import TaskContext
    context = TaskContext.get()
    yield handle_batch(write_block(context.partitionId(), batches, input_shape, fit_id,
                                   ignore_label, task_device(context.resources())))


def write_block(index: int, batches, input_shape: tuple[int, ...], fit_id: str,
                ignore_label: float | None = None, device: TaskDevice | None = None
                ) -> BlockHandle:
    """Merge partition ``index``'s converted rows (Arrow batches of :data:`ROWS_SCHEMA`) into
    one block on local disk; return its handle (its label range and fractional count over the
    labels the loss reads: ``ignore_label`` excluded; ``device``: what this task can train
    on)."""
    features, labels, invalid = [], [], 0
    for batch in batches:
        for row in batch.to_pylist():
            features.append(np.frombuffer(row["features"],
                                          np.uint8 if row["uint8"] else np.float32))
            labels.append(np.frombuffer(row["labels"], np.float32))
            invalid += row["invalid"]
    y = np.concatenate(labels) if labels else np.empty(0, np.float32)
    # uint8 and float32 pieces concatenate to float32; compact() then keeps pixels as uint8
    x = compact(np.concatenate(features) if features else np.empty(0, np.float32))
    x = x.reshape((len(y),) + tuple(input_shape))
    order = canonical_order(x, y)
    x, y = x[order], y[order]
    directory = block_dir(fit_id)
    os.makedirs(directory, exist_ok=True)
    read = y if ignore_label is None else y[y != ignore_label]
    handle = BlockHandle(index, os.path.join(directory, f"part-{index:05d}-features.npy"),
                         os.path.join(directory, f"part-{index:05d}-labels.npy"), len(y),
                         socket.gethostname(), invalid,
                         float(read.min()) if len(read) else 0.0,
                         float(read.max()) if len(read) else 0.0,
                         int((read != np.round(read)).sum()), device)
    _save(handle.features_path, x)
    _save(handle.labels_path, y)
    return handle


MAX_OPEN_BLOCKS = 4
"""Blocks a Python worker keeps open (a training and a validation block of two partitions):
a worker runs tasks of any partition its executor holds, and a block of a finished fit stays
on disk while it is mapped."""
_OPEN = BoundedCache(MAX_OPEN_BLOCKS)


def load_block(handle: BlockHandle) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a block's features and load its labels (kept open for the worker's next
    tasks, up to :data:`MAX_OPEN_BLOCKS` blocks).

    Raises
    ------
    FileNotFoundError
        When the task runs on another host than the one holding the block.
    """
    return _OPEN.get_or_make(handle.features_path, lambda: _open_block(handle))


def _open_block(handle: BlockHandle) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.exists(handle.features_path):
        raise FileNotFoundError(
            f"the training block of partition {handle.partition} is on host "
            f"{handle.host}, not on {socket.gethostname()}: SparkNet rounds run where "
            f"their block was cached (raise spark.locality.wait if tasks move)")
    return (np.load(handle.features_path, mmap_mode="r", allow_pickle=False),
            np.load(handle.labels_path, allow_pickle=False))


def drop_blocks(batches):
    """mapInArrow function: delete the blocks whose handles ``batches`` hold, on this host
    (best effort; Spark also removes its local dirs); yields nothing."""
    for handle in handles_of(batches):
        _OPEN.discard(handle.features_path)
        for path in (handle.features_path, handle.labels_path):
            if os.path.exists(path):
                os.remove(path)
    yield from ()
