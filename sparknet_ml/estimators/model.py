"""SparkNetModel: a trained Caffe net as a Spark ML Model, scoring Arrow batches."""
from __future__ import annotations

import functools
import hashlib

import numpy as np
from pyspark.ml import Model
from pyspark.ml.util import MLReadable, MLWritable

from ..engine.onnx_scoring import OnnxSpec
from ..engine.scoring import ScoreSpec, Weights, weights_key
from ..tasks.blocks import InputSpec
from ..tasks.scoring import OutputColumns, score_batches, score_batches_onnx
from ..engine.transform import Transform
from ..params import _ScoringSetters, _SparkNetParams
from ..driver import columns, session
from ..driver.exchange import share_model, share_weights


class SparkNetModel(Model, _SparkNetParams, _ScoringSetters, MLReadable, MLWritable):
    """A trained Caffe net. ``transform`` keeps every input column and adds
    ``rawPrediction`` (logits, Vector), ``probability`` (softmax, Vector) and ``prediction``
    (double) for classification nets, plus one ``array<float>`` column per ``outputBlobs``
    name. A row whose features are null or hold NaN/Inf fails its task (naming the row),
    or with ``handleInvalid`` 'skip' is left out, with 'keep' gets NaN in every added
    column."""

    def __init__(self):
        super().__init__()
        self._weights: Weights = {}
        self._meta: dict = {}
        self._mean_image: np.ndarray | None = None
        # The last export: [(outputs, transform, pixels, banded_lrn), ModelProto, its bytes
        # once scoring has serialized it]
        self._onnx: list = []

    @classmethod
    def _create(cls, weights: Weights, mean_image: np.ndarray | None = None,
                **meta) -> "SparkNetModel":
        model = cls()
        model._weights = weights
        model._mean_image = mean_image
        model._meta = meta
        return model

    @property
    def inputTransform(self) -> Transform:
        """The TEST-phase data transform ``transform`` applies: center crop, mean, scale."""
        meta = self._meta
        crop = meta.get("crop")
        return Transform(scale=meta["scale"], mean_values=tuple(meta["mean"]),
                         mean_image=self._mean_image,
                         crop=None if crop is None else tuple(crop))

    @property
    def weights(self) -> Weights:
        """Learnable blobs by layer name (float32 arrays)."""
        return self._weights

    @property
    def deployPrototxt(self) -> str:
        """The derived deploy net (Input layer, no loss) as prototxt text."""
        return self._meta["deploy_text"]

    @property
    def history(self):
        """Per-round training statistics as a pandas DataFrame: round, loss, samples,
        seconds, samples_per_second, validation_accuracy, wall_seconds."""
        import pandas as pd
        return pd.DataFrame(self._meta.get("history", []))

    def plotHistory(self, path: str) -> None:
        """Write a PNG of training loss and validation accuracy against round and wall time
        (needs matplotlib: ``pip install 'sparknet_ml[plot]'``)."""
        from ..driver.reporting import plot_history
        plot_history(self.history, path)

    def _score_spec(self, conf=None) -> ScoreSpec:
        """The scoring spec, after the checks a fit makes: allowed layers, the input batch
        cap, output blobs and columns, and the deploy net built (and, for the CPU, run on a
        small batch) once by Caffe in a child process (a CHECK failure or an unimplemented
        layer there is a ValueError with Caffe's message, not an abort), whose output blobs
        must have the batch as first axis."""
        from .. import net as netlib
        from ..engine.probe import deploy_blob_shapes
        from ..engine.solver import net_with_batch
        meta = self._meta
        netlib.check_layers(netlib.parse_net(meta["deploy_text"]))  # a loaded file is untrusted
        columns.check_input_memory(self.getBatchSize(), meta["input_shape"])
        deploy = net_with_batch(meta["deploy_text"], self.getBatchSize())
        columns.check_outputs(self, deploy, meta["classification"])
        deploy_text = netlib.net_to_text(deploy)
        gpu = columns.resolve_gpu(self.getUseGpu(), conf, purpose="scoring")
        shapes = deploy_blob_shapes(deploy_text, run=gpu is None)
        for blob in (meta["output_blob"], *self.getOutputBlobs()):
            if shapes[blob][:1] != (self.getBatchSize(),):
                raise ValueError(f"blob {blob!r} has shape {list(shapes[blob])}: its first axis "
                                 f"is not the batch ({self.getBatchSize()} rows), so it cannot "
                                 "be split into one value per row")
        return ScoreSpec(deploy_text, self.getBatchSize(), meta["data_top"],
                         (meta["output_blob"], *self.getOutputBlobs()), gpu,
                         self.getAllowTf32(),
                         self.inputTransform)

    def _onnx_spec(self) -> OnnxSpec:
        """The onnxruntime scoring spec, after the checks :meth:`_score_spec` makes that
        concern the model's columns (the GPU is chosen in the task, by its onnxruntime)."""
        from .. import net as netlib
        meta = self._meta
        columns.check_input_memory(self.getBatchSize(), meta["input_shape"])
        columns.check_outputs(self, netlib.parse_net(meta["deploy_text"]),
                              meta["classification"])
        return OnnxSpec(self.getBatchSize(), meta["data_top"], self.getUseGpu())

    def _onnx_model(self, transform: bool = True, pixels: bool = False,
                    banded_lrn: bool = False):
        """This model as an ``onnx.ModelProto``: the output blob, then ``outputBlobs``; with
        ``transform``, taking stored examples (the TEST-phase transform as nodes in front of
        the net), uint8 ones with ``pixels``; ``banded_lrn`` as for
        :func:`~sparknet_ml.net.onnx_export.to_onnx` (the scoring model)."""
        from ..persistence.onnx_file import onnx_model
        meta = self._meta
        outputs = (meta["output_blob"], *self.getOutputBlobs())
        export = (outputs, transform, pixels, banded_lrn)
        if self._onnx[:1] != [export]:  # the last export, kept for the next call
            self._onnx = [export, onnx_model(
                meta["deploy_text"], self._weights, outputs,
                self.inputTransform if transform else None, meta["input_shape"], pixels,
                banded_lrn), None]
        return self._onnx[1]

    def _scoring_bytes(self, pixels: bool) -> bytes:
        """The scoring model (:meth:`_onnx_model` with the transform and the banded LRN) as
        bytes for onnxruntime sessions, serialized once per export, not once per call."""
        from ..persistence.onnx_file import serialized
        model = self._onnx_model(pixels=pixels, banded_lrn=True)
        if self._onnx[2] is None:  # a new list: copies of this model share the old one
            self._onnx = [*self._onnx[:2], serialized(model)]
        return self._onnx[2]

    def _transform(self, dataset):
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import types as T
        meta = self._meta
        columns.check_features(dataset.schema, self.getFeaturesCol())
        onnx = self.getScoringBackend() == "onnxruntime"
        spec = (self._onnx_spec() if onnx
                else self._score_spec(session.Settings(dataset.sparkSession)))
        classification = meta["classification"]
        outputs = [(self.getRawPredictionCol(), VectorUDT())]
        if classification:
            outputs.append((self.getProbabilityCol(), VectorUDT()))
        outputs.append((self.getPredictionCol(), T.DoubleType()))
        outputs += [(b, T.ArrayType(T.FloatType())) for b in self.getOutputBlobs()]
        clash = [name for name, _ in outputs if name in dataset.columns]
        if clash:
            raise ValueError(f"output column(s) {', '.join(clash)} already exist in the input")
        # Columns go through mapInArrow by position (c0.., o0..) and get their names back
        # after: pyspark's mapInArrow cannot take a DataFrame whose column names hold dots.
        fields = [T.StructField(f"c{i}", f.dataType, f.nullable)
                  for i, f in enumerate(dataset.schema.fields)]
        added = [T.StructField(f"o{j}", dtype) for j, (_, dtype) in enumerate(outputs)]
        names = tuple(f.name for f in added)
        if not classification:  # OutputColumns names (raw, probability, prediction, *blobs)
            names = (names[0], "", *names[1:])
        out = OutputColumns(InputSpec(self.getFeaturesCol(), "", tuple(meta["input_shape"]),
                                      meta.get("resize", False)),
                            dataset.columns.index(self.getFeaturesCol()), names,
                            classification, meta.get("probabilities", False),
                            self.getHandleInvalid(), tuple(dataset.columns))
        spark = dataset.sparkSession
        if onnx:
            model = self._scoring_bytes(columns.holds_pixels(
                dataset.schema, self.getFeaturesCol()) and not meta.get("resize", False))
            key = hashlib.sha256(model).hexdigest()
            fn = functools.partial(score_batches_onnx, spec=spec, key=key,
                                   model=share_model(spark, model, key), columns=out)
        else:
            session.report_worker_crashes(spark)
            key = weights_key(self._weights)
            fn = functools.partial(score_batches, spec=spec, key=key,
                                   weights=share_weights(spark, self._weights, key),
                                   columns=out)
        positional = dataset.toDF(*(f.name for f in fields))
        return positional.mapInArrow(fn, T.StructType(fields + added)).toDF(
            *dataset.columns, *(name for name, _ in outputs))

    def saveOnnx(self, path: str, overwrite: bool = False, includeTransform: bool = True) -> None:
        """Write this model as an ONNX file (opset 21, IR version 10) for onnxruntime or another
        ONNX runtime, checked by ``onnx.checker`` and by shape inference against Caffe's
        shapes (needs ``pip install 'sparknet_ml[onnx]'``).

        Its input, named as the net's data blob, takes float32 examples of ``N`` rows (any
        batch); its outputs are the model's output blob (logits, or probabilities for a
        ``MultinomialLogisticLoss`` net), then ``outputBlobs``, named as in Caffe.

        Parameters
        ----------
        path : str
            The file (any storage location: hdfs://, s3a://, local ...); written beside it and
            renamed into place, so a failed save leaves no file. A model of 2 GiB or more
            (one protobuf message's limit) keeps its weights as ONNX external data in
            ``<path>.data`` beside it, which onnxruntime reads with the file.
        overwrite : bool
            Replace an existing file (default: refuse).
        includeTransform : bool
            With the TEST-phase data transform (center crop, mean, scale) as nodes in front of
            the net, so the model takes the stored examples ``transform`` takes (C, H, W as
            stored, values as in the features column); without it, the net's own input.

        Raises
        ------
        NetSpecError
            A layer or setting ONNX cannot express (naming the layer), before anything is
            written.
        """
        from ..persistence.onnx_file import write_onnx
        write_onnx(path, self._onnx_model(includeTransform), overwrite)

    def saveCaffeModel(self, directory: str, overwrite: bool = False) -> None:
        """Write ``deploy.prototxt`` and ``weights.caffemodel`` that plain pycaffe loads:
        ``caffe.Net("deploy.prototxt", caffe.TEST, weights="weights.caffemodel")``, and
        ``mean.binaryproto`` when the net subtracts a mean image.

        Parameters
        ----------
        directory : str
            A new folder (or an empty one), any storage location (hdfs://, s3a://, local ...);
            written beside it and renamed into place.
        overwrite : bool
            Replace an existing folder (default: refuse); even then only a folder that holds
            nothing but these files.

        Raises
        ------
        sparknet_ml.storage.StorageError
            When ``directory`` exists and may not be replaced, or cannot be written.
        """
        from ..persistence import save_caffe_model
        save_caffe_model(directory, self._meta["deploy_text"], self._weights,
                         self._mean_image, overwrite)

    @classmethod
    def read(cls):
        """Returns an MLReader that checks the saved class before loading."""
        from ..persistence import StageReader
        return StageReader(cls)

    def write(self):
        """Returns an MLWriter: JSON metadata, deploy.prototxt and weights.caffemodel."""
        from ..persistence import StageWriter
        return StageWriter(self)
