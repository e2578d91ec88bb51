"""Averaging inside a Spark job: the tasks of one barrier stage average their states among
themselves over a full mesh of sockets, with a reduce-scatter and an all-gather.

Each task owns one contiguous chunk of the flattened state (weights, then history). It sends
chunk k of its state to task k and receives every task's copy of its own chunk, averages that
chunk with :func:`~sparknet_ml.engine.state.weighted_mean` (the function the driver applies to
whole states: float64 sums weighted by samples, in partition order, element by element), then
sends its averaged chunk to every task. Each task sends and receives about 2 x (N-1)/N x the
state's bytes per round, whatever the number of tasks N, and the result is bit-identical to
the driver's average.

No Spark imports: a Spark task builds an :class:`Averager` from addresses the tasks met at
through the driver's state server (Spark's ``BarrierTaskContext.allGather`` answers on a
one-second poll: up to a second a job); unit tests build them over loopback sockets in
threads.
Connections are :mod:`.transport`'s: authenticated with the job's key, sealed when the fit
encrypts, deadlines per hello and per message, and no array larger than a chunk accepted.
"""
from __future__ import annotations

import dataclasses
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..engine.state import RoundResult, weighted_mean
from .transport import CONNECT_TIMEOUT, Connection, admit, connect, receive, send

MAX_PENDING = 64  # connections a task authenticates at once; more strangers are closed


@dataclass
class AveragedRound:
    """One round as every task of the job sees it after averaging."""

    # the averaged state vector; None where the task's result carried none (a job of one
    # task whose solver holds it)
    state: np.ndarray | None
    results: list[RoundResult]  # every partition's samples, loss and seconds (no state)
    samples: int
    loss: float
    average_seconds: float      # this task's averaging, from its last chunk's arrival


def _summary(header: dict) -> RoundResult:
    return RoundResult(None, header["samples"], header["loss"], header["partition"],
                       header["seconds"])


def _accept_peers(rank: int, world: int, listener: socket.socket, key: str,
                  deadline: float, encrypt: bool) -> dict[int, Connection]:
    """Every higher rank's authenticated connection on ``listener``. Each connection is
    authenticated in a thread of its own, so a stranger that talks slowly delays no peer;
    at most :data:`MAX_PENDING` at once."""
    admitted: queue.Queue = queue.Queue()
    pending = threading.BoundedSemaphore(MAX_PENDING)

    def authenticate(sock):
        try:
            conn, identity = admit(sock, lambda _: key, encrypt=encrypt)
            other = identity.get("rank")
            if isinstance(other, int) and rank < other < world:
                admitted.put((other, conn))
                return
            sock.close()
        except Exception:  # noqa: BLE001 - whatever a stranger sends: not a peer
            sock.close()
        finally:
            pending.release()

    def accept_all():
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # the listener closed: every peer arrived, or the deadline passed
                return
            if pending.acquire(blocking=False):
                threading.Thread(target=authenticate, args=(sock,), daemon=True).start()
            else:
                sock.close()

    listener.settimeout(None)
    threading.Thread(target=accept_all, daemon=True, name="sparknet-mesh-accept").start()
    peers: dict[int, Connection] = {}
    try:
        while len(peers) < world - 1 - rank:
            try:
                other, conn = admitted.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise TimeoutError(f"{rank + 1 + len(peers)} of this SparkNet job's {world} "
                                   "tasks connected in time") from None
            if other in peers:
                conn.close()
            else:
                peers[other] = conn
    except BaseException:
        for conn in peers.values():
            conn.close()
        raise
    finally:
        listener.close()
    return peers


class Averager:
    """Averages one :class:`RoundResult` per task each round (reduce-scatter, all-gather).

    Parameters
    ----------
    rank, world : int
        This task's place in the job and the job's number of tasks.
    peers : dict
        An authenticated :class:`~.transport.Connection` to every other task, by rank.
    """

    def __init__(self, rank: int, world: int, peers: dict[int, Connection]):
        self.rank, self.world, self._peers = rank, world, peers
        self._senders = ThreadPoolExecutor(max_workers=max(world - 1, 1),
                                           thread_name_prefix="sparknet-averaging")

    @classmethod
    def connect(cls, rank: int, listener: socket.socket, addresses: list[tuple[str, int]],
                key: str, timeout: float = CONNECT_TIMEOUT,
                encrypt: bool = False) -> "Averager":
        """Join the mesh: connect to every lower rank at ``addresses``, then accept every
        higher rank on ``listener`` (which is closed after); a connection that does not
        authenticate with the job's ``key`` is closed and does not count. With ``encrypt``
        every connection is sealed."""
        world, peers = len(addresses), {}
        deadline = time.monotonic() + timeout
        try:
            for other in range(rank):
                peers[other] = connect(addresses[other], key, {"rank": rank},
                                       max(deadline - time.monotonic(), 0.001), encrypt)
            peers.update(_accept_peers(rank, world, listener, key, deadline, encrypt))
        except BaseException:
            listener.close()
            for conn in peers.values():
                conn.close()
            raise
        return cls(rank, world, peers)

    def _exchange(self, messages: dict[int, tuple[dict, list]], limit: int,
                  into: dict[int, np.ndarray] | None = None) -> dict[int, tuple]:
        """Send each peer its message (in background threads) while receiving one message
        (of at most ``limit`` bytes of arrays) from every peer, a peer's array into
        ``into[rank]`` where given; returns what arrived, by rank."""
        sent = [self._senders.submit(send, self._peers[other], *message)
                for other, message in messages.items()]
        into = into or {}
        try:
            return {other: receive(conn, limit, wait=None, into=into.get(other))
                    for other, conn in self._peers.items()}
        finally:
            for future in sent:
                future.result()

    def average(self, result: RoundResult, size: int,
                out: np.ndarray | None = None) -> AveragedRound:
        """This task's round in, every task's average out.

        Parameters
        ----------
        result : RoundResult
            This task's round, its state a vector (:func:`~sparknet_ml.engine.state.flatten`)
            or None when its partition is empty (in a job of one task, also when the state
            stayed in the task's solver).
        size : int
            Values in a state vector.
        out : ndarray, optional
            Where the averaged vector goes (it may be the result's own vector: every chunk
            of it has left before the average arrives), e.g. the solver's pinned buffer.

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
        bounds = [size * k // self.world for k in range(self.world + 1)]
        limit = 4 * max(b - a for a, b in zip(bounds, bounds[1:]))
        flat = result.state
        header = {"partition": result.partition, "samples": result.samples,
                  "loss": result.loss, "seconds": result.seconds}

        def chunk(vector, k):
            return [] if vector is None else [vector[bounds[k]:bounds[k + 1]]]
        arrived = self._exchange({other: (header, chunk(flat, other)) for other in self._peers},
                                 limit)
        parts = {self.rank: (header, chunk(flat, self.rank)), **arrived}
        started = time.perf_counter()
        order = sorted(parts, key=lambda other: parts[other][0]["partition"])
        mine = weighted_mean([(parts[other][0]["samples"],
                               parts[other][1][0] if parts[other][1] else None)
                              for other in order])
        if out is None:
            out = np.empty(size, np.float32)
        out[bounds[self.rank]:bounds[self.rank + 1]] = mine
        self._exchange({other: ({}, [mine]) for other in self._peers}, limit,
                       {other: out[bounds[other]:bounds[other + 1]] for other in self._peers})
        seen = [parts[other][0] for other in order if parts[other][0]["samples"] > 0]
        total = sum(h["samples"] for h in seen)
        loss = float(sum(h["samples"] / total * h["loss"] for h in seen))
        return AveragedRound(out, [_summary(parts[other][0]) for other in order], total, loss,
                             time.perf_counter() - started)

    def close(self) -> None:
        """Close this task's connections."""
        self._senders.shutdown(wait=False)
        for conn in self._peers.values():
            conn.close()

    def __enter__(self) -> "Averager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
