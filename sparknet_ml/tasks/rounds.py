"""The tasks of SparkNet's rounds and validation: ``mapInArrow`` functions over the cached
block handles (:mod:`.blocks`), one handle per partition.

A round's task trains its partition's block for τ iterations from the start state and yields
its result as :mod:`.states` message rows; a barrier job's tasks run several rounds, averaging
among themselves after each (:mod:`.averaging`), and partition 0 yields the final state with
every round's statistics.
"""
from __future__ import annotations

import dataclasses
import socket
import time
from dataclasses import dataclass

import numpy as np

from ..engine.state import RoundResult
from ..engine.worker import TrainSpec, divergence, train_round
from .averaging import Averager
from .blocks import handles_of, load_block
from .environment import caffe_messages_to_spark, on_task_gpu
from .states import message_rows

VALIDATION_SCHEMA = "top1 long, top5 long, rows long"


@dataclass
class JobRound:
    """One round of a job, as whoever averaged it saw it (the driver, or the barrier tasks)."""

    results: list[RoundResult]  # without states
    samples: int
    loss: float
    seconds: float              # the round inside the task, block steps and averaging (0 for
    average_seconds: float      # a one-round job: all its time is the job's)

    def to_json(self) -> dict:
        """The round as JSON values (its results without states)."""
        return {**dataclasses.asdict(dataclasses.replace(self, results=[])),
                "results": [_summary(r) for r in self.results]}

    @classmethod
    def from_json(cls, value: dict) -> "JobRound":
        """The round :meth:`to_json` gave."""
        return cls(**{**value, "results": [RoundResult(None, **r) for r in value["results"]]})


def _summary(result: RoundResult) -> dict:
    return {"samples": result.samples, "loss": result.loss, "partition": result.partition,
            "seconds": result.seconds}


def round_task(batches, spec: TrainSpec, start, round_index: int, tau: int, seed: int):
    """One round on the partition whose handle ``batches`` hold; ``start`` gives the start
    state and takes the resulting one (:mod:`.states`)."""
    spec = on_task_gpu(spec)
    with caffe_messages_to_spark():
        for handle in handles_of(batches):
            started = time.perf_counter()
            result = train_round(spec, *load_block(handle), start.value, round_index, tau,
                                 seed, handle.partition)
            result = dataclasses.replace(result, seconds=time.perf_counter() - started)
            name = str(handle.partition)
            yield message_rows(name, _summary(result), start.send(name, result.state))


def barrier_rounds_task(batches, spec: TrainSpec, start, first: int, stop: int, tau: int,
                        seed: int, secret: str):
    """Rounds ``first`` to ``stop - 1`` in one task of a barrier stage, averaging with the
    other tasks after each; partition 0 yields the final state and the rounds' statistics as
    the message ``"final"``. Stops early, on every task alike, after a round that diverged."""
    from pyspark import BarrierTaskContext
    context = BarrierTaskContext.get()
    spec = on_task_gpu(spec)
    (handle,) = handles_of(batches)
    with caffe_messages_to_spark(), connect_averager(context, secret) as averager:
        features, labels = load_block(handle)
        state, rounds = start.value, []
        for r in range(first, stop):
            started = time.perf_counter()
            result = train_round(spec, features, labels, state, r, tau, seed, handle.partition)
            result = dataclasses.replace(result, seconds=time.perf_counter() - started)
            averaged = averager.average(result, state)
            state = averaged.state
            rounds.append(JobRound(averaged.results, averaged.samples, averaged.loss,
                                   time.perf_counter() - started, averaged.average_seconds))
            if divergence(r + 1, averaged.results, state):
                break
    if handle.partition == 0:
        yield message_rows("final", {"rounds": [job.to_json() for job in rounds]},
                           start.send("final", state))


def connect_averager(context, secret: str) -> Averager:
    """The :class:`Averager` of this barrier task: every task listens on its executor's
    host, the addresses go round through ``allGather``, and the tasks connect as a mesh."""
    tasks = context.getTaskInfos()
    rank = context.partitionId()
    host = tasks[rank].address.rsplit(":", 1)[0]
    listener = socket.create_server((host, 0), backlog=len(tasks))
    addresses = [address.rsplit(":", 1) for address in
                 context.allGather(f"{host}:{listener.getsockname()[1]}")]
    return Averager.connect(rank, listener, [(h, int(p)) for h, p in addresses], secret)


def validate_task(batches, spec, key: str, weights):
    """Count correct top-1 and top-5 predictions of ``weights`` (:mod:`.states`: inline or
    shipped) on a validation block: one Arrow row (top-1 correct, top-5 correct, rows) per
    handle."""
    import pyarrow as pa
    from ..engine.scoring import cached_net, forward
    from ..engine.solver import packable
    spec = on_task_gpu(spec)
    for handle in handles_of(batches):
        features, labels = load_block(handle)
        top1 = top5 = 0
        if len(labels):
            net = cached_net(spec, key, lambda: weights.value, packable(spec.transform, features))
            logits = forward(net, spec, features)[0]
            best = np.argsort(-logits, axis=1, kind="stable")[:, :5]
            top1 = int((best[:, 0] == labels).sum())
            top5 = int((best == labels[:, None]).any(axis=1).sum())
        yield pa.RecordBatch.from_pydict({"top1": [top1], "top5": [top5],
                                          "rows": [len(labels)]})
