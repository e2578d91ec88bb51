"""The tasks of ``SparkNetModel.transform``: Arrow batches in, the net's outputs appended, by
Caffe (:func:`score_batches`) or by onnxruntime from the exported model
(:func:`score_batches_onnx`, which loads no pycaffe: this module imports none at load)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .blocks import InputSpec
from .environment import on_task_gpu


@dataclass(frozen=True)
class OutputColumns:
    """How a batch's outputs become columns.

    Attributes
    ----------
    inputs : InputSpec
        The features column and one example's shape.
    features_at : int
        The features column's position in the batch.
    names : tuple of str
        (raw, probability, prediction, *blobs) column names; probability is unused for a
        regression net.
    classification : bool
        Whether the first output holds class scores (probability and argmax added).
    probabilities : bool
        The first output already holds class probabilities, not logits.
    """

    inputs: InputSpec
    features_at: int
    names: tuple[str, ...]
    classification: bool
    probabilities: bool = False

    def features(self, batch) -> np.ndarray:
        """The batch's stored examples (uint8 where the column holds pixels)."""
        from ..data.arrow import features_to_array
        return features_to_array(batch.column(self.features_at), self.inputs.input_shape,
                                 name=self.inputs.features_col, pixels=True,
                                 resize=self.inputs.resize)

    def append(self, batch, outputs: list[np.ndarray]):
        """``batch`` with the columns of ``outputs`` (logits first, then the extra blobs)."""
        import pyarrow as pa
        from ..data.arrow import arrays_to_arrow, vectors_to_arrow
        logits, extra = outputs[0], outputs[1:]
        raw_name, prob_name, pred_name, *blob_names = self.names
        new = {raw_name: vectors_to_arrow(logits)}
        if self.classification:
            new[prob_name] = vectors_to_arrow(logits / logits.sum(axis=1, keepdims=True)
                                              if self.probabilities else softmax(logits))
            new[pred_name] = pa.array(logits.argmax(axis=1).astype(np.float64))
        else:
            new[pred_name] = pa.array(logits[:, 0].astype(np.float64))
        for name, values in zip(blob_names, extra):
            new[name] = arrays_to_arrow(values)
        return pa.RecordBatch.from_arrays(batch.columns + list(new.values()),
                                          names=batch.schema.names + list(new))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64 and returned as float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def score_batches(batches, spec, key: str, weights, columns: OutputColumns):
    """mapInArrow function: append the Caffe net's output columns to every Arrow batch.

    ``spec`` is an :class:`~sparknet_ml.engine.scoring.ScoreSpec`; ``weights``
    (:mod:`.states`: inline or shipped) give ``{layer: [blobs]}``; ``key`` names them in the
    Python worker's net cache."""
    from ..engine.scoring import cached_net, forward
    from ..engine.solver import packable
    spec = on_task_gpu(spec)
    for batch in batches:
        x = columns.features(batch)
        net = cached_net(spec, key, lambda: weights.value, packable(spec.transform, x))
        yield columns.append(batch, forward(net, spec, x))


def score_batches_onnx(batches, spec, key: str, model, columns: OutputColumns):
    """mapInArrow function: append the exported model's output columns to every Arrow batch,
    run by onnxruntime on the task's cores, or on its GPU (see
    :func:`~sparknet_ml.engine.onnx_scoring.providers`).

    ``spec`` is an :class:`~sparknet_ml.engine.onnx_scoring.OnnxSpec`; ``model``
    (:mod:`.states`: inline or shipped) gives the ONNX bytes, which ``key`` names in the
    Python worker's session cache."""
    from pyspark import TaskContext
    from ..engine.devices import task_gpu
    from ..engine.onnx_scoring import cached_session, forward
    context = TaskContext.get()
    resources = context.resources()
    assigned = bool(resources.get("gpu") is not None and resources["gpu"].addresses)
    spec = dataclasses.replace(spec, gpu=task_gpu(resources), threads=context.cpus())
    session = cached_session(spec, key, lambda: model.value, gpu_visible=assigned or None)
    for batch in batches:
        yield columns.append(batch, forward(session, spec, columns.features(batch)))
