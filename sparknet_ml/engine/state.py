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

    state: SolverState | None  # None when the partition had no data
    samples: int
    loss: float                # mean training loss over the round's iterations
    partition: int = -1
    seconds: float = 0.0       # the task's time for it (set by the caller that measures it)
