"""How a task gets its start state or weights and hands states back (the task side of
:mod:`sparknet_ml.driver.exchange`).

- :class:`Served`: the driver's state server. A task asks it for the current job (its first
  and last round and the start state, fetched once per Python worker and job) and sends its
  state back to it, over :mod:`.transport`'s authenticated TCP: states never enter a JVM, and
  the task function is the same for every job of a fit. The rows a task yields carry only
  JSON summaries (:data:`RESULTS_SCHEMA`).
- :class:`Inline`: weights to score or validate with, inside the task function itself.
- :class:`Shipped`: weights, or an exported ONNX model, in a file Spark ships to every
  executor (on Spark Connect, ``SparkSession.addArtifacts(..., file=True)``), read with
  ``SparkFiles.get``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .transport import connect, decode, encode, receive, send

RESULTS_SCHEMA = "partition long, summary string"

# The start state or weights a Python worker fetched last: its tasks of one job share them.
_FETCHED: dict[str, object] = {}


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


@dataclass(frozen=True)
class Served:
    """The driver's state server of one fit: its address, key and the fit's state size
    (float32 values: no message from the server may be larger)."""

    host: str
    port: int
    key: str
    size: int

    def _connect(self):
        return connect((self.host, self.port), self.key, {"role": "task"})

    def job(self) -> Job:
        """The job this task belongs to, its start state fetched once per Python worker."""
        held = _FETCHED.get(self.key)
        with self._connect() as sock:
            send(sock, {"get": held.id if isinstance(held, Job) else None})
            header, arrays = receive(sock, limit=4 * self.size)
        if "error" in header:
            raise RuntimeError(f"the driver's state server: {header['error']}")
        if not arrays:  # the state this worker holds already
            return held
        job = Job(header["job"], header["first"], header["stop"], header["weights"], arrays[0])
        _FETCHED.clear()
        _FETCHED[self.key] = job
        return job

    def meet(self, job: Job, rank: int, world: int, address: tuple[str, int]) -> list:
        """Every task's listening address of barrier ``job`` (by rank), once all ``world``
        gave theirs to the driver."""
        with self._connect() as sock:
            send(sock, {"meet": {"rank": rank, "world": world, "address": list(address)},
                        "job": job.id})
            header, _ = receive(sock, wait=None)
        if "error" in header:
            raise RuntimeError(f"the driver's state server: {header['error']}")
        return [(host, int(port)) for host, port in header["addresses"]]

    def send(self, job: Job, name: str, flat: np.ndarray) -> None:
        """Send the state vector ``flat`` to the driver as ``name`` of ``job``."""
        with self._connect() as sock:
            send(sock, {"put": name, "job": job.id})
            header, _ = receive(sock)  # the driver takes states of its current job only
            if "error" not in header:
                send(sock, {}, [flat])
                header, _ = receive(sock)  # the driver's receipt: the state is stored
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
        value = _FETCHED.get(self.name)
        if value is None:
            from pyspark import SparkFiles
            with open(SparkFiles.get(self.name), "rb") as f:
                value = f.read()
            if not self.raw:
                header, arrays = decode(value)
                value, at = {}, 0
                for name, count in header["layers"]:
                    value[name], at = arrays[at:at + count], at + count
            _FETCHED.clear()
            _FETCHED[self.name] = value
        return value


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
