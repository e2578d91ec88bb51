"""How a round's states travel between the driver and the tasks.

Two routes, one interface (``share`` a start state, ``take`` back what a task returned,
``release``):

- :class:`SparkChannel`: Spark's broadcast out, the task results back. Every byte passes
  through the driver's JVM heap: N workers' states come back at once with one job a round.
- :class:`SocketChannel`: the driver's Python process serves the start state and receives
  the tasks' states over TCP, so states never enter the JVM (ImageNet-sized nets: CaffeNet's
  weights and momentum are 466 MiB per state). The server listens on ``spark.driver.host``
  (where executors already reach the driver); every connection opens with the fit's random
  secret (:func:`hmac.compare_digest`), in :mod:`.averaging`'s wire format (no pickle).

:func:`plan_route` picks one before round 1 from the state's size and the driver's memory.
"""
from __future__ import annotations

import hmac
import secrets
import socket
import socketserver
import threading
import uuid
from dataclasses import dataclass

from ..engine.worker import SolverState
from .averaging import CONNECT_TIMEOUT, HELLO_TIMEOUT, recv_message, send_message

# The Spark route is taken while a round's states through the JVM stay under these shares.
HEAP_SHARE = 0.25          # of the driver's JVM heap (results + broadcast, serialized)
RESULT_SIZE_SHARE = 0.5    # of spark.driver.maxResultSize (the results of one job)


@dataclass(frozen=True)
class Route:
    """The route of a fit's states, and why (logged)."""

    sockets: bool
    reason: str


def plan_route(state_bytes: int, workers: int, rounds_per_job: int, heap_bytes: int,
               max_result_bytes: int) -> Route:
    """Choose how states travel: through Spark when a round's states fit in the driver's JVM
    with room to spare, else over the driver's sockets.

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
    """
    returned = workers if rounds_per_job == 1 else 1
    through_heap = (returned + 1) * state_bytes  # results + the broadcast
    result_cap = max_result_bytes * RESULT_SIZE_SHARE if max_result_bytes else float("inf")
    mib = 2 ** 20
    if through_heap <= heap_bytes * HEAP_SHARE and returned * state_bytes <= result_cap:
        return Route(False, f"states of {state_bytes / mib:.1f} MiB through Spark "
                            f"({through_heap / mib:.0f} MiB a round in a "
                            f"{heap_bytes / mib:.0f} MiB driver heap)")
    return Route(True, f"states of {state_bytes / mib:.1f} MiB x {returned} returned + 1 sent "
                       f"would take {through_heap / mib:.0f} MiB of the driver's "
                       f"{heap_bytes / mib:.0f} MiB JVM heap (spark.driver.memory) or over "
                       f"{RESULT_SIZE_SHARE:.0%} of spark.driver.maxResultSize: they travel "
                       "over the driver's sockets instead")


class _Broadcast:
    """What a task holds on the Spark route: the broadcast's value; states go back as the
    task's result."""

    def __init__(self, broadcast):
        self._broadcast = broadcast

    @property
    def value(self) -> SolverState:
        """The start state."""
        return self._broadcast.value

    def send(self, name: str, state: SolverState | None) -> SolverState | None:
        """Return ``state`` as part of the task's result (``name`` is not needed here)."""
        return state


class SparkChannel:
    """States out by ``sc.broadcast``, back as task results."""

    def __init__(self, sc):
        self._sc = sc

    def share(self, state: SolverState) -> _Broadcast:
        """Broadcast ``state`` for one job."""
        return _Broadcast(self._sc.broadcast(state))

    def take(self, shared: _Broadcast, name: str, returned: SolverState | None):
        """The state a task returned as ``name``: here, in its result."""
        return returned

    def release(self, shared: _Broadcast) -> None:
        """Drop the job's broadcast."""
        shared._broadcast.unpersist()

    def close(self) -> None:
        """Nothing to close."""


# The start state a Python worker fetched last: its tasks of one job share it.
_FETCHED: dict[str, SolverState] = {}


@dataclass(frozen=True)
class _Served:
    """What a task holds on the socket route: where to fetch the start state and send
    states back."""

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
        """Send ``state`` to the driver as ``name``; the task's result carries None."""
        if state is not None:
            with self._connect() as sock:
                send_message(sock, {"secret": self.secret, "put": f"{self.key}/{name}",
                                    "weights": len(state.weights)})
                send_message(sock, {}, [*state.weights, *state.history])
                recv_message(sock)  # the driver's receipt: the state is stored
        return None


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

    def share(self, state: SolverState) -> _Served:
        """Serve ``state`` to one job's tasks."""
        key = uuid.uuid4().hex
        self._server.states[key] = state
        host, port = self._server.server_address[:2]
        return _Served(host, port, self._server.secret, key)

    def take(self, shared: _Served, name: str, returned) -> SolverState | None:
        """The state a task sent as ``name`` (None when it had none to send)."""
        return self._server.states.pop(f"{shared.key}/{name}", None)

    def release(self, shared: _Served) -> None:
        """Forget the job's start state and anything its tasks sent."""
        for key in [k for k in self._server.states if k.split("/")[0] == shared.key]:
            self._server.states.pop(key, None)

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
