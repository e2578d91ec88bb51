"""How a task gets its start state or weights and hands states back (the task side of
:mod:`sparknet_ml.driver.exchange`).

- :class:`Served`: the driver's state server. A task asks it for the current job (its first
  and last round and the start state, fetched once per Python worker and job) and sends its
  state back to it, over :mod:`.transport`'s authenticated (and, when asked, sealed) TCP:
  states never enter a JVM, and the task function is the same for every job of a fit. Each
  task proves its partition with a key derived from the fit's (:func:`task_key`) and can put
  only its own partition's state. The rows a task yields carry only
  JSON summaries (:data:`RESULTS_SCHEMA`).
- :class:`Carried`: no connection to the driver (``spark.sparknet.stateServer=false``, for
  a Spark Connect client the executors cannot reach): the job's start state inside the task
  function or in a shipped file, the tasks' states back in the rows they yield (in chunks of
  :data:`STATE_CHUNK` bytes), and the barrier tasks' addresses through Spark's own
  ``BarrierTaskContext.allGather``.
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

RESULTS_SCHEMA = "partition long, summary string, state binary"
FINAL = "final"  # the name of a barrier job's final state (partition 0 sends it)
STATE_CHUNK = 4 << 20
"""Bytes of a carried state per row (Spark Connect's Arrow batches are 4 MiB by default)."""

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

    def send(self, job: Job, partition: int, flat: np.ndarray, final: bool = False):
        """Send the state vector ``flat`` of ``partition`` to the driver, or with ``final``
        (partition 0 only) a barrier job's final state; returns the rows the task yields
        for it (none: the driver has it)."""
        with self._connect(partition) as conn:
            send(conn, {"put": FINAL if final else partition, "job": job.id})
            header, _ = receive(conn)  # the driver takes states of its current job only
            if "error" not in header:
                send(conn, {}, [flat])
                header, _ = receive(conn)  # the driver's receipt: the state is stored
        if "error" in header:
            raise RuntimeError(f"the driver's state server: {header['error']}")
        return ()


@dataclass(frozen=True)
class Carried:
    """One job of a fit whose states go through Spark itself (see the module doc): its id,
    rounds ``first`` to ``stop - 1``, the count of weight values in its state, the start
    state (:class:`Inline` vector or :class:`Shipped` raw float32 bytes), the fit's key and
    state size, and whether the barrier tasks' mesh is sealed."""

    id: str
    first: int
    stop: int
    weights: int
    state: object
    key: str
    size: int
    encrypt: bool = False

    def job(self, partition: int) -> Job:
        """The job, its start state read once per Python worker."""
        value = self.state.value
        if isinstance(value, bytes):
            value = np.frombuffer(value, np.float32)
        if value.size != self.size:
            raise RuntimeError(f"a start state of {value.size} values for one of {self.size}")
        return Job(self.id, self.first, self.stop, self.weights, value)

    def meet(self, job: Job, rank: int, world: int, address: tuple[str, int]) -> list:
        """Every task's listening address of barrier ``job``, by rank, through Spark's
        ``BarrierTaskContext.allGather``."""
        import json
        from pyspark import BarrierTaskContext
        gathered = [json.loads(text) for text in
                    BarrierTaskContext.get().allGather(json.dumps([rank, *address]))]
        if sorted(r for r, _, _ in gathered) != list(range(world)):
            raise RuntimeError(f"the barrier tasks gave ranks {[r for r, _, _ in gathered]}")
        return [(host, int(port)) for _, host, port in sorted(gathered)]

    def send(self, job: Job, partition: int, flat: np.ndarray, final: bool = False):
        """The rows carrying the state vector ``flat`` of ``partition`` (with ``final``, a
        barrier job's final state) to the driver."""
        import json
        import pyarrow as pa
        data = memoryview(np.ascontiguousarray(flat, np.float32)).cast("B")
        summary = json.dumps({"job": job.id, "state": FINAL if final else str(partition)})
        for at in range(0, len(data), STATE_CHUNK):
            yield pa.RecordBatch.from_pydict({
                "partition": [partition], "summary": [summary],
                "state": pa.array([data[at:at + STATE_CHUNK].tobytes()], pa.binary())})


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
                                       "summary": [json.dumps(summary)],
                                       "state": pa.array([None], pa.binary())})


def read_summaries(table) -> dict[int, dict]:
    """The summaries in ``table`` (an Arrow table of :data:`RESULTS_SCHEMA` rows), by
    partition; rows carrying a state (:meth:`Carried.send`) are not summaries."""
    import json
    return {partition: json.loads(text) for partition, text, carried in
            zip(table.column("partition").to_pylist(), table.column("summary").to_pylist(),
                table.column("state").is_valid().to_pylist()) if not carried}


def read_states(table, job: Job) -> dict[str, np.ndarray]:
    """The state vectors that rows of ``table`` carry for ``job`` (:meth:`Carried.send`),
    by name (a partition, or :data:`FINAL`)."""
    import json
    chunks: dict[str, list] = {}
    states = table.column("state")
    for k, (text, carried) in enumerate(zip(table.column("summary").to_pylist(),
                                            states.is_valid().to_pylist())):
        header = json.loads(text) if carried else None
        if header is not None and header["job"] == job.id:
            chunks.setdefault(header["state"], []).append(states[k].as_buffer())
    return {name: np.concatenate([np.frombuffer(part, np.uint8) for part in parts]).view(
        np.float32) for name, parts in chunks.items()}
