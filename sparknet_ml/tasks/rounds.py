"""The tasks of SparkNet's rounds and validation: ``mapInArrow`` functions over the cached
block handles (:mod:`.blocks`), one handle per partition.

A fit builds each round function once: a task asks the driver's state server
(:class:`~.states.Served`) which rounds its job runs and from which state. A round's task
trains its partition's block for τ iterations and sends its state back to the server; a
barrier job's tasks run several rounds, averaging among themselves after each
(:mod:`.averaging`), and partition 0 sends the final state. The rows they yield carry only
JSON summaries (:data:`~.states.RESULTS_SCHEMA`).
"""
from __future__ import annotations

import dataclasses
import socket
import time
from dataclasses import dataclass

import numpy as np

from ..engine.state import RoundResult, SolverState
from ..engine.worker import TrainSpec, divergence, held_state, train_round
from .averaging import Averager
from .blocks import handles_of, load_block
from .environment import caffe_messages_to_spark, on_task_gpu
from .states import Carried, Job, Served, summary_rows
from .transport import derive_key

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
                "results": [summary(r) for r in self.results]}

    @classmethod
    def from_json(cls, value: dict) -> "JobRound":
        """The round :meth:`to_json` gave."""
        return cls(**{**value, "results": [RoundResult(None, **r) for r in value["results"]]})


def summary(result: RoundResult) -> dict:
    """A round's result without its state, as JSON values."""
    return {"samples": result.samples, "loss": result.loss, "partition": result.partition,
            "seconds": result.seconds}


def round_task(batches, spec: TrainSpec, served: Served | Carried, tau: int, seed: int):
    """One round on the partition whose handle ``batches`` hold, from the state the driver
    serves (or the job carries); the resulting state goes back to the driver (or in rows
    before the summary's), the last row carries its summary."""
    spec = on_task_gpu(spec)
    with caffe_messages_to_spark():
        job = None
        for handle in handles_of(batches):
            job = job or served.job(handle.partition)
            started = time.perf_counter()
            features, labels = load_block(handle)
            result = train_round(spec, features, labels, job.state, job.first, tau, seed,
                                 handle.partition)
            result = dataclasses.replace(result, seconds=time.perf_counter() - started)
            if result.state is not None:
                yield from served.send(job, handle.partition, result.state)
            yield summary_rows(handle.partition, {"job": job.id, **summary(result)})


def train_job(spec: TrainSpec, features: np.ndarray, labels: np.ndarray, partition: int,
              job: Job, tau: int, seed: int, averager: Averager):
    """The rounds of ``job`` on one partition's block, averaged with the job's other tasks
    after each; stops early, on every task alike, after a round that diverged.

    In a job of one task the average is the task's own state: it stays in the solver (on a
    GPU, on the device) from round to round, and leaves it once, at the end.

    Returns
    -------
    rounds : list of JobRound
    state : ndarray
        The final state vector (:func:`~sparknet_ml.engine.state.flatten`).
    """
    held = averager.world == 1
    state, rounds = job.state, []  # a state vector; None while the solver holds it
    for r in range(job.first, job.stop):
        started = time.perf_counter()
        result = train_round(spec, features, labels, state, r, tau, seed, partition, keep=held)
        result = dataclasses.replace(result, seconds=time.perf_counter() - started)
        # the average goes into the round's own vector (on a GPU the solver's pinned
        # buffer), from which the next round loads it without another copy
        averaged = averager.average(result, job.state.size, out=result.state)
        state = averaged.state
        rounds.append(JobRound(averaged.results, averaged.samples, averaged.loss,
                               time.perf_counter() - started, averaged.average_seconds))
        if (divergence(r + 1, averaged.results, SolverState([], [])) or state is not None
                and not np.isfinite(state[:job.weights]).all()):
            break
    return rounds, held_state(spec, features) if held else state


def barrier_rounds_task(batches, spec: TrainSpec, served: Served | Carried, tau: int,
                        seed: int):
    """The rounds of the driver's current job (:func:`train_job`) in one task of a barrier
    stage; partition 0 sends the final state to the driver (or yields it in rows) and yields
    every round's statistics."""
    from pyspark import BarrierTaskContext
    context = BarrierTaskContext.get()
    spec = on_task_gpu(spec)
    (handle,) = handles_of(batches)
    job = served.job(handle.partition)
    with caffe_messages_to_spark(), connect_averager(context, served, job) as averager:
        rounds, state = train_job(spec, *load_block(handle), handle.partition, job, tau, seed,
                                  averager)
    if handle.partition == 0:
        yield from served.send(job, 0, state, final=True)
        yield summary_rows(0, {"job": job.id, "rounds": [job_round.to_json()
                                                         for job_round in rounds]})


def connect_averager(context, served: Served | Carried, job: Job) -> Averager:
    """The :class:`Averager` of this barrier task: every task listens on its executor's
    host, the addresses go round through the driver's state server (or Spark's allGather),
    and the tasks connect as a mesh authenticated with the job's key."""
    tasks = context.getTaskInfos()
    rank = context.partitionId()
    if len(tasks) == 1:
        return Averager(0, 1, {})
    host = tasks[rank].address.rsplit(":", 1)[0]
    listener = socket.create_server((host, 0), backlog=len(tasks))
    addresses = served.meet(job, rank, len(tasks), (host, listener.getsockname()[1]))
    return Averager.connect(rank, listener, addresses, derive_key(served.key, job.id),
                            encrypt=served.encrypt)


def validate_task(batches, spec, key: str, weights):
    """Count correct top-1 and top-5 predictions of ``weights`` (:mod:`.states`: inline or
    shipped) on a validation block: one Arrow row (top-1 correct, top-5 correct, rows) per
    handle."""
    import pyarrow as pa
    from ..engine.scoring import cached_net, forward
    from ..engine.solver import packable
    spec = on_task_gpu(spec)
    with caffe_messages_to_spark():
        for handle in handles_of(batches):
            features, labels = load_block(handle)
            top1 = top5 = 0
            if len(labels):
                net = cached_net(spec, key, lambda: weights.value,
                                 packable(spec.transform, features))
                logits = forward(net, spec, features)[0]
                best = np.argsort(-logits, axis=1, kind="stable")[:, :5]
                top1 = int((best[:, 0] == labels).sum())
                top5 = int((best == labels[:, None]).any(axis=1).sum())
            yield pa.RecordBatch.from_pydict({"top1": [top1], "top5": [top5],
                                              "rows": [len(labels)]})
def _validate(batches, spec, key: str, weights):
    import pyarrow as pa
    from ..engine.scoring import cached_net, forward
    from ..engine.solver import packable
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
