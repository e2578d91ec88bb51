"""How a task gets its start state or weights and hands states back (the task side of
:mod:`sparknet_ml.driver.exchange`).

- :class:`Served`: the driver's state server. A task asks it for the current job (its first
  and last round and the start state, fetched once per Python worker and job) and sends its
  state back to it, over :mod:`.transport`'s authenticated (and, when asked, sealed) TCP:
  states never enter a JVM, and the task function is the same for every job of a fit. Each
  task proves its partition with a key derived from the fit's (:func:`task_key`) and can put
  only its own partition's state. The rows a task yields carry only
  JSON summaries (:data:`RESULTS_SCHEMA`).
- :class:`Inline`: weights to score or validate with, inside the task function itself.
- :class:`Shipped`: weights, or an exported ONNX model, in a file Spark ships to every
  executor (on Spark Connect, ``SparkSession.addArtifacts(..., file=True)``), read with
  ``SparkFiles.get``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.caches import BoundedCache
from .transport import connect, decode, derive_key, encode, receive, send

RESULTS_SCHEMA = "partition long, summary string"
FINAL = "final"  # the name of a barrier job's final state (partition 0 sends it)

# The start state or weights a Python worker fetched last: its tasks of one job share them.
_FETCHED = BoundedCache(1)


@dataclass(frozen=True)
class Job:
    """One Spark job of a fit, as its tasks see it: rounds ``first`` to ``stop - 1`` from
    ``state`` (a single vector, :func:`~sparknet_ml.engine.state.flatten`'s layout, whose
    first ``weights`` values are the learnable blobs, the rest the solver's history)."""

    id: str
    first: int
    stop: int
    weights: int
    state: np.ndarray


def task_key(key: str, partition: int) -> str:
    """The key the task of ``partition`` proves itself with, derived from the fit's ``key``."""
    return derive_key(key, f"task {partition}")


@dataclass(frozen=True)
class Served:
    """The driver's state server of one fit: its address, the fit's key, the fit's state size
    (float32 values: no message from the server may be larger) and whether connections are
    sealed (the barrier tasks' mesh too)."""

    host: str
    port: int
    key: str
    size: int
    encrypt: bool = False

    def _connect(self, partition: int):
        return connect((self.host, self.port), task_key(self.key, partition),
                       {"partition": partition}, encrypt=self.encrypt)

    def job(self, partition: int) -> Job:
        """The job the task of ``partition`` belongs to, its start state fetched once per
        Python worker."""
        held = _FETCHED.get(self.key)
        with self._connect(partition) as conn:
            send(conn, {"get": held.id if isinstance(held, Job) else None})
            header, arrays = receive(conn, limit=4 * self.size)
        if "error" in header:
            raise RuntimeError(f"the driver's state server: {header['error']}")
        if not arrays:  # the state this worker holds already
            return held
        job = Job(header["job"], header["first"], header["stop"], header["weights"], arrays[0])
        _FETCHED.put(self.key, job)
        return job

    def meet(self, job: Job, rank: int, world: int, address: tuple[str, int]) -> list:
        """Every task's listening address of barrier ``job`` (by rank: its partition), once
        all ``world`` gave theirs to the driver."""
        with self._connect(rank) as conn:
            send(conn, {"meet": {"rank": rank, "world": world, "address": list(address)},
                        "job": job.id})
            header, _ = receive(conn, wait=None)
        if "error" in header:
            raise RuntimeError(f"the driver's state server: {header['error']}")
        return [(host, int(port)) for host, port in header["addresses"]]

    def send(self, job: Job, partition: int, flat: np.ndarray, final: bool = False) -> None:
        """Send the state vector ``flat`` of ``partition`` to the driver, or with ``final``
        (partition 0 only) a barrier job's final state."""
        with self._connect(partition) as conn:
            send(conn, {"put": FINAL if final else partition, "job": job.id})
            header, _ = receive(conn)  # the driver takes states of its current job only
            if "error" not in header:
                send(conn, {}, [flat])
                header, _ = receive(conn)  # the driver's receipt: the state is stored
        if "error" in header:
            raise RuntimeError(f"the driver's state server: {header['error']}")


@dataclass(frozen=True)
class Inline:
    """Weights carried by the task function itself."""

    value: object


def weights_message(weights: dict) -> bytes:
    """``{layer: [blobs]}`` as one :mod:`.transport` message (a shipped file's bytes)."""
    return encode({"layers": [[name, len(blobs)] for name, blobs in weights.items()]},
                  [blob for blobs in weights.values() for blob in blobs])


@dataclass(frozen=True)
class Shipped:
    """Weights, or (``raw``) an exported model's bytes, in the file ``name`` that Spark
    shipped to the executors."""

    name: str
    raw: bool = False

    @property
    def value(self):
        """The weights, ``{layer: [blobs]}`` (or the file's bytes), read once per Python
        worker."""
        return _FETCHED.get_or_make(self.name, self._read)

    def _read(self):
        from pyspark import SparkFiles
        with open(SparkFiles.get(self.name), "rb") as f:
            value = f.read()
        if self.raw:
            return value
        header, arrays = decode(value)
        weights, at = {}, 0
        for name, count in header["layers"]:
            weights[name], at = arrays[at:at + count], at + count
        return weights


def summary_rows(partition: int, summary: dict):
    """An Arrow batch of :data:`RESULTS_SCHEMA` holding one task's JSON ``summary``."""
    import json
    import pyarrow as pa
    return pa.RecordBatch.from_pydict({"partition": [partition],
                                       "summary": [json.dumps(summary)]})


def read_summaries(table) -> dict[int, dict]:
    """The summaries in ``table`` (an Arrow table of :data:`RESULTS_SCHEMA` rows), by
    partition."""
    import json
    return {partition: json.loads(text) for partition, text in
            zip(table.column("partition").to_pylist(), table.column("summary").to_pylist())}
