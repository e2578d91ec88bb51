"""The run loop of SparkNet's rounds over the cached blocks: each round a Spark job that the
driver averages, or several rounds per barrier job whose tasks average among themselves."""
from __future__ import annotations

import functools
import logging
import secrets
import time
from dataclasses import dataclass

from ..engine.state import RoundResult, SolverState
from ..engine.worker import TrainSpec, average_results, divergence
from ..tasks.rounds import (VALIDATION_SCHEMA, JobRound, barrier_rounds_task, round_task,
                           validate_task)
from ..tasks.states import MESSAGES_SCHEMA, read_messages
from . import session
from .exchange import InlineChannel, share_weights

log = logging.getLogger("sparknet_ml")


def validation_accuracy(handles, spec, weights, top5: bool = False) -> tuple[float, float | None]:
    """Top-1 accuracy of ``weights`` on the cached validation blocks (one Spark job), and
    top-5 accuracy when ``top5`` (else None)."""
    from ..engine.scoring import weights_key
    key = weights_key(weights)
    counts = handles.mapInArrow(functools.partial(
        validate_task, spec=spec, key=key, weights=share_weights(handles.sparkSession, weights,
                                                                  key)),
        VALIDATION_SCHEMA).toArrow().to_pydict()
    total = sum(counts["rows"])
    if not total:
        return float("nan"), float("nan") if top5 else None
    return (sum(counts["top1"]) / total, sum(counts["top5"]) / total if top5 else None)


@dataclass
class RoundStats:
    """One round as the driver saw it."""

    round: int
    loss: float
    samples: int
    seconds: float
    samples_per_second: float
    validation_accuracy: float | None = None
    validation_top5_accuracy: float | None = None  # where the net's TEST phase has a top-5
    wall_seconds: float | None = None  # since round 1 began (across resumes), validation included
    compute_seconds: float | None = None    # the slowest task's block load + tau solver steps
    broadcast_seconds: float | None = None  # driver: sharing the start state with the tasks
    average_seconds: float | None = None    # driver: averaging the partitions' states


def run_driver_round(handles, r: int, channel, start, **task_args):
    """Round ``r`` as one Spark job, averaged on the driver.

    Returns
    -------
    state : SolverState
    rounds : list of one JobRound
    """
    messages = read_messages(handles.mapInArrow(functools.partial(
        round_task, start=start, round_index=r, **task_args), MESSAGES_SCHEMA).toArrow())
    results = []
    for name, (header, returned) in sorted(messages.items(), key=lambda m: int(m[0])):
        state = channel.take(start, name, returned)
        if state is None and header["samples"]:
            raise RuntimeError(f"the state of partition {name} did not reach the driver")
        results.append(RoundResult(state, **header))
    averaging = time.perf_counter()
    state, samples, loss = average_results(results)
    summaries = [RoundResult(None, r.samples, r.loss, r.partition, r.seconds) for r in results]
    return state, [JobRound(summaries, samples, loss, 0.0, time.perf_counter() - averaging)]


def run_barrier_job(spark, handles, first: int, stop: int, channel, start, **task_args):
    """Rounds ``first`` to ``stop - 1`` as one barrier-stage job; a failed job is run again
    from the same state, as often as Spark would retry a task (``spark.task.maxFailures``,
    or F in ``local[N,F]``): Spark itself does not retry a failed barrier result stage.

    Returns
    -------
    state : SolverState
    rounds : list of JobRound
    """
    attempts, attempt = session.max_task_failures(spark), 0
    while True:
        try:
            messages = read_messages(handles.mapInArrow(functools.partial(
                barrier_rounds_task, start=start, first=first, stop=stop,
                secret=secrets.token_hex(16), **task_args), MESSAGES_SCHEMA,
                barrier=True).toArrow())
            header, returned = messages["final"]
            return (channel.take(start, "final", returned),
                    [JobRound.from_json(job) for job in header["rounds"]])
        except Exception as err:  # a failed Spark job: Py4JJavaError, PythonException...
            attempt += 1
            if attempt == attempts:
                raise
            log.warning("SparkNet rounds %d-%d failed (attempt %d of %d), running them again "
                        "from round %d's state: %s", first + 1, stop, attempt, attempts,
                        first, str(err).splitlines()[0])


def check_slots(spark, workers: int, rounds_per_job: int) -> None:
    """Fail clearly when a barrier stage of ``workers`` tasks cannot start (Spark itself would
    retry for up to 10 minutes). On a cluster, executors still registering get Spark's
    ``spark.scheduler.maxRegisteredResourcesWaitingTime`` (default 30 s). Where the session
    cannot tell its slots (Spark Connect with dynamic allocation), Spark's own check applies."""
    deadline = time.monotonic() + session.registration_wait(spark)
    while (slots := session.task_slots(spark)) is not None and slots < workers:
        if time.monotonic() >= deadline:
            raise ValueError(
                f"roundsPerJob={rounds_per_job} runs each job as a barrier stage that needs "
                f"all {workers} workers' tasks at once, but the cluster has {slots} task "
                "slots: lower numWorkers or set roundsPerJob=1")
        time.sleep(0.5)


def job_end(start: int, rounds: int, rounds_per_job: int, hold_every: tuple[int, ...]) -> int:
    """The round count after the job that begins after ``start`` rounds: at most
    ``rounds_per_job`` rounds, and ending on every multiple of a ``hold_every`` interval
    (where the driver needs the state: validation, checkpoints)."""
    end = min(rounds, start + rounds_per_job)
    for interval in hold_every:
        end = min(end, (start // interval + 1) * interval)
    return end


def run_rounds(spark, handles, spec: TrainSpec, state: SolverState, rounds: int, tau: int,
               seed: int, validate=None, validate_every: int = 1, start: int = 0,
               history=None, callbacks=(), rounds_per_job: int = 1,
               hold_every: tuple[int, ...] = (), channel=None
               ) -> tuple[SolverState, list[RoundStats]]:
    """Run SparkNet rounds over the cached blocks: each round a Spark job that the driver
    averages, or, with ``rounds_per_job`` > 1, several rounds per barrier-stage job whose tasks
    average among themselves (:func:`~sparknet_ml.tasks.rounds.barrier_rounds_task`; same
    result, bit for bit).

    Parameters
    ----------
    spark : SparkSession
        Classic or Spark Connect.
    handles : DataFrame
        The cached block handles, one per partition (:mod:`.blocks`).
    spec : TrainSpec
    state : SolverState
        Weights and history to start from.
    rounds, tau, seed : int
    validate : callable, optional
        Maps a state to its validation accuracy, top-1 and top-5 (or None); called every
        ``validate_every`` rounds and after the last one.
    start, history :
        Rounds already done (resuming from a checkpoint) and their statistics.
    callbacks : sequence of callables
        Each called as ``callback(rounds_done, state, history)`` after every round
        (checkpoints, progress bar, MLflow); ``state`` is None for a round inside a job.
    rounds_per_job : int
        Rounds per Spark job.
    hold_every : tuple of int
        Intervals on whose multiples a job ends, so the callbacks get the state there.
    channel : InlineChannel or SocketChannel, optional
        How states travel (:mod:`.exchange`); inside Spark's jobs by default.
    """
    channel = channel or InlineChannel()
    history = list(history or [])
    began = time.perf_counter() - ((history[-1].wall_seconds or 0.0) if history else 0.0)
    holds = (*hold_every, *((validate_every,) if validate is not None else ()))
    r = start
    while r < rounds:
        stop = job_end(r, rounds, rounds_per_job, holds)
        started = time.perf_counter()
        shared = channel.share(state)
        sharing = time.perf_counter() - started
        task_args = dict(spec=spec, start=shared, tau=tau, seed=seed, channel=channel)
        try:
            with session.job_description(
                    spark, f"SparkNet rounds {r + 1}-{stop}/{rounds} (tau={tau})"
                    if stop - r > 1 else f"SparkNet round {r + 1}/{rounds} (tau={tau})"):
                state, done = (run_barrier_job(spark, handles, r, stop, **task_args)
                               if rounds_per_job > 1 else
                               run_driver_round(handles, r, **task_args))
        finally:
            channel.release(shared)
        # The job's time beyond its rounds inside the tasks (sharing the state, scheduling,
        # result transfer; all of it for a one-round job) counts in its first round.
        overhead = time.perf_counter() - started - sum(job.seconds for job in done)
        wall = started - began
        for k, job in enumerate(done):
            number = r + k + 1
            last = k == len(done) - 1
            reason = divergence(number, job.results, state if last else SolverState([], []))
            if reason:
                raise FloatingPointError(reason)
            seconds = job.seconds + (overhead if k == 0 else 0.0)
            wall += seconds
            stats = RoundStats(number, job.loss, job.samples, seconds, job.samples / seconds,
                               compute_seconds=max(x.seconds for x in job.results),
                               broadcast_seconds=sharing if k == 0 else 0.0,
                               average_seconds=job.average_seconds)
            if last and validate is not None and (number % validate_every == 0
                                                  or number == rounds):
                stats.validation_accuracy, stats.validation_top5_accuracy = validate(state)
            stats.wall_seconds = (time.perf_counter() - began) if last else wall
            history.append(stats)
            log.info("round %d/%d  loss %.4f  %.0f samples/s  %.2f s%s", number, rounds,
                     job.loss, stats.samples_per_second, seconds,
                     "" if stats.validation_accuracy is None
                     else f"  validation accuracy {stats.validation_accuracy:.4f}"
                     + ("" if stats.validation_top5_accuracy is None
                        else f" (top-5 {stats.validation_top5_accuracy:.4f})"))
            for callback in callbacks:
                callback(number, state if last else None, history)
        r += len(done)
    return state, history
