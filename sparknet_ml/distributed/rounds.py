"""SparkNet rounds over a DataFrame: convert once, cache, then broadcast → train → average."""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..engine.worker import RoundResult, SolverState, TrainSpec, average_results, train_round

log = logging.getLogger("sparknet_ml")


@dataclass(frozen=True)
class InputSpec:
    """How DataFrame columns become a net's input blobs."""

    features_col: str
    label_col: str
    input_shape: tuple[int, ...]
    scale: float = 1.0
    mean: tuple[float, ...] = ()


def to_block(batches, spec: InputSpec):
    """mapInArrow function: each Arrow batch → one row of float32 bytes (features, labels)."""
    import pyarrow as pa
    from ..data.arrow import features_to_array, labels_to_array
    for batch in batches:
        x = transform_features(features_to_array(batch.column(spec.features_col),
                                                 spec.input_shape, name=spec.features_col),
                               spec)
        y = labels_to_array(batch.column(spec.label_col), name=spec.label_col)
        yield pa.RecordBatch.from_pydict({"features": [x.tobytes()], "labels": [y.tobytes()]})


def transform_features(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Apply the replaced data layer's transform: ``(x - mean) * scale`` (Caffe's order)."""
    if spec.mean:
        x = x - np.asarray(spec.mean, np.float32).reshape((1, -1) + (1,) * (x.ndim - 2))
    if spec.scale != 1.0:
        x = x * np.float32(spec.scale)
    return np.ascontiguousarray(x, np.float32)


def merge_block(rows, input_shape):
    """Concatenate a partition's converted rows into one (features, labels) block."""
    features, labels = [], []
    for row in rows:
        features.append(np.frombuffer(row.features, np.float32))
        labels.append(np.frombuffer(row.labels, np.float32))
    x = np.concatenate(features) if features else np.empty(0, np.float32)
    y = np.concatenate(labels) if labels else np.empty(0, np.float32)
    yield x.reshape((-1,) + tuple(input_shape)), y


def cache_blocks(df, spec: InputSpec, num_workers: int):
    """Convert ``df`` once into one cached float32 block per worker partition.

    Returns
    -------
    blocks : RDD of (features, labels)
    sizes : list of int
        Rows per partition.
    """
    from pyspark import StorageLevel
    if df.rdd.getNumPartitions() != num_workers:
        df = df.repartition(num_workers)
    converted = df.select(spec.features_col, spec.label_col).mapInArrow(
        functools.partial(to_block, spec=spec), "features binary, labels binary")
    blocks = converted.rdd.mapPartitions(
        functools.partial(merge_block, input_shape=spec.input_shape))
    blocks.setName("sparknet_ml training blocks").persist(StorageLevel.MEMORY_ONLY)
    sizes = blocks.map(lambda block: len(block[1])).collect()
    return blocks, sizes


def round_task(index, blocks, spec: TrainSpec, state_bc, round_index: int, tau: int, seed: int):
    """The task of one partition in one round (module level: nothing of the driver's closes
    over it but its arguments)."""
    for features, labels in blocks:
        yield train_round(spec, features, labels, state_bc.value, round_index, tau, seed, index)


def validate_task(blocks, spec, key: str, weights_bc):
    """Count correct top-1 predictions of the broadcast weights on a validation block."""
    from ..engine.scoring import cached_net, forward
    for features, labels in blocks:
        if len(labels) == 0:
            yield 0, 0
            continue
        net = cached_net(spec, key, lambda: weights_bc.value)
        logits = forward(net, spec, features)[0]
        yield int((logits.argmax(axis=1) == labels).sum()), len(labels)


def validation_accuracy(sc, blocks, spec, weights) -> float:
    """Top-1 accuracy of ``weights`` on the cached validation blocks (one Spark job)."""
    from ..engine.scoring import weights_key
    weights_bc = sc.broadcast(weights)
    try:
        counts = blocks.mapPartitions(functools.partial(
            validate_task, spec=spec, key=weights_key(weights), weights_bc=weights_bc)).collect()
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


def run_rounds(sc, blocks, spec: TrainSpec, state: SolverState, rounds: int, tau: int,
               seed: int, validate=None, validate_every: int = 1
               ) -> tuple[SolverState, list[RoundStats]]:
    """Run SparkNet rounds: each one a Spark job over the cached blocks.

    Parameters
    ----------
    sc : SparkContext
    blocks : RDD of (features, labels), one element per partition
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
            results: list[RoundResult] = blocks.mapPartitionsWithIndex(functools.partial(
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
