"""How states and weights travel between the driver and the tasks.

A round's states take one of two routes, one interface (``share`` a start state, ``take``
back what a task returned, ``release``):

- :class:`InlineChannel`: the start state inside the task function (which Spark ships; on a
  classic session pyspark broadcasts a function over 1 MiB), the tasks' states back in their
  Arrow rows. Every byte passes through the driver's JVM heap: N workers' states come back
  at once with one job a round. On Spark Connect the function also travels in the plan, a
  gRPC message (``spark.connect.grpc.maxInboundMessageSize``, 128 MiB by default).
- :class:`SocketChannel`: the driver's Python process serves the start state and receives
  the tasks' states over TCP, so states never enter the JVM (ImageNet-sized nets: CaffeNet's
  weights and momentum are 466 MiB per state). The server listens on ``spark.driver.host``
  (where executors already reach the driver; on Spark Connect, the client's address); every
  connection opens with the fit's random secret (:func:`hmac.compare_digest`), in
  :mod:`~sparknet_ml.tasks.wire`'s format (no pickle).

:func:`plan_route` picks one before round 1 from the state's size and the driver's memory.
Weights to score or validate with go inside the task function, or as a shipped file where a
Spark Connect plan could not carry them (:func:`share_weights`).
"""
from __future__ import annotations

import hmac
import secrets
import socketserver
import threading
import uuid
from dataclasses import dataclass

from ..engine.state import SolverState
from ..tasks.averaging import HELLO_TIMEOUT
from ..tasks.states import Inline, Served, Shipped, weights_message
from ..tasks.wire import recv_message, send_message

# The Spark route is taken while a round's states through the JVM stay under these shares.
HEAP_SHARE = 0.25          # of the driver's JVM heap (results + the function, serialized)
RESULT_SIZE_SHARE = 0.5    # of spark.driver.maxResultSize (the results of one job)
PLAN_SHARE = 0.5           # of the largest message a Spark Connect server takes (a plan)


@dataclass(frozen=True)
class Route:
    """The route of a fit's states, and why (logged)."""

    sockets: bool
    reason: str


def plan_route(state_bytes: int, workers: int, rounds_per_job: int, heap_bytes: int,
               max_result_bytes: int, plan_bytes: int | None = None) -> Route:
    """Choose how states travel: inside Spark when a round's states fit in the driver's JVM
    with room to spare (and, on Spark Connect, a state fits in a plan), else over the
    driver's sockets.

    Parameters
    ----------
    state_bytes : int
        Bytes of one state (weights and solver history, float32).
    workers : int
        Tasks per round.
    rounds_per_job : int
        1: every task returns its state; more: only partition 0 returns the average.
    heap_bytes : int
        The driver JVM's maximum heap (``spark.driver.memory``).
    max_result_bytes : int
        ``spark.driver.maxResultSize`` (0 = unlimited).
    plan_bytes : int, optional
        The largest message the Spark Connect server takes (None on a classic session).
    """
    returned = workers if rounds_per_job == 1 else 1
    through_heap = (returned + 1) * state_bytes  # results + the task function
    result_cap = max_result_bytes * RESULT_SIZE_SHARE if max_result_bytes else float("inf")
    plan_cap = plan_bytes * PLAN_SHARE if plan_bytes else float("inf")
    mib = 2 ** 20
    if (through_heap <= heap_bytes * HEAP_SHARE and returned * state_bytes <= result_cap
            and state_bytes <= plan_cap):
        return Route(False, f"states of {state_bytes / mib:.1f} MiB through Spark "
                            f"({through_heap / mib:.0f} MiB a round in a "
                            f"{heap_bytes / mib:.0f} MiB driver heap)")
    return Route(True, f"states of {state_bytes / mib:.1f} MiB x {returned} returned + 1 sent "
                       f"would take {through_heap / mib:.0f} MiB of the driver's "
                       f"{heap_bytes / mib:.0f} MiB JVM heap (spark.driver.memory), over "
                       f"{RESULT_SIZE_SHARE:.0%} of spark.driver.maxResultSize"
                       + ("" if plan_bytes is None else
                          f" or over {PLAN_SHARE:.0%} of a Spark Connect plan "
                          "(spark.connect.grpc.maxInboundMessageSize)")
                       + ": they travel over the driver's sockets instead")


def open_channel(spark, state: SolverState, workers: int, rounds_per_job: int):
    """How this fit's states travel (:func:`plan_route` against the session's driver), logged.

    Returns
    -------
    InlineChannel or SocketChannel
    """
    import logging
    from . import session
    route = plan_route(sum(a.nbytes for a in state.weights + state.history), workers,
                       rounds_per_job, session.driver_heap_bytes(spark),
                       session.max_result_bytes(spark), session.plan_bytes(spark))
    logging.getLogger("sparknet_ml").info("%s", route.reason)
    if route.sockets:
        return SocketChannel(session.callback_host(spark))
    return InlineChannel()


# Per Spark Connect session, the weights and model files already shipped to its executors.
_SHIPPED: dict[str, set[str]] = {}


def share_weights(spark, weights: dict, key: str):
    """Weights (``{layer: [blobs]}``, whose :func:`~sparknet_ml.engine.scoring.weights_key` is
    ``key``) as tasks reach them: inside the task function, or, on
    Spark Connect when they are over :data:`PLAN_SHARE` of the largest plan the server takes,
    in a file shipped once per session with ``SparkSession.addArtifacts(..., file=True)``.

    Returns
    -------
    Inline or Shipped
    """
    return _share(spark, weights, sum(b.nbytes for bs in weights.values() for b in bs),
                  f"sparknet-weights-{key}.bin", lambda: weights_message(weights))


def share_model(spark, model: bytes, key: str):
    """An exported ONNX model's bytes (named ``key``) as tasks reach them, by the routes of
    :func:`share_weights`.

    Returns
    -------
    Inline or Shipped
    """
    return _share(spark, model, len(model), f"sparknet-model-{key}.onnx", lambda: [model],
                  raw=True)


def _share(spark, value, size: int, name: str, pieces, raw: bool = False):
    """``value`` inline while ``size`` bytes fit in a plan, else the file ``name`` of
    ``pieces()`` shipped once per session."""
    import os
    import tempfile
    from . import session
    plan = session.plan_bytes(spark)
    if plan is None or size <= plan * PLAN_SHARE:
        return Inline(value)
    shipped = _SHIPPED.setdefault(spark.session_id, set())
    if name not in shipped:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                for piece in pieces():
                    f.write(piece)
            spark.addArtifacts(path, file=True)
        shipped.add(name)
    return Shipped(name, raw)


class InlineChannel:
    """States out inside the task function (:class:`~sparknet_ml.tasks.states.Inline`), back
    in the tasks' rows."""

    def share(self, state: SolverState) -> Inline:
        """``state`` for one job's tasks."""
        return Inline(state)

    def take(self, shared: Inline, name: str, returned: SolverState | None):
        """The state a task returned as ``name``: here, in its rows."""
        return returned

    def release(self, shared: Inline) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to close."""


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server
        sock = self.request
        sock.settimeout(HELLO_TIMEOUT)
        try:
            header, _ = recv_message(sock, arrays_allowed=False)
        except Exception:  # noqa: BLE001 - whatever a stranger sends: not a task
            return
        if not hmac.compare_digest(str(header.get("secret")), server.secret):
            return
        sock.settimeout(None)
        if "get" in header:
            state = server.states.get(header["get"])
            if state is None:
                send_message(sock, {"error": f"no state {header['get']!r}"})
                return
            send_message(sock, {"weights": len(state.weights)}, [*state.weights, *state.history])
        elif "put" in header:
            _, arrays = recv_message(sock)
            n = header["weights"]
            server.states[header["put"]] = SolverState(arrays[:n], arrays[n:])
            send_message(sock, {"stored": header["put"]})


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str):
        super().__init__((host, 0), _Handler)
        self.secret = secrets.token_hex(16)
        self.states: dict[str, SolverState] = {}


class SocketChannel:
    """States served by the driver's Python process over authenticated TCP (see module doc).

    Parameters
    ----------
    host : str
        The driver's address as executors reach it (``spark.driver.host``).
    """

    def __init__(self, host: str):
        self._server = _Server(host)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="sparknet_ml state server")
        self._thread.start()

    def share(self, state: SolverState) -> Served:
        """Serve ``state`` to one job's tasks."""
        key = uuid.uuid4().hex
        self._server.states[key] = state
        host, port = self._server.server_address[:2]
        return Served(host, port, self._server.secret, key)

    def take(self, shared: Served, name: str, returned) -> SolverState | None:
        """The state a task sent as ``name`` (None when it had none to send)."""
        return self._server.states.pop(f"{shared.key}/{name}", None)

    def release(self, shared: Served) -> None:
        """Forget the job's start state and anything its tasks sent."""
        for key in [k for k in self._server.states if k.split("/")[0] == shared.key]:
            self._server.states.pop(key, None)

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
