"""What a Spark task runs: SparkNet's local SGD round and batched scoring, on numpy blocks.

No Spark imports: these functions are driven by Spark tasks in production and by plain
numpy / pyarrow data in unit tests and on the GPU machine (which has no Java).

Solver state and purity
-----------------------
A round is a pure function of (state, block, seed, partition, round). The state is the
net's learnable blobs **and** the solver's history (momentum, Adam moments...): both are
broadcast, both are averaged on the driver. Each round the cached solver is reset to that
state, its iteration counter is set to the global iteration ``round * tau`` (so the
learning-rate schedule runs across rounds), Caffe's RNG is seeded from (seed, partition,
round), and the batches are drawn from a permutation that depends on (seed, partition,
epoch) only — never on the task attempt, so a retried task repeats its result exactly.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .caches import BoundedCache
from .solver import (BLOCK_TOP, LABEL_BLOCK_TOP, MEAN_TOP, ROUND_TOP, make_solver, pack_pixels,
                     packable, packed_shape, set_device)
from .state import RoundResult, SolverState, flatten, state_size, unflatten, weighted_mean
from .transform import Transform


@dataclass(frozen=True)
class TrainSpec:
    """Everything a worker needs to build its solver; JSON-simple and hashable.

    Attributes
    ----------
    net_text : str
        Training net prototxt whose single Input layer feeds ``data_top`` (and ``label_top``).
    solver_text : str
        Solver prototxt (file paths already removed).
    batch_size : int
        Examples per iteration per worker.
    data_top, label_top : str
        Blob names the Input layer produces.
    gpu : int or None
        GPU id, or None for the CPU.
    tf32 : bool
        TensorFloat-32 math on the GPU.
    transform : Transform
        The TRAIN-phase data transform (crop offsets and flips drawn per example and
        iteration from (seed, partition, round)).
    resident : bool
        Keep the partition's block inside the net and gather each batch there
        (:func:`~sparknet_ml.engine.solver.with_resident_block`): on a GPU no batch crosses
        from the host. The block is transformed once, or, when the transform draws crops or
        flips, kept as stored (uint8 pixels packed four to a float) and transformed per batch
        on the device by the SparkNetTransform layer from draws made here. Costs a copy of the
        block in host and device memory; blocks over :data:`RESIDENT_MAX_BYTES` (counted as
        float32) are fed batch by batch instead.
    """

    net_text: str
    solver_text: str
    batch_size: int
    data_top: str = "data"
    label_top: str = "label"
    gpu: int | None = None
    tf32: bool = False
    transform: Transform = Transform()
    resident: bool = False

    def key(self) -> str:
        """Digest identifying the solver this spec builds (a resident net holds its transform's
        layer and mean)."""
        text = "\0".join((self.net_text, self.solver_text, str(self.batch_size), self.data_top,
                          self.label_top, str(self.gpu), str(self.tf32),
                          str(self.resident), json.dumps(self.transform.describe())))
        return hashlib.sha256(text.encode()).hexdigest()


MAX_CACHED_SOLVERS = 2
"""Solvers a Python worker keeps: this fit's and one more (a Pipeline or a validation
alternating two nets); older ones are released with their host and GPU memory."""
# The block (features, labels) a resident solver holds, by solver key; released with their
# solver.
_BLOCKS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _release_resident(key: str, _solver) -> None:
    _BLOCKS.pop(key, None)


# The solvers of a Python worker process, by solver key, reused across rounds and tasks: a
# CrossValidator sweep builds one per fit, and each can hold a resident block of up to
# RESIDENT_MAX_BYTES.
_SOLVERS = BoundedCache(MAX_CACHED_SOLVERS, on_evict=_release_resident)
# Largest block (as float32) kept inside a net; float32 indices address rows exactly up to 2**24.
RESIDENT_MAX_BYTES = 4 << 30


def cached_solver(spec: TrainSpec, packed: bool = False):
    """Return this process's solver for ``spec`` (for a resident block of packed uint8
    pixels when ``packed``), building it on first use after releasing the least recently
    used ones beyond :data:`MAX_CACHED_SOLVERS`; Caffe's mode, device and math (per
    thread) are set for it every time."""
    set_device(spec.gpu, spec.tf32)
    return _SOLVERS.get_or_make(_solver_key(spec, packed), lambda: make_solver(
        spec.net_text, spec.solver_text, spec.batch_size,
        (spec.data_top, spec.label_top, spec.transform, packed) if spec.resident else None))


def _solver_key(spec: TrainSpec, packed: bool) -> str:
    return spec.key() + ("/packed" if packed else "")


def _views(solver) -> SolverState:
    """The solver's learnable blobs and history as numpy views of their data."""
    return SolverState([blob.data for blobs in solver.net.params.values() for blob in blobs],
                       [blob.data for blob in solver.history])


def get_state(solver) -> SolverState:
    """Copy the solver's learnable blobs and history out as float32 arrays."""
    views = _views(solver)
    return SolverState([a.copy() for a in views.weights], [a.copy() for a in views.history])


def named_weights(state: SolverState, layout) -> dict[str, list[np.ndarray]]:
    """Split a state's flat weight list into {layer name: blobs}, by the (layer name, blob
    count) ``layout`` of ``net.params``."""
    weights, i = {}, 0
    for name, count in layout:
        weights[name] = state.weights[i:i + count]
        i += count
    return weights


def set_state(solver, state: SolverState | np.ndarray) -> None:
    """Load ``state`` (or its vector, :func:`~sparknet_ml.engine.state.flatten`) into the
    solver's learnable blobs and history."""
    views = _views(solver)
    if isinstance(state, np.ndarray):
        state = unflatten(state, views)
    if len(views.weights) != len(state.weights) or len(views.history) != len(state.history):
        raise ValueError(f"state has {len(state.weights)} weights and {len(state.history)} "
                         f"history blobs; the net has {len(views.weights)} and "
                         f"{len(views.history)}")
    for view, value in zip(views.weights + views.history, state.weights + state.history):
        view[...] = value


def _flat_state(solver, spec: TrainSpec):
    """The solver's ``caffe.FlatState`` (its state in one device buffer and one pinned host
    buffer, :mod:`sparknet_ml.build.patches`' pycaffe-flat-state) on a GPU, made on first use
    and kept in the solver's attributes, which it must not outlive; None on the CPU or where
    blobs are shared between layers (blob by blob there)."""
    if spec.gpu is None:
        return None
    flat = getattr(solver, "flat_state", None)
    if flat is None:
        from caffe._caffe import FlatState
        try:
            flat = FlatState(solver)
        except RuntimeError:  # blobs shared between layers: no place of their own
            flat = False
        solver.flat_state = flat
    return flat or None


def load_state(solver, spec: TrainSpec, state: SolverState | np.ndarray) -> None:
    """Load ``state`` (or its vector) into the solver: on a GPU, through the pinned buffer
    with one copy to the device; on the CPU, blob by blob (:func:`set_state`)."""
    flat = _flat_state(solver, spec)
    if flat is None:
        set_state(solver, state)
        return
    host = flat.host()
    if isinstance(state, SolverState):
        flatten(state, out=host)
    elif not np.shares_memory(state, host):
        if state.size != host.size:
            raise ValueError(f"a state vector of {state.size} values for a solver of "
                             f"{host.size}")
        host[...] = state
    flat.from_host()


def read_state(solver, spec: TrainSpec) -> np.ndarray:
    """The solver's state as one vector (:func:`~sparknet_ml.engine.state.flatten`'s layout):
    a buffer of the solver's, valid until its next :func:`load_state` or :func:`read_state`
    (on a GPU the pinned host buffer, filled by one copy from the device)."""
    flat = _flat_state(solver, spec)
    if flat is not None:
        flat.to_host()
        return flat.host()
    views = _views(solver)
    vector = getattr(solver, "state_vector", None)  # reused: no fresh pages every round
    if vector is None:
        vector = solver.state_vector = np.empty(state_size(views), np.float32)
    return flatten(views, out=vector)


def feeds_resident(spec: TrainSpec, features: np.ndarray) -> bool:
    """Whether ``train_round`` keeps this block inside the net (``spec.resident`` and small
    enough)."""
    return spec.resident and features.size * 4 <= RESIDENT_MAX_BYTES and len(features) <= 2**24


def load_resident(solver, spec: TrainSpec, features: np.ndarray, labels: np.ndarray,
                  rows: np.ndarray, packed: bool = False) -> None:
    """Put the block into a resident solver's net (only when it holds another one) and this
    round's ``rows`` into its ``sparknet_round`` blob: row indices, or with a transform that
    draws, ``(row, crop offset h, crop offset w, mirror)`` per example; ``packed``: the
    block's uint8 pixels go in four to a float (:func:`~sparknet_ml.engine.solver.pack_pixels`).

    Each round's ``tau`` iterations hand out all of its rows, so the SparkNetRows layer's
    cursor is back at its first row when the next round starts (and starts over when the
    number of rows changes).
    """
    key = _solver_key(spec, packed)
    held = _BLOCKS.get(key)
    blobs = solver.net.blobs
    if held is None or held[0] is not features or held[1] is not labels:
        block = blobs[BLOCK_TOP]
        if spec.transform.random:  # stored as it is; SparkNetTransform transforms per batch
            if packed:
                block.reshape(*packed_shape(features.shape))
                pack_pixels(features, block.data)
            else:
                block.reshape(*features.shape)
                block.data[...] = features
            if spec.transform.mean_image is not None:
                blobs[MEAN_TOP].reshape(1, *features.shape[1:])
                blobs[MEAN_TOP].data[...] = spec.transform.mean_image
        else:
            block.reshape(len(features), *block.shape[1:])
            spec.transform.apply(features, out=block.data)
        if LABEL_BLOCK_TOP in blobs:
            label_block = blobs[LABEL_BLOCK_TOP]
            label_block.reshape(len(labels), *label_block.shape[1:])
            label_block.data[...] = labels.reshape((-1,) + (1,) * (len(label_block.shape) - 1))
        _BLOCKS[key] = (features, labels)
    count, width = (len(rows), rows.shape[1]) if rows.ndim == 2 else (rows.size, 1)
    round_rows = blobs[ROUND_TOP]
    round_rows.reshape(count, 1, 1, width)
    round_rows.data.reshape(count, width)[:] = rows.reshape(count, width)


def batch_indices(n: int, batch_size: int, first_iter: int, iters: int, seed: int,
                  partition: int) -> np.ndarray:
    """Row indices of ``iters`` batches starting at global iteration ``first_iter``.

    The partition is walked epoch by epoch, each epoch in its own permutation drawn from
    (seed, partition, epoch), so the rows of any round follow from its inputs alone.
    """
    start, stop = first_iter * batch_size, (first_iter + iters) * batch_size
    rows = np.empty(stop - start, np.int64)
    for epoch in range(start // n, (stop - 1) // n + 1):
        order = np.random.default_rng((seed, partition, epoch)).permutation(n)
        first, last = max(start, epoch * n), min(stop, (epoch + 1) * n)
        rows[first - start:last - start] = order[first - epoch * n:last - epoch * n]
    return rows.reshape(iters, batch_size)


def _round_solver(spec: TrainSpec, features: np.ndarray):
    """The cached solver that rounds on ``features`` run, whether the block stays in its net,
    and whether as packed uint8 pixels."""
    resident = feeds_resident(spec, features)
    packed = resident and spec.transform.random and packable(spec.transform, features)
    return cached_solver(spec, packed), resident, packed


def held_state(spec: TrainSpec, features: np.ndarray) -> np.ndarray:
    """The state the solver of rounds on ``features`` holds (after ``keep=True`` rounds), as
    :func:`read_state` gives it."""
    return read_state(_round_solver(spec, features)[0], spec)


def train_round(spec: TrainSpec, features: np.ndarray, labels: np.ndarray,
                state: SolverState | None, round_index: int, tau: int, seed: int,
                partition: int, keep: bool = False) -> RoundResult:
    """Run ``tau`` solver iterations from ``state`` on one partition's block.

    Parameters
    ----------
    spec : TrainSpec
        How to build the solver.
    features : ndarray, uint8 or float32, shape (n, *input_shape)
        The partition's stored examples (``spec.transform`` is applied per batch; its crops
        and flips come from a generator seeded with (seed, partition, round)).
    labels : ndarray, float32, shape (n,)
    state : SolverState, ndarray or None
        Weights and history broadcast for this round (or their vector,
        :func:`~sparknet_ml.engine.state.flatten`); None: those the solver holds already
        (the previous round's, kept with ``keep``).
    round_index, tau, seed, partition : int
        The round r (global iterations r*tau .. r*tau+tau-1), and what fixes the data order.
    keep : bool
        Leave the resulting state in the solver (on a GPU, on the device) rather than copy
        it out: the result's state is None, :func:`held_state` reads it.

    Returns
    -------
    RoundResult
        Its state as one vector (:func:`read_state`: on a GPU the solver's pinned buffer,
        valid until the solver's next round).
    """
    n = len(features)
    if n == 0:
        return RoundResult(None, 0, 0.0, partition)
    import caffe
    solver, resident, packed = _round_solver(spec, features)
    if state is not None:
        load_state(solver, spec, state)
    solver.iter = round_index * tau
    caffe.set_random_seed(int.from_bytes(hashlib.sha256(
        f"{seed}/{partition}/{round_index}".encode()).digest()[:4], "little") & 0x7FFFFFFF)
    batches = batch_indices(n, spec.batch_size, round_index * tau, tau, seed, partition)
    transform = spec.transform
    drawn = [None] * tau
    if transform.random:
        generator = np.random.default_rng((seed, partition, round_index))
        drawn = [transform.draw(generator, spec.batch_size, features.shape[1:])
                 for _ in batches]
    if resident:
        rows = batches.reshape(-1)
        if transform.random:  # the SparkNetTransform layer's draws: row, h, w, mirror
            rows = np.column_stack([rows, np.concatenate([d[0] for d in drawn]),
                                    np.concatenate([d[1] for d in drawn])])
        load_resident(solver, spec, features, labels, rows, packed)
    if resident:  # one call into Caffe for the whole round: block and rows are in the net
        solver.step(tau)
        loss = solver.smoothed_loss  # the mean of the tau losses (make_solver's window)
    else:
        data = solver.net.blobs[spec.data_top]
        label = solver.net.blobs[spec.label_top] if spec.label_top else None
        losses = np.empty(tau)
        for k, rows in enumerate(batches):
            # Blob.data is mutable_cpu_data(): read it per step, or on a GPU Caffe would not
            # copy the new batch over the one already on the device.
            offsets, flips = drawn[k] or (None, None)
            transform.apply(features, rows, offsets, flips, out=data.data)
            if label is not None:
                label.data[...] = labels[rows]
            solver.step(1)
            losses[k] = solver.smoothed_loss
        loss = losses.mean()
    return RoundResult(None if keep else read_state(solver, spec), tau * spec.batch_size,
                       float(loss), partition)


def average_results(results: list[RoundResult],
                    like: SolverState) -> tuple[SolverState, int, float]:
    """Average the partitions' state vectors weighted by samples seen (empty partitions
    skipped): :func:`~sparknet_ml.engine.state.weighted_mean`, the function the in-job mesh
    applies to their chunks.

    Parameters
    ----------
    results : list of RoundResult
        Each with its state as one vector (:func:`~sparknet_ml.engine.state.flatten`).
    like : SolverState
        A state of the fit: the average's shapes.

    Returns
    -------
    state : SolverState
    samples : int
        Total samples seen this round.
    loss : float
        Sample-weighted mean training loss.
    """
    seen = sorted((r for r in results if r.samples > 0), key=lambda r: r.partition)
    flat = weighted_mean([(r.samples, r.state) for r in seen])
    total = sum(r.samples for r in seen)
    loss = float(sum(r.samples / total * r.loss for r in seen))
    return unflatten(flat, like), total, loss


def divergence(round_number: int, results: list[RoundResult], state: SolverState) -> str | None:
    """Where a fit diverged in this round (naming the partition when its own loss shows it),
    or None; what to change is the driver's to say, from the solver
    (:func:`~sparknet_ml.net.prototxt.divergence_hint`)."""
    for r in results:
        if r.samples and not np.isfinite(r.loss):
            return f"round {round_number}: the loss of partition {r.partition} is {r.loss}"
    for i, weights in enumerate(state.weights):
        if not np.isfinite(weights).all():
            return f"round {round_number}: averaged weight blob {i} holds NaN or Inf"
    return None
