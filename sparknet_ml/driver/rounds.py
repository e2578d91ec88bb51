"""The run loop of SparkNet's rounds over the cached blocks: each round a Spark job that the
driver averages, or several rounds per barrier job whose tasks average among themselves."""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from ..engine.state import RoundResult, SolverState, unflatten
from ..engine.worker import TrainSpec, average_results, divergence
from ..net.prototxt import divergence_hint, parse_solver
from ..tasks.rounds import (VALIDATION_SCHEMA, JobRound, barrier_rounds_task, round_task,
                           validate_task)
from ..tasks.states import FINAL, RESULTS_SCHEMA, read_summaries
from . import session
from .exchange import CarriedStates, StateServer, share_weights
from .planning import FitPlan

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


AUTO_JOB_SECONDS = 10.0
"""With ``roundsPerJob='auto'``, a barrier job runs about this many seconds of rounds (as the
previous job's rounds took), so its progress lines, MLflow steps and the state on the driver
come at least this often; the first job runs one round."""


def next_stop(plan: FitPlan, start: int, round_seconds: float | None) -> int:
    """The round count after the job that begins after ``start`` rounds: ``plan``'s rounds
    per job, or with automatic sizing as many as fill :data:`AUTO_JOB_SECONDS` at
    ``round_seconds`` a round (one when not known yet); never past a checkpoint or
    validation round (:func:`job_end`)."""
    per_job = plan.rounds_per_job
    if per_job is None:
        per_job = 1 if not round_seconds else max(1, int(AUTO_JOB_SECONDS / round_seconds))
    return job_end(start, plan.rounds, per_job, plan.holds())


def run_driver_round(frame, server: StateServer | CarriedStates, state: SolverState, r: int):
    """Round ``r`` as one Spark job (the DataFrame ``frame(server.served)``), averaged on the
    driver.

    Returns
    -------
    state : SolverState
    rounds : list of one JobRound
    """
    job = server.start_job(state, r, r + 1)
    table = frame(server.served).toArrow()
    server.receive(job, table)
    summaries = read_summaries(table)
    results = []
    for partition, summary in sorted(summaries.items()):
        returned = server.take(job, str(partition))
        if summary.pop("job") != job.id or returned is None and summary["samples"]:
            raise RuntimeError(f"the state of partition {partition} did not reach the driver")
        results.append(RoundResult(returned, **summary))
    averaging = time.perf_counter()
    state, samples, loss = average_results(results, state)
    summaries = [RoundResult(None, r.samples, r.loss, r.partition, r.seconds) for r in results]
    return state, [JobRound(summaries, samples, loss, 0.0, time.perf_counter() - averaging)]


def run_barrier_job(spark, frame, server: StateServer | CarriedStates, state: SolverState,
                    first: int, stop: int):
    """Rounds ``first`` to ``stop - 1`` as one barrier-stage job (the DataFrame
    ``frame(server.served)``); a failed job is run again
    from the same state, as often as Spark would retry a task (``spark.task.maxFailures``,
    or F in ``local[N,F]``): Spark itself does not retry a failed barrier result stage.

    Returns
    -------
    state : SolverState
    rounds : list of JobRound
    """
    attempts, attempt = session.max_task_failures(spark), 0
    while True:
        job = server.start_job(state, first, stop)  # a new job: a failed one's tasks are over
        try:
            table = frame(server.served).toArrow()
            server.receive(job, table)
            summary = read_summaries(table)[0]
            final = server.take(job, FINAL)
            if summary["job"] != job.id or final is None:
                raise RuntimeError("the job's final state did not reach the driver")
            return unflatten(final, state), [JobRound.from_json(job_round)
                                             for job_round in summary["rounds"]]
        except Exception as err:  # a failed Spark job: Py4JJavaError, PythonException...
            attempt += 1
            if attempt == attempts:
                raise
            log.warning("SparkNet rounds %d-%d failed (attempt %d of %d), running them again "
                        "from round %d's state: %s", first + 1, stop, attempt, attempts,
                        first, str(err).splitlines()[0])


def check_slots(spark, workers: int) -> int | None:
    """The cluster's task slots once it has one for each of ``workers`` tasks, waiting for
    executors still registering (``spark.scheduler.maxRegisteredResourcesWaitingTime``,
    default 30 s, on a cluster); fewer when the wait ran out, None when the session cannot
    tell (Spark Connect with dynamic allocation)."""
    deadline = time.monotonic() + session.registration_wait(spark)
    while (slots := session.task_slots(spark)) is not None and slots < workers:
        if time.monotonic() >= deadline:
            return slots
        time.sleep(0.5)
    return slots


def job_end(start: int, rounds: int, rounds_per_job: int, hold_every: tuple[int, ...]) -> int:
    """The round count after the job that begins after ``start`` rounds: at most
    ``rounds_per_job`` rounds, and ending on every multiple of a ``hold_every`` interval
    (where the driver needs the state: validation, checkpoints)."""
    end = min(rounds, start + rounds_per_job)
    for interval in hold_every:
        end = min(end, (start // interval + 1) * interval)
    return end


def run_rounds(spark, handles, spec: TrainSpec, state: SolverState, plan: FitPlan,
               server: StateServer | CarriedStates, validate=None, start: int = 0,
               history=None, callbacks=()) -> tuple[SolverState, list[RoundStats]]:
    """Run SparkNet rounds over the cached blocks as ``plan`` says: each round a Spark job
    that the driver averages, or several rounds per barrier-stage job whose tasks average
    among themselves (:func:`~sparknet_ml.tasks.rounds.barrier_rounds_task`; same result,
    bit for bit). Each job's tasks get their rounds and start state from ``server``.

    Parameters
    ----------
    spark : SparkSession
        Classic or Spark Connect.
    handles : DataFrame
        The cached block handles, one per partition (:mod:`.blocks`).
    spec : TrainSpec
    state : SolverState
        Weights and history to start from.
    plan : FitPlan
    server : StateServer or CarriedStates
        The fit's route for states (:mod:`.exchange`).
    validate : callable, optional
        Maps a state to its validation accuracy, top-1 and top-5 (or None); called every
        ``plan.validate_every`` rounds and after the last one.
    start, history :
        Rounds already done (resuming from a checkpoint) and their statistics.
    callbacks : sequence of callables
        Each called as ``callback(rounds_done, state, history)`` after every round
        (checkpoints, progress bar, MLflow); ``state`` is None for a round inside a job.

    Raises
    ------
    FloatingPointError
        When a round's loss or averaged weights turn non-finite: naming the round, the
        partition where its loss shows it, and the likely cause
        (:func:`~sparknet_ml.net.prototxt.divergence_hint`).
    """
    history = list(history or [])
    began = time.perf_counter() - ((history[-1].wall_seconds or 0.0) if history else 0.0)
    task, built = barrier_rounds_task if plan.barrier else round_task, [None, None]

    def frame(served):
        """The job's DataFrame: built once per fit with a state server (its ``served`` is
        one object; building costs tens of ms of py4j calls on classic), once per job whose
        state it carries."""
        if built[0] is not served:
            built[:] = served, handles.mapInArrow(
                functools.partial(task, spec=spec, served=served, tau=plan.tau, seed=plan.seed),
                RESULTS_SCHEMA, barrier=plan.barrier)
        return built[1]
    r, round_seconds = start, None
    while r < plan.rounds:
        stop = next_stop(plan, r, round_seconds)
        started = time.perf_counter()
        try:
            with session.job_description(
                    spark, f"SparkNet rounds {r + 1}-{stop}/{plan.rounds} (tau={plan.tau})"
                    if stop - r > 1 else f"SparkNet round {r + 1}/{plan.rounds} "
                                         f"(tau={plan.tau})"):
                state, done = (run_barrier_job(spark, frame, server, state, r, stop)
                               if plan.barrier else run_driver_round(frame, server, state, r))
        finally:
            server.end_job()
        # The job's time beyond its rounds inside the tasks (sharing the state, scheduling,
        # result transfer; all of it for a one-round job) counts in its first round.
        overhead = time.perf_counter() - started - sum(job.seconds for job in done)
        round_seconds = max(sum(job.seconds for job in done) / len(done), 1e-3)
        wall = started - began
        for k, job in enumerate(done):
            number = r + k + 1
            last = k == len(done) - 1
            reason = divergence(number, job.results, state if last else SolverState([], []))
            if reason:
                hint = divergence_hint(parse_solver(spec.solver_text), (number - 1) * plan.tau,
                                       number * plan.tau)
                raise FloatingPointError(f"{reason}: training diverged; {hint}")
            seconds = job.seconds + (overhead if k == 0 else 0.0)
            wall += seconds
            stats = RoundStats(number, job.loss, job.samples, seconds, job.samples / seconds,
                               compute_seconds=max(x.seconds for x in job.results),
                               broadcast_seconds=server.sharing_seconds if k == 0 else 0.0,
                               average_seconds=job.average_seconds)
            if last and validate is not None and (number % plan.validate_every == 0
                                                  or number == plan.rounds):
                stats.validation_accuracy, stats.validation_top5_accuracy = validate(state)
            stats.wall_seconds = (time.perf_counter() - began) if last else wall
            history.append(stats)
            log.info("round %d/%d  loss %.4f  %.0f samples/s  %.2f s%s", number, plan.rounds,
                     job.loss, stats.samples_per_second, seconds,
                     "" if stats.validation_accuracy is None
                     else f"  validation accuracy {stats.validation_accuracy:.4f}"
                     + ("" if stats.validation_top5_accuracy is None
                        else f" (top-5 {stats.validation_top5_accuracy:.4f})"))
            for callback in callbacks:
                callback(number, state if last else None, history)
        r += len(done)
    return state, history
