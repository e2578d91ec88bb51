"""Averaging inside a Spark job: the tasks of one barrier stage average their states among
themselves over a full mesh of sockets, with a reduce-scatter and an all-gather.

Each task owns one contiguous chunk of the flattened state (weights, then history). It sends
chunk k of its state to task k and receives every task's copy of its own chunk, averages that
chunk exactly as the driver does (:func:`~sparknet_ml.engine.worker.average_results`:
float64 sums weighted by samples, in partition order, element by element), then sends its
averaged chunk to every task. Each task sends and receives about 2 x (N-1)/N x the state's
bytes per round, whatever the number of tasks N (a star through one task moved (N-1) x the
state into and out of that task), and the result is bit-identical to the driver's average.

No Spark imports: a Spark task builds an :class:`Averager` from addresses it exchanged with
``BarrierTaskContext.allGather``; unit tests build them over loopback sockets in threads.

Messages in :mod:`.wire`'s format (no pickle). A peer's first message carries the job's
secret, checked with :func:`hmac.compare_digest` before anything else is read.
"""
from __future__ import annotations

import dataclasses
import hmac
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..engine.state import RoundResult, SolverState
from .wire import recv_message, send_message

CONNECT_TIMEOUT = 300.0  # seconds a task waits for its peers (they start at once: a barrier)
HELLO_TIMEOUT = 10.0     # seconds a new connection has to present the job's secret


@dataclass
class AveragedRound:
    """One round as every task of the job sees it after averaging."""

    state: SolverState
    results: list[RoundResult]  # every partition's samples, loss and seconds (no state)
    samples: int
    loss: float
    average_seconds: float      # this task's averaging, from its last chunk's arrival


def _summary(header: dict) -> RoundResult:
    return RoundResult(None, header["samples"], header["loss"], header["partition"],
                       header["seconds"])


class Averager:
    """Averages one :class:`RoundResult` per task each round (reduce-scatter, all-gather).

    Parameters
    ----------
    rank, world : int
        This task's place in the job and the job's number of tasks.
    peers : dict
        An authenticated connection to every other task, by rank.
    """

    def __init__(self, rank: int, world: int, peers: dict[int, socket.socket]):
        self.rank, self.world, self._peers = rank, world, peers
        self._senders = ThreadPoolExecutor(max_workers=max(world - 1, 1),
                                           thread_name_prefix="sparknet-averaging")

    @classmethod
    def connect(cls, rank: int, listener: socket.socket, addresses: list[tuple[str, int]],
                secret: str, timeout: float = CONNECT_TIMEOUT) -> "Averager":
        """Join the mesh: connect to every lower rank at ``addresses`` (presenting the job's
        secret and this rank), then accept every higher rank on ``listener``; a connection
        that does not open with the job's secret is closed and does not count."""
        world, peers = len(addresses), {}
        for other in range(rank):
            sock = socket.create_connection(addresses[other], timeout=timeout)
            send_message(sock, {"secret": secret, "rank": rank})
            peers[other] = sock
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
                other = hello.get("rank")
                accepted = (hmac.compare_digest(str(hello.get("secret")), secret)
                            and isinstance(other, int) and rank < other < world
                            and other not in peers)
            except Exception:  # noqa: BLE001 - whatever a stranger sends: not a peer
                accepted = False
            if not accepted:
                sock.close()
                continue
            peers[other] = sock
        listener.close()
        for sock in peers.values():
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(rank, world, peers)

    def _exchange(self, messages: dict[int, tuple[dict, list]]) -> dict[int, tuple]:
        """Send each peer its message (in background threads) while receiving one message
        from every peer; returns what arrived, by rank."""
        sent = [self._senders.submit(send_message, self._peers[other], *message)
                for other, message in messages.items()]
        try:
            return {other: recv_message(sock) for other, sock in self._peers.items()}
        finally:
            for future in sent:
                future.result()

    def average(self, result: RoundResult, like: SolverState) -> AveragedRound:
        """This task's round in, every task's average out.

        Parameters
        ----------
        result : RoundResult
            This task's round (its state is None when its partition is empty).
        like : SolverState
            The state the round started from: the averaged state's shapes.

        Raises
        ------
        ValueError
            On every task alike, when no partition saw any data.
        """
        if self.world == 1:  # one state's average is that state, bit for bit
            if result.samples == 0:
                raise ValueError("no partition saw any data this round")
            return AveragedRound(result.state, [dataclasses.replace(result, state=None)],
                                 result.samples, result.loss, 0.0)
        arrays = [*like.weights, *like.history]
        sizes = [a.size for a in arrays]
        bounds = [sum(sizes) * k // self.world for k in range(self.world + 1)]
        flat = None if result.state is None else np.concatenate(
            [np.ravel(a) for a in (*result.state.weights, *result.state.history)])
        header = {"partition": result.partition, "samples": result.samples,
                  "loss": result.loss, "seconds": result.seconds}

        def chunk(vector, k):
            return [] if vector is None else [vector[bounds[k]:bounds[k + 1]]]
        arrived = self._exchange({other: (header, chunk(flat, other)) for other in self._peers})
        parts = {self.rank: (header, chunk(flat, self.rank)), **arrived}
        started = time.perf_counter()
        order = sorted(parts, key=lambda other: parts[other][0]["partition"])
        seen = [other for other in order if parts[other][0]["samples"] > 0]
        if not seen:
            raise ValueError("no partition saw any data this round")
        total = sum(parts[other][0]["samples"] for other in seen)
        weights = [parts[other][0]["samples"] / total for other in seen]
        mine = np.zeros(bounds[self.rank + 1] - bounds[self.rank], np.float64)
        for w, other in zip(weights, seen):
            mine += w * parts[other][1][0]
        mine = mine.astype(np.float32)
        gathered = self._exchange({other: ({}, [mine]) for other in self._peers})
        chunks = {self.rank: mine, **{other: got[1][0] for other, got in gathered.items()}}
        flat = np.concatenate([chunks[k] for k in range(self.world)])
        averaged = [piece.reshape(a.shape) for piece, a in
                    zip(np.split(flat, np.cumsum(sizes)[:-1]), arrays)]
        state = SolverState(averaged[:len(like.weights)], averaged[len(like.weights):])
        loss = float(sum(w * parts[other][0]["loss"] for w, other in zip(weights, seen)))
        return AveragedRound(state, [_summary(parts[other][0]) for other in order], total,
                             loss, time.perf_counter() - started)

    def close(self) -> None:
        """Close this task's connections."""
        self._senders.shutdown(wait=False)
        for sock in self._peers.values():
            sock.close()

    def __enter__(self) -> "Averager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
