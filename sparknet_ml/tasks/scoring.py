"""The task of ``SparkNetModel.transform``: Arrow batches in, the net's outputs appended."""
from __future__ import annotations

import numpy as np

from ..engine.scoring import ScoreSpec, cached_net, forward, softmax
from .blocks import InputSpec
from .environment import on_task_gpu


def score_batches(batches, spec: ScoreSpec, inputs: InputSpec, key: str, weights,
                  classification: bool, names: tuple[str, ...], features_at: int,
                  probabilities: bool = False):
    """mapInArrow function: append the model's output columns to every Arrow batch, whose
    column ``features_at`` holds the features (``probabilities``: the output already holds
    class probabilities, not logits). ``weights`` (:mod:`.states`: inline or shipped)
    give ``{layer: [blobs]}``; ``key`` names them in the Python worker's net cache."""
    import pyarrow as pa
    from ..data.arrow import arrays_to_arrow, features_to_array, vectors_to_arrow
    from ..engine.solver import packable
    spec = on_task_gpu(spec)
    for batch in batches:
        x = features_to_array(batch.column(features_at), inputs.input_shape,
                              name=inputs.features_col, pixels=True, resize=inputs.resize)
        net = cached_net(spec, key, lambda: weights.value, packable(spec.transform, x))
        outputs = forward(net, spec, x)
        logits, extra = outputs[0], outputs[1:]
        raw_name, prob_name, pred_name, *blob_names = names
        new = {raw_name: vectors_to_arrow(logits)}
        if classification:
            new[prob_name] = vectors_to_arrow(
                logits / logits.sum(axis=1, keepdims=True) if probabilities else softmax(logits))
            new[pred_name] = pa.array(logits.argmax(axis=1).astype(np.float64))
        else:
            new[pred_name] = pa.array(logits[:, 0].astype(np.float64))
        for name, values in zip(blob_names, extra):
            new[name] = arrays_to_arrow(values)
        yield pa.RecordBatch.from_arrays(batch.columns + list(new.values()),
                                         names=batch.schema.names + list(new))
