"""The tasks of ``SparkNetModel.transform``: Arrow batches in, the net's outputs appended, by
Caffe (:func:`score_batches`) or by onnxruntime from the exported model
(:func:`score_batches_onnx`, which loads no pycaffe: this module imports none at load)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .blocks import InputSpec
from .environment import caffe_messages_to_spark, on_task_gpu


@dataclass(frozen=True)
class OutputColumns:
    """How a batch's rows become examples to score, and its outputs columns.

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
    handle_invalid : {"error", "skip", "keep"}
        What becomes of a row whose features are null or hold NaN/Inf (the handleInvalid
        param): it stops the task, is left out of the output, or gets NaN outputs.
    column_names : tuple of str
        The input DataFrame's column names, which an error quotes to find a row by.
    """

    inputs: InputSpec
    features_at: int
    names: tuple[str, ...]
    classification: bool
    probabilities: bool = False
    handle_invalid: str = "error"
    column_names: tuple[str, ...] = ()

    def examples(self, batches, partition: int):
        """Each Arrow batch of ``partition`` as ``(batch, x, invalid)``: the rows to score,
        their stored examples (uint8 where the column holds pixels, which cannot be NaN) and
        the mask of the rows kept with a null or NaN/Inf feature (``handle_invalid="keep"``:
        their examples are zeros, their outputs will be NaN), or None.

        Raises
        ------
        ValueError
            With ``handle_invalid="error"``, naming the first invalid row.
        """
        import pyarrow as pa
        from ..data.arrow import features_to_array
        offset = 0
        for batch in batches:
            column = batch.column(self.features_at)
            valid = column.is_valid().to_numpy(zero_copy_only=False, writable=True)
            x = features_to_array(column if valid.all() else column.filter(valid),
                                  self.inputs.input_shape, name=self.inputs.features_col,
                                  pixels=True, resize=self.inputs.resize)
            finite = (np.ones(len(x), bool) if x.dtype == np.uint8
                      else np.isfinite(x).all(axis=tuple(range(1, x.ndim))))
            valid[np.flatnonzero(valid)] = finite
            invalid = None
            if not valid.all():
                if self.handle_invalid == "error":
                    raise ValueError(self._invalid_row(batch, int(np.argmin(valid)), offset,
                                                       partition))
                if self.handle_invalid == "skip":
                    batch, x = batch.filter(pa.array(valid)), x[finite]
                else:  # keep: zeros in their place, NaN outputs
                    invalid, kept = ~valid, np.zeros((len(valid), *x.shape[1:]), x.dtype)
                    kept[valid] = x[finite]
                    x = kept
            offset += len(column)
            yield batch, x, invalid

    def _invalid_row(self, batch, row: int, offset: int, partition: int) -> str:
        """The error for ``row`` of ``batch`` (its features null or NaN/Inf), naming it by
        its place in the partition and by its scalar columns (at most four)."""
        import pyarrow as pa
        value = batch.column(self.features_at)[row]
        scalars = [f"{name}={batch.column(i)[row].as_py()!r:.40}"
                   for i, (name, field) in enumerate(zip(self.column_names, batch.schema))
                   if i != self.features_at and (pa.types.is_primitive(field.type)
                                                 or pa.types.is_string(field.type))][:4]
        return (f"features column {self.inputs.features_col!r}: row {offset + row} of "
                f"partition {partition}" + (f" ({', '.join(scalars)})" if scalars else "")
                + (" is null" if not value.is_valid else " holds NaN or Inf")
                + "; clean it, or set handleInvalid='skip' (leave such rows out) or 'keep' "
                "(NaN outputs) on the model")

    def append(self, batch, outputs: list[np.ndarray], invalid: np.ndarray | None = None):
        """``batch`` with the columns of ``outputs`` (logits first, then the extra blobs);
        the rows ``invalid`` marks get NaN in every one."""
        import pyarrow as pa
        from ..data.arrow import arrays_to_arrow, vectors_to_arrow
        if invalid is not None:
            outputs = [np.where(invalid[:, None], np.nan, o) for o in outputs]
        logits, extra = outputs[0], outputs[1:]
        raw_name, prob_name, pred_name, *blob_names = self.names
        new = {raw_name: vectors_to_arrow(logits)}
        if self.classification:
            new[prob_name] = vectors_to_arrow(logits / logits.sum(axis=1, keepdims=True)
                                              if self.probabilities else softmax(logits))
            prediction = logits.argmax(axis=1).astype(np.float64)
        else:
            prediction = logits[:, 0].astype(np.float64)
        if invalid is not None:
            prediction[invalid] = np.nan
        new[pred_name] = pa.array(prediction)
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
    from pyspark import TaskContext
    from ..engine.scoring import cached_net, forward
    from ..engine.solver import packable
    spec = on_task_gpu(spec)
    with caffe_messages_to_spark():
        for batch, x, invalid in columns.examples(batches, TaskContext.get().partitionId()):
            net = cached_net(spec, key, lambda: weights.value, packable(spec.transform, x))
            yield columns.append(batch, forward(net, spec, x), invalid)


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
    scorer = cached_session(spec, key, lambda: model.value, gpu_visible=assigned or None)
    for batch, x, invalid in columns.examples(batches, context.partitionId()):
        yield columns.append(batch, forward(scorer, spec, x), invalid)
