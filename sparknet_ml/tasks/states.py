"""How a task gets its start state or weights and hands states back (the task side of
:mod:`sparknet_ml.driver.exchange`).

- :class:`Inline`: the value travels inside the task function's arguments (Spark ships the
  function; classic pyspark broadcasts a function over 1 MiB by itself) and states come back
  in the Arrow rows the task yields (:func:`message_rows`).
- :class:`Served`: the state is fetched from the driver's state server and sent back to it
  over authenticated TCP, so it never enters a JVM; the rows carry only the header.
- :class:`Shipped`: weights, or an exported ONNX model, in a file Spark ships to every
  executor (on Spark Connect, ``SparkSession.addArtifacts(..., file=True)``), read with
  ``SparkFiles.get``.

Rows hold :mod:`.wire` messages cut into pieces: ``name`` says whose message (a partition's
round, the job's final state), ``piece`` orders them.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from ..engine.state import SolverState
from .averaging import CONNECT_TIMEOUT
from .wire import decode, encode, recv_message, send_message

MESSAGES_SCHEMA = "name string, piece long, data binary"


@dataclass(frozen=True)
class Inline:
    """A start state (or weights) carried by the task function itself; states go back in the
    rows."""

    value: object

    def send(self, name: str, state: SolverState | None) -> SolverState | None:
        """Return ``state`` for the task's rows (``name`` is not needed here)."""
        return state


# The start state or weights a Python worker fetched last: its tasks of one job share them.
_FETCHED: dict[str, object] = {}


@dataclass(frozen=True)
class Served:
    """Where to fetch the start state and send states back: the driver's state server."""

    host: str
    port: int
    secret: str
    key: str

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @property
    def value(self) -> SolverState:
        """The start state, fetched from the driver once per Python worker and job."""
        state = _FETCHED.get(self.key)
        if state is None:
            with self._connect() as sock:
                send_message(sock, {"secret": self.secret, "get": self.key})
                header, arrays = recv_message(sock)
            if "error" in header:
                raise RuntimeError(f"the driver's state server: {header['error']}")
            state = SolverState(arrays[:header["weights"]], arrays[header["weights"]:])
            _FETCHED.clear()
            _FETCHED[self.key] = state
        return state

    def send(self, name: str, state: SolverState | None) -> None:
        """Send ``state`` to the driver as ``name``; the task's rows carry None."""
        if state is not None:
            with self._connect() as sock:
                send_message(sock, {"secret": self.secret, "put": f"{self.key}/{name}",
                                    "weights": len(state.weights)})
                send_message(sock, {}, [*state.weights, *state.history])
                recv_message(sock)  # the driver's receipt: the state is stored
        return None


def weights_message(weights: dict) -> list[bytes]:
    """``{layer: [blobs]}`` as the pieces of one :mod:`.wire` message."""
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


def message_rows(name: str, header: dict, state: SolverState | None):
    """An Arrow batch of :data:`MESSAGES_SCHEMA` holding ``header`` and ``state`` (if any)."""
    import pyarrow as pa
    arrays = [] if state is None else [*state.weights, *state.history]
    pieces = encode({**header, "weights": None if state is None else len(state.weights)},
                    arrays)
    return pa.RecordBatch.from_pydict({"name": [name] * len(pieces),
                                       "piece": list(range(len(pieces))), "data": pieces})


def read_messages(table) -> dict[str, tuple[dict, SolverState | None]]:
    """The messages in ``table`` (an Arrow table of :data:`MESSAGES_SCHEMA` rows, in any
    order), by name: each its header and state (None when it carried none)."""
    pieces: dict[str, dict[int, bytes]] = {}
    for name, piece, data in zip(*(table.column(c).to_pylist()
                                   for c in ("name", "piece", "data"))):
        pieces.setdefault(name, {})[piece] = data
    messages = {}
    for name, parts in pieces.items():
        header, arrays = decode(b"".join(parts[k] for k in range(len(parts))))
        n = header.pop("weights")
        messages[name] = (header, None if n is None else SolverState(arrays[:n], arrays[n:]))
    return messages
