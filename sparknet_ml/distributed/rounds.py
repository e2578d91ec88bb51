"""SparkNet rounds over a DataFrame: convert once, cache, then broadcast → train → average."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

import numpy as np

from ..engine.devices import task_gpu
from ..engine.worker import RoundResult, SolverState, TrainSpec, average_results, train_round
from .averaging import Averager
from .blocks import (ROWS_SCHEMA, InputSpec, column, drop_blocks, load_block, store_block,
                     to_rows)
from .exchange import SparkChannel

log = logging.getLogger("sparknet_ml")


def cache_blocks(df, spec: InputSpec, num_workers: int, fit_id: str):
    """Convert ``df`` once into one block per worker partition (see :mod:`.blocks`).

    This job is also the validation pass over the data: a feature of the wrong length fails
    it with a ValueError naming the column; the returned handles count the invalid rows
    dropped and give the label range.

    Returns
    -------
    handles : RDD of BlockHandle, persisted
    summary : list of BlockHandle
        The handles themselves, collected (small): rows, invalid rows, label range.
    """
    from pyspark import StorageLevel
    from pyspark.errors import PythonException
    if df.rdd.getNumPartitions() != num_workers:
        df = df.repartition(num_workers)
    # to_rows reads the columns by position: pyspark's mapInArrow cannot take a DataFrame
    # whose column names hold dots, so they go in as c0, c1
    selected = [spec.features_col] + ([spec.label_col] if spec.label_col else [])
    converted = df.select(*[column(name).alias(f"c{i}") for i, name in enumerate(selected)]
                          ).mapInArrow(
        functools.partial(to_rows, spec=spec), ROWS_SCHEMA)
    handles = converted.rdd.mapPartitionsWithIndex(functools.partial(
        store_block, input_shape=spec.input_shape, fit_id=fit_id,
        ignore_label=spec.ignore_label))
    handles.setName(f"sparknet_ml blocks {fit_id}").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        summary = handles.collect()
    except PythonException as err:  # surface our own ValueError, not a Python traceback
        message = str(err)
        if "ValueError: " not in message:
            raise
        raise ValueError(message.split("ValueError: ")[-1].strip().splitlines()[0]) from None
    return handles, summary


def release_blocks(handles) -> None:
    """Delete the blocks' files (a best-effort job) and unpersist their handles."""
    handles.foreachPartition(drop_blocks)
    handles.unpersist()


@dataclass(frozen=True)
class FaultInjection:
    """Test switches: the first attempt of partition 0's task fails in the given rounds, and
    every round waits a fixed extra time on the driver (simulated network latency).

    Set with the Spark conf ``spark.sparknet.test.failRounds="2,5"`` (1-based rounds) and
    ``spark.sparknet.test.failMode`` = ``raise`` (an exception, the default), ``exit``
    (``os._exit(134)``), ``abort`` (a real Caffe CHECK failure: glog's message, then SIGABRT)
    or ``slow`` (a straggler: sleeps ``spark.sparknet.test.slowSeconds``, default 5); and
    ``spark.sparknet.test.roundDelaySeconds`` (default 0).
    """

    rounds: frozenset
    mode: str = "raise"
    slow_seconds: float = 5.0
    round_delay: float = 0.0

    @classmethod
    def from_conf(cls, conf) -> "FaultInjection | None":
        rounds = conf.get("spark.sparknet.test.failRounds", "").strip()
        delay = float(conf.get("spark.sparknet.test.roundDelaySeconds", "0"))
        if not rounds and not delay:
            return None
        mode = conf.get("spark.sparknet.test.failMode", "raise")
        if mode not in ("raise", "exit", "abort", "slow"):
            raise ValueError(f"spark.sparknet.test.failMode must be raise, exit, abort or "
                             f"slow, not {mode!r}")
        return cls(frozenset(int(r) for r in rounds.split(",") if r.strip()), mode,
                   float(conf.get("spark.sparknet.test.slowSeconds", "5")), delay)

    def apply(self, round_number: int, partition: int, attempt: int | None = None) -> None:
        """Fail (or stall) here when this is partition 0's first attempt in a chosen round
        (``attempt``: the driver's count for a barrier job; by default the task's own)."""
        from pyspark import TaskContext
        if round_number not in self.rounds or partition != 0:
            return
        if (TaskContext.get().attemptNumber() if attempt is None else attempt) != 0:
            return
        if self.mode == "exit":
            os._exit(134)
        if self.mode == "abort":
            from ..engine.solver import make_solver
            make_solver(_ABORTING_NET, "base_lr: 0.01", 1)  # Caffe CHECK-fails: SIGABRT
        if self.mode == "slow":
            time.sleep(self.slow_seconds)
            return
        raise RuntimeError(f"sparknet_ml test: injected failure in round {round_number}, "
                           f"partition {partition}")


# A 3x3 input under a 5x5 kernel: Caffe's shape CHECK fails while building the net.
_ABORTING_NET = """layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 1 kernel_size: 5 } }"""


def on_task_gpu(spec):
    """``spec`` (a TrainSpec or ScoreSpec) on the GPU Spark assigned the running task;
    unchanged for the CPU."""
    if spec.gpu is None:
        return spec
    from pyspark import TaskContext
    return dataclasses.replace(spec, gpu=task_gpu(TaskContext.get().resources()))


def _open_fd_of(path: str) -> int | None:
    """The descriptor this process already has open on ``path`` (Linux), if any."""
    try:
        for fd in os.listdir("/proc/self/fd"):
            if os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(path):
                return int(fd)
    except OSError:
        pass
    return None


@contextlib.contextmanager
def caffe_messages_to_spark():
    """While Caffe runs in a task, point fd 2 (where glog writes) at the file PySpark reads
    back when a Python worker crashes (``spark.python.worker.faulthandler.enabled=true``), so
    an abort's ``Check failed`` line reaches the exception on the driver. The worker's own
    descriptor on that file is shared, so faulthandler's report follows glog's line instead
    of overwriting it."""
    directory = os.environ.get("PYTHON_FAULTHANDLER_DIR")
    target = _open_fd_of(os.path.join(directory, str(os.getpid()))) if directory else None
    if target is None:
        yield
        return
    saved = os.dup(2)
    os.dup2(target, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def round_task(index, handles, spec: TrainSpec, state_bc, round_index: int, tau: int, seed: int,
               faults: FaultInjection | None = None):
    """The task of one partition in one round (module level: nothing of the driver's closes
    over it but its arguments)."""
    spec = on_task_gpu(spec)
    with caffe_messages_to_spark():
        if faults is not None:
            faults.apply(round_index + 1, index)
        results = []
        for handle in handles:
            started = time.perf_counter()
            result = train_round(spec, *load_block(handle), state_bc.value, round_index, tau,
                                 seed, index)
            results.append(dataclasses.replace(result, seconds=time.perf_counter() - started,
                                               state=state_bc.send(str(index), result.state)))
    yield from results


def validate_task(handles, spec, key: str, weights_bc):
    """Count correct top-1 and top-5 predictions of the broadcast weights on a validation
    block: yields (top-1 correct, top-5 correct, rows)."""
    from ..engine.scoring import cached_net, forward
    from ..engine.solver import packable
    spec = on_task_gpu(spec)
    for handle in handles:
        features, labels = load_block(handle)
        if len(labels) == 0:
            yield 0, 0, 0
            continue
        net = cached_net(spec, key, lambda: weights_bc.value,
                         packable(spec.transform, features))
        logits = forward(net, spec, features)[0]
        best = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        yield (int((best[:, 0] == labels).sum()), int((best == labels[:, None]).any(axis=1).sum()),
               len(labels))


def validation_accuracy(sc, handles, spec, weights,
                        top5: bool = False) -> tuple[float, float | None]:
    """Top-1 accuracy of ``weights`` on the cached validation blocks (one Spark job), and
    top-5 accuracy when ``top5`` (else None)."""
    from ..engine.scoring import weights_key
    weights_bc = sc.broadcast(weights)
    try:
        counts = handles.mapPartitions(functools.partial(
            validate_task, spec=spec, key=weights_key(weights),
            weights_bc=weights_bc)).collect()
    finally:
        weights_bc.unpersist()
    total = sum(n for _, _, n in counts)
    if not total:
        return float("nan"), float("nan") if top5 else None
    return (sum(c for c, _, _ in counts) / total,
            sum(c for _, c, _ in counts) / total if top5 else None)


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
    broadcast_seconds: float | None = None  # driver: broadcasting weights and solver history
    average_seconds: float | None = None    # driver: averaging the partitions' states


def divergence(round_number: int, results: list[RoundResult], state: SolverState) -> str | None:
    """Why a fit diverged in this round (naming the partition when its own loss shows it),
    or None."""
    for r in results:
        if r.samples and not np.isfinite(r.loss):
            return (f"round {round_number}: the loss of partition {r.partition} is {r.loss} "
                    "(training diverged: lower base_lr)")
    for i, weights in enumerate(state.weights):
        if not np.isfinite(weights).all():
            return (f"round {round_number}: averaged weight blob {i} holds NaN or Inf "
                    "(training diverged: lower base_lr)")
    return None


@dataclass
class JobRound:
    """One round of a job, as whoever averaged it saw it (the driver, or partition 0's task)."""

    results: list[RoundResult]  # without states
    samples: int
    loss: float
    seconds: float              # the round inside the task, block steps and averaging (0 for
    average_seconds: float      # a one-round job: all its time is the job's)


def run_driver_round(sc, handles, r: int, faults: FaultInjection | None, channel, **task_args):
    """Round ``r`` as one Spark job, averaged on the driver.

    Returns
    -------
    state : SolverState
    rounds : list of one JobRound
    """
    results = [_with_state(channel, task_args["state_bc"], str(result.partition), result)
               for result in handles.mapPartitionsWithIndex(functools.partial(
                   round_task, round_index=r, faults=faults, **task_args)).collect()]
    if faults is not None and faults.round_delay:
        time.sleep(faults.round_delay)
    averaging = time.perf_counter()
    state, samples, loss = average_results(results)
    summaries = [dataclasses.replace(result, state=None) for result in results]
    return state, [JobRound(summaries, samples, loss, 0.0, time.perf_counter() - averaging)]


def _with_state(channel, shared, name: str, result: RoundResult) -> RoundResult:
    """``result`` with the state its task sent as ``name`` through ``channel``."""
    state = channel.take(shared, name, result.state)
    if state is None and result.samples:
        raise RuntimeError(f"the state of partition {result.partition} did not reach the "
                           "driver")
    return dataclasses.replace(result, state=state)


def barrier_rounds_task(index, handles, spec: TrainSpec, state_bc, first: int, stop: int,
                        tau: int, seed: int, secret: str, attempt: int,
                        faults: FaultInjection | None = None):
    """Rounds ``first`` to ``stop - 1`` in one task of a barrier stage, averaging with the
    other tasks after each (:mod:`.averaging`); partition 0 yields the final state and the
    rounds' statistics. Stops early, on every task alike, after a round that diverged.
    ``attempt`` counts the driver's runs of this job (Spark does not retry a barrier job)."""
    from pyspark import BarrierTaskContext
    context = BarrierTaskContext.get()
    spec = on_task_gpu(spec)
    (handle,) = handles
    with caffe_messages_to_spark(), connect_averager(context, secret) as averager:
        features, labels = load_block(handle)
        state, rounds = state_bc.value, []
        for r in range(first, stop):
            if faults is not None:
                faults.apply(r + 1, index, attempt)
            started = time.perf_counter()
            result = train_round(spec, features, labels, state, r, tau, seed, index)
            result = dataclasses.replace(result, seconds=time.perf_counter() - started)
            averaged = averager.average(result, state, faults.round_delay if faults else 0.0)
            state = averaged.state
            rounds.append(JobRound(averaged.results, averaged.samples, averaged.loss,
                                   time.perf_counter() - started, averaged.average_seconds))
            if divergence(r + 1, averaged.results, state):
                break
    if index == 0:
        yield state_bc.send("final", state), rounds


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


def run_barrier_job(sc, handles, first: int, stop: int, channel, **task_args):
    """Rounds ``first`` to ``stop - 1`` as one barrier-stage job; a failed job is run again
    from the same state, as often as Spark would retry a task (``spark.task.maxFailures``,
    or F in ``local[N,F]``): Spark itself does not retry a failed barrier result stage.

    Returns
    -------
    state : SolverState
    rounds : list of JobRound
    """
    attempts, attempt = sc._jsc.sc().taskScheduler().maxTaskFailures(), 0
    while True:
        try:
            [(state, rounds)] = handles.barrier().mapPartitionsWithIndex(functools.partial(
                barrier_rounds_task, first=first, stop=stop, secret=secrets.token_hex(16),
                attempt=attempt, **task_args)).collect()
            return channel.take(task_args["state_bc"], "final", state), rounds
        except Exception as err:  # a failed Spark job: Py4JJavaError, PythonException...
            attempt += 1
            if attempt == attempts:
                raise
            log.warning("SparkNet rounds %d-%d failed (attempt %d of %d), running them again "
                        "from round %d's state: %s", first + 1, stop, attempt, attempts,
                        first, str(err).splitlines()[0])


def task_slots(sc) -> int:
    """Tasks the cluster can run at once now (Spark's own count, as its barrier check uses)."""
    jsc = sc._jsc.sc()
    return jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile())


def check_slots(sc, workers: int, rounds_per_job: int) -> None:
    """Fail clearly when a barrier stage of ``workers`` tasks cannot start (Spark itself would
    retry for up to 10 minutes). On a cluster, executors still registering get Spark's
    ``spark.scheduler.maxRegisteredResourcesWaitingTime`` (default 30 s)."""
    local = sc.master == "local" or sc.master.startswith("local[")
    wait = 0.0 if local else float(sc._jsc.sc().conf().getTimeAsSeconds(
        "spark.scheduler.maxRegisteredResourcesWaitingTime", "30s"))
    deadline = time.monotonic() + wait
    while (slots := task_slots(sc)) < workers:
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


def run_rounds(sc, handles, spec: TrainSpec, state: SolverState, rounds: int, tau: int,
               seed: int, validate=None, validate_every: int = 1, start: int = 0,
               history=None, faults: FaultInjection | None = None, callbacks=(),
               rounds_per_job: int = 1, hold_every: tuple[int, ...] = (), channel=None
               ) -> tuple[SolverState, list[RoundStats]]:
    """Run SparkNet rounds over the cached blocks: each round a Spark job that the driver
    averages, or, with ``rounds_per_job`` > 1, several rounds per barrier-stage job whose tasks
    average among themselves (:func:`barrier_rounds_task`; same result, bit for bit).

    Parameters
    ----------
    sc : SparkContext
    handles : RDD of BlockHandle, one per partition
    spec : TrainSpec
    state : SolverState
        Weights and history to start from.
    rounds, tau, seed : int
    validate : callable, optional
        Maps a state to its validation accuracy, top-1 and top-5 (or None); called every
        ``validate_every`` rounds and after the last one.
    start, history :
        Rounds already done (resuming from a checkpoint) and their statistics.
    faults : FaultInjection, optional
        Test switch injecting task failures.
    callbacks : sequence of callables
        Each called as ``callback(rounds_done, state, history)`` after every round
        (checkpoints, progress bar, MLflow); ``state`` is None for a round inside a job.
    rounds_per_job : int
        Rounds per Spark job.
    hold_every : tuple of int
        Intervals on whose multiples a job ends, so the callbacks get the state there.
    channel : SparkChannel or SocketChannel, optional
        How states travel (:mod:`.exchange`); Spark's broadcast and results by default.
    """
    channel = channel or SparkChannel(sc)
    history = list(history or [])
    began = time.perf_counter() - ((history[-1].wall_seconds or 0.0) if history else 0.0)
    holds = (*hold_every, *((validate_every,) if validate is not None else ()))
    r = start
    while r < rounds:
        stop = job_end(r, rounds, rounds_per_job, holds)
        started = time.perf_counter()
        state_bc = channel.share(state)
        broadcast = time.perf_counter() - started
        sc.setJobDescription(f"SparkNet rounds {r + 1}-{stop}/{rounds} (tau={tau})"
                             if stop - r > 1 else f"SparkNet round {r + 1}/{rounds} (tau={tau})")
        task_args = dict(spec=spec, state_bc=state_bc, tau=tau, seed=seed, faults=faults,
                         channel=channel)
        try:
            state, done = (run_barrier_job(sc, handles, r, stop, **task_args)
                           if rounds_per_job > 1 else
                           run_driver_round(sc, handles, r, **task_args))
        finally:
            sc.setJobDescription(None)
            channel.release(state_bc)
        # The job's time beyond its rounds inside the tasks (broadcast, scheduling, result
        # transfer; all of it for a one-round job) counts in its first round.
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
                               broadcast_seconds=broadcast if k == 0 else 0.0,
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
