"""SparkNet rounds over a DataFrame: convert once, cache, then broadcast → train → average."""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from ..engine.worker import (RoundResult, SolverState, TrainSpec, average_results, normalize,
                             train_round)
from .blocks import InputSpec, drop_blocks, load_block, store_block, to_rows

log = logging.getLogger("sparknet_ml")


def cache_blocks(df, spec: InputSpec, num_workers: int, fit_id: str):
    """Convert ``df`` once into one block per worker partition (see :mod:`.blocks`).

    Returns
    -------
    handles : RDD of BlockHandle, persisted
    sizes : list of int
        Rows per partition.
    """
    from pyspark import StorageLevel
    if df.rdd.getNumPartitions() != num_workers:
        df = df.repartition(num_workers)
    converted = df.select(spec.features_col, spec.label_col).mapInArrow(
        functools.partial(to_rows, spec=spec), "features binary, labels binary")
    handles = converted.rdd.mapPartitionsWithIndex(functools.partial(
        store_block, input_shape=spec.input_shape, fit_id=fit_id))
    handles.setName(f"sparknet_ml blocks {fit_id}").persist(StorageLevel.MEMORY_AND_DISK)
    sizes = handles.map(lambda handle: handle.rows).collect()
    return handles, sizes


def release_blocks(handles) -> None:
    """Delete the blocks' files (a best-effort job) and unpersist their handles."""
    handles.foreachPartition(drop_blocks)
    handles.unpersist()


def round_task(index, handles, spec: TrainSpec, state_bc, round_index: int, tau: int, seed: int):
    """The task of one partition in one round (module level: nothing of the driver's closes
    over it but its arguments)."""
    for handle in handles:
        features, labels = load_block(handle)
        yield train_round(spec, features, labels, state_bc.value, round_index, tau, seed, index)


def validate_task(handles, spec, inputs: InputSpec, key: str, weights_bc):
    """Count correct top-1 predictions of the broadcast weights on a validation block."""
    from ..engine.scoring import cached_net, forward
    for handle in handles:
        features, labels = load_block(handle)
        if len(labels) == 0:
            yield 0, 0
            continue
        net = cached_net(spec, key, lambda: weights_bc.value)
        logits = forward(net, spec, normalize(features, inputs.scale, inputs.mean))[0]
        yield int((logits.argmax(axis=1) == labels).sum()), len(labels)


def validation_accuracy(sc, handles, spec, inputs: InputSpec, weights) -> float:
    """Top-1 accuracy of ``weights`` on the cached validation blocks (one Spark job)."""
    from ..engine.scoring import weights_key
    weights_bc = sc.broadcast(weights)
    try:
        counts = handles.mapPartitions(functools.partial(
            validate_task, spec=spec, inputs=inputs, key=weights_key(weights),
            weights_bc=weights_bc)).collect()
    finally:
        weights_bc.unpersist()
    total = sum(n for _, n in counts)
    return sum(c for c, _ in counts) / total if total else float("nan")


@dataclass
class RoundStats:
    """One round as the driver saw it."""

    round: int
    loss: float
    samples: int
    seconds: float
    samples_per_second: float
    validation_accuracy: float | None = None


def run_rounds(sc, handles, spec: TrainSpec, state: SolverState, rounds: int, tau: int,
               seed: int, validate=None, validate_every: int = 1
               ) -> tuple[SolverState, list[RoundStats]]:
    """Run SparkNet rounds: each one a Spark job over the cached blocks.

    Parameters
    ----------
    sc : SparkContext
    handles : RDD of BlockHandle, one per partition
    spec : TrainSpec
    state : SolverState
        Weights and history to start from.
    rounds, tau, seed : int
    validate : callable, optional
        Maps a state to a validation accuracy; called every ``validate_every`` rounds and
        after the last one.
    """
    history = []
    for r in range(rounds):
        started = time.perf_counter()
        state_bc = sc.broadcast(state)
        sc.setJobDescription(f"SparkNet round {r + 1}/{rounds} (tau={tau})")
        try:
            results: list[RoundResult] = handles.mapPartitionsWithIndex(functools.partial(
                round_task, spec=spec, state_bc=state_bc, round_index=r, tau=tau,
                seed=seed)).collect()
        finally:
            sc.setJobDescription(None)
            state_bc.unpersist()
        state, samples, loss = average_results(results)
        seconds = time.perf_counter() - started
        stats = RoundStats(r + 1, loss, samples, seconds, samples / seconds)
        if validate is not None and ((r + 1) % validate_every == 0 or r + 1 == rounds):
            stats.validation_accuracy = validate(state)
        history.append(stats)
        log.info("round %d/%d  loss %.4f  %.0f samples/s  %.2f s%s", r + 1, rounds, loss,
                 stats.samples_per_second, seconds,
                 "" if stats.validation_accuracy is None
                 else f"  validation accuracy {stats.validation_accuracy:.4f}")
    return state, history
