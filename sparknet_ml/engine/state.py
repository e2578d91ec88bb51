"""What a round hands on: a solver's state and one partition's result.

Plain numpy dataclasses, apart from :mod:`.worker` so that the task side's carriers
(:mod:`sparknet_ml.tasks.states`) load where pycaffe is not installed (scoring with
onnxruntime).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SolverState:
    """Learnable blobs (in ``net.params`` order) and the solver's history blobs."""

    weights: list[np.ndarray]
    history: list[np.ndarray]


@dataclass
class RoundResult:
    """What one partition returns from a round."""

    # the state as one vector (flatten's layout); None when the partition had no data
    state: np.ndarray | None
    samples: int
    loss: float                # mean training loss over the round's iterations
    partition: int = -1
    seconds: float = 0.0       # the task's time for it (set by the caller that measures it)


def flatten(state: SolverState, out: np.ndarray | None = None) -> np.ndarray:
    """``state`` as one contiguous float32 vector: the weights, then the history, in order
    (into ``out`` when given, else a new array)."""
    arrays = [*state.weights, *state.history]
    if out is None:
        out = np.empty(sum(a.size for a in arrays), np.float32)
    at = 0
    for a in arrays:
        out[at:at + a.size] = a.reshape(-1)
        at += a.size
    return out


def unflatten(flat: np.ndarray, like: SolverState) -> SolverState:
    """The state of ``like``'s shapes whose arrays are views of the vector ``flat``
    (:func:`flatten`'s inverse, without copies)."""
    arrays, at = [], 0
    for a in (*like.weights, *like.history):
        arrays.append(flat[at:at + a.size].reshape(a.shape))
        at += a.size
    if at != flat.size:
        raise ValueError(f"a state vector of {flat.size} values for a state of {at}")
    return SolverState(arrays[:len(like.weights)], arrays[len(like.weights):])


def state_size(state: SolverState) -> int:
    """Values (float32) in ``state``: weights and history."""
    return sum(a.size for a in (*state.weights, *state.history))


def weighted_mean(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """SparkNet's average of equal-length float32 vectors, weighted by samples seen.

    ``parts`` are (samples, vector) in partition order; those with no samples do not count.
    Sums run in float64, element by element, in that order, so the driver's average of whole
    states and the in-job mesh's average of their chunks give the same bits.

    Raises
    ------
    ValueError
        When no part saw any data.
    """
    seen = [(samples, vector) for samples, vector in parts if samples > 0]
    if not seen:
        raise ValueError("no partition saw any data this round")
    total = sum(samples for samples, _ in seen)
    out = np.zeros(seen[0][1].shape, np.float64)
    for samples, vector in seen:
        out += (samples / total) * vector
    return out.astype(np.float32)
