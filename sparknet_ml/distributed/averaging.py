"""Averaging inside a Spark job: the tasks of one barrier stage average their states over
sockets, through the task of partition 0 (SparkNet's driver-side average, moved into the job).

No Spark imports: a Spark task builds an :class:`Averager` from addresses it exchanged with
``BarrierTaskContext.allGather``; unit tests build them over loopback sockets in threads.

Wire format (no pickle): every message is an 8-byte little-endian length, a JSON header of
that length, then the float32 arrays the header lists, back to back. A peer's first message
carries the job's secret, checked with :func:`hmac.compare_digest` before anything else is read.
"""
from __future__ import annotations

import hmac
import json
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

from ..engine.worker import RoundResult, SolverState, average_results

CONNECT_TIMEOUT = 300.0  # seconds the root waits for its peers (they start at once: a barrier)
HELLO_TIMEOUT = 10.0     # seconds a new connection has to present the job's secret
_LENGTH = struct.Struct("<Q")
_MAX_HEADER = 1 << 20


@dataclass
class AveragedRound:
    """One round as every task of the job sees it after averaging."""

    state: SolverState
    results: list[RoundResult]  # every partition's samples, loss and seconds (no state)
    samples: int
    loss: float
    average_seconds: float      # the root's averaging (after the last peer's state arrived)


def send_message(sock: socket.socket, header: dict, arrays=()) -> None:
    """Send ``header`` (JSON) and ``arrays`` (raw float32) in the wire format above."""
    header = {**header, "shapes": [list(a.shape) for a in arrays]}
    text = json.dumps(header).encode()
    sock.sendall(_LENGTH.pack(len(text)) + text)
    for array in arrays:
        sock.sendall(memoryview(np.ascontiguousarray(array, np.float32)).cast("B"))


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("a peer of this SparkNet job closed its connection")
        view = view[got:]


def recv_message(sock: socket.socket,
                 arrays_allowed: bool = True) -> tuple[dict, list[np.ndarray]]:
    """Receive one message; ``arrays_allowed=False`` refuses arrays (before the secret)."""
    length = bytearray(_LENGTH.size)
    _recv_exact(sock, memoryview(length))
    (size,) = _LENGTH.unpack(length)
    if size > _MAX_HEADER:
        raise ConnectionError(f"a {size}-byte message header: not a SparkNet peer")
    text = bytearray(size)
    _recv_exact(sock, memoryview(text))
    header = json.loads(text)
    shapes = header.pop("shapes")
    if shapes and not arrays_allowed:
        raise ConnectionError("arrays before the job's secret: not a SparkNet peer")
    arrays = []
    for shape in shapes:
        array = np.empty(shape, np.float32)
        _recv_exact(sock, memoryview(array).cast("B"))
        arrays.append(array)
    return header, arrays


def _result_message(result: RoundResult) -> tuple[dict, list[np.ndarray]]:
    header = {"partition": result.partition, "samples": result.samples, "loss": result.loss,
              "seconds": result.seconds}
    if result.state is None:
        return header, []
    header["weights"] = len(result.state.weights)
    return header, [*result.state.weights, *result.state.history]


def _result_of(header: dict, arrays: list[np.ndarray]) -> RoundResult:
    state = None
    if arrays:
        n = header["weights"]
        state = SolverState(arrays[:n], arrays[n:])
    return RoundResult(state, header["samples"], header["loss"], header["partition"],
                       header["seconds"])


def _summary(result: RoundResult) -> RoundResult:
    return RoundResult(None, result.samples, result.loss, result.partition, result.seconds)


class Averager:
    """Averages one :class:`RoundResult` per task each round (a star through the root).

    The root receives every peer's state, averages them all with
    :func:`~sparknet_ml.engine.worker.average_results` (in partition order, so the result is
    bit-identical to the driver's average) and sends the average back.
    """

    def __init__(self, peers: list[socket.socket] | None, root: socket.socket | None):
        self._peers = peers  # the root's connections, one per peer
        self._root = root    # a peer's connection to the root

    @classmethod
    def as_root(cls, listener: socket.socket, world: int, secret: str,
                timeout: float = CONNECT_TIMEOUT) -> "Averager":
        """Accept ``world - 1`` authenticated peers on ``listener``; a connection that does
        not open with the job's secret is closed and does not count."""
        peers = []
        deadline = time.monotonic() + timeout
        while len(peers) < world - 1:
            listener.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                raise TimeoutError(f"{len(peers) + 1} of this SparkNet job's {world} tasks "
                                   f"connected within {timeout:.0f} s") from None
            sock.settimeout(HELLO_TIMEOUT)
            try:
                hello, _ = recv_message(sock, arrays_allowed=False)
                accepted = hmac.compare_digest(str(hello.get("secret")), secret)
            except Exception:  # noqa: BLE001 - whatever a stranger sends: not a peer
                accepted = False
            if not accepted:
                sock.close()
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peers.append(sock)
        listener.close()
        return cls(peers, None)

    @classmethod
    def as_peer(cls, host: str, port: int, secret: str,
                timeout: float = CONNECT_TIMEOUT) -> "Averager":
        """Connect to the root at ``host:port``."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_message(sock, {"secret": secret})
        sock.settimeout(None)
        return cls(None, sock)

    def average(self, result: RoundResult, delay: float = 0.0) -> AveragedRound:
        """This task's round in, every task's average out.

        Parameters
        ----------
        result : RoundResult
            This task's round (its state is None when its partition is empty).
        delay : float
            Seconds the root waits before replying (simulated network latency, tests only).
        """
        if self._root is not None:
            send_message(self._root, *_result_message(result))
            header, arrays = recv_message(self._root)
            if "error" in header:
                raise ValueError(header["error"])
            return AveragedRound(
                SolverState(arrays[:header["weights"]], arrays[header["weights"]:]),
                [RoundResult(None, *r) for r in header["results"]], header["samples"],
                header["loss"], header["average_seconds"])
        results = [result, *(_result_of(*recv_message(peer)) for peer in self._peers)]
        if delay:
            time.sleep(delay)
        started = time.perf_counter()
        results.sort(key=lambda r: r.partition)
        try:
            state, samples, loss = average_results(results)
        except ValueError as err:
            for peer in self._peers:
                send_message(peer, {"error": str(err)})
            raise
        summaries = [_summary(r) for r in results]
        seconds = time.perf_counter() - started
        header = {"weights": len(state.weights), "samples": samples, "loss": loss,
                  "average_seconds": seconds,
                  "results": [[r.samples, r.loss, r.partition, r.seconds] for r in summaries]}
        for peer in self._peers:
            send_message(peer, header, [*state.weights, *state.history])
        return AveragedRound(state, summaries, samples, loss, seconds)

    def close(self) -> None:
        """Close this task's connections."""
        for sock in self._peers if self._root is None else [self._root]:
            sock.close()

    def __enter__(self) -> "Averager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
