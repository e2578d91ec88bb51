"""Spark ML Params of SparkNetEstimator and SparkNetModel (pyspark.ml conventions).

Every value is JSON-simple (strings, numbers, lists, None) so stages persist as JSON.
"""
from __future__ import annotations

import functools
import inspect
import math

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasFeaturesCol, HasLabelCol, HasMaxIter,
                                     HasPredictionCol, HasProbabilityCol,
                                     HasRawPredictionCol, HasSeed)


# Every param's default, in one place: _SparkNetParams sets them, and the keyword signature of
# SparkNetEstimator's __init__ and setParams shows them (:func:`takes_params`). None means
# unset (seed: pyspark's default, a hash of the class name).
DEFAULTS = {
    "netPrototxt": None, "solverPrototxt": None, "featuresCol": "features", "labelCol": "label",
    "inputShape": None, "batchSize": 64, "syncInterval": 50, "maxIter": 40, "roundsPerJob": "auto",
    "numWorkers": None, "seed": None, "predictionCol": "prediction",
    "probabilityCol": "probability", "rawPredictionCol": "rawPrediction", "outputBlobs": [],
    "meanFile": None, "initialWeights": None, "useGpu": "auto", "allowTf32": False,
    "validationCol": None, "validationInterval": 5, "handleInvalid": "error",
    "checkpointDir": None, "checkpointInterval": 10, "baseLr": None, "showProgress": True,
    "scoringBackend": "caffe",
}


def takes_params(method):
    """A stage's ``method(self, **params)`` (under ``keyword_only``): its signature lists every
    param of :data:`DEFAULTS` as a keyword with its default, and another keyword is a
    TypeError naming it."""
    @functools.wraps(method)
    def checked(self, **params):
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"{type(self).__name__}.{method.__name__}() got unexpected keyword "
                            f"argument(s): {', '.join(unknown)}")
        return method(self, **params)
    keyword = inspect.Parameter.KEYWORD_ONLY
    checked.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, keyword, default=value) for name, value in DEFAULTS.items()])
    return checked


def _prototxt_text(value, kind: str) -> str:
    """Prototxt text from text, a file path (any storage location) or a protobuf message;
    ``kind`` ("net" or "solver") says what a file should hold."""
    if hasattr(value, "SerializeToString"):
        from google.protobuf import text_format
        return text_format.MessageToString(value)
    from ..net.prototxt import names_a_file, read_prototxt_file
    if names_a_file(value):
        try:
            return read_prototxt_file(value, kind)
        except ValueError as err:
            raise TypeError(str(err)) from None
    return TypeConverters.toString(value)


def _net_text(value) -> str:
    return _prototxt_text(value, "net")


def _solver_text(value) -> str:
    return _prototxt_text(value, "solver")


# Converters raise TypeError: pyspark then names the param in the message.
def _positive_int(value) -> int:
    value = TypeConverters.toInt(value)
    if value <= 0:
        raise TypeError(f"must be a positive integer, got {value}")
    return value


def _auto_or_positive_int(value):
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _positive_int(value)
    except TypeError:
        raise TypeError(f"must be 'auto' or a positive integer, got {value!r}") from None


def _optional(converter):
    return lambda value: None if value is None else converter(value)


def _choice(*choices):
    def convert(value) -> str:
        text = str(value).lower()
        if text not in choices:
            raise TypeError(f"must be one of {', '.join(repr(c) for c in choices)}, "
                            f"got {value!r}")
        return text
    return convert


def _positive_finite_float(value) -> float:
    value = TypeConverters.toFloat(value)
    if not 0 < value < math.inf:  # also rejects NaN
        raise TypeError(f"must be a positive finite number, got {value}")
    return value


class _SparkNetParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol,
                      HasRawPredictionCol, HasMaxIter, HasSeed):
    """Params shared by SparkNetEstimator and SparkNetModel."""

    netPrototxt = Param(Params._dummy(), "netPrototxt",
                        "Caffe net prototxt text (the setter also takes a file path or a "
                        "caffe_pb2.NetParameter); data layers are replaced by DataFrame inputs",
                        typeConverter=_net_text)
    solverPrototxt = Param(Params._dummy(), "solverPrototxt",
                           "Caffe solver prototxt text (or a file path, or a SolverParameter); "
                           "net and snapshot paths in it are ignored",
                           typeConverter=_solver_text)
    inputShape = Param(Params._dummy(), "inputShape",
                       "shape of one example, e.g. [C, H, W]; inferred from the net when it "
                       "states one", typeConverter=_optional(TypeConverters.toListInt))
    batchSize = Param(Params._dummy(), "batchSize",
                      "examples per solver iteration per worker (and per forward when scoring)",
                      typeConverter=_positive_int)
    syncInterval = Param(Params._dummy(), "syncInterval",
                         "tau: local SGD iterations per worker between weight averages",
                         typeConverter=_positive_int)
    roundsPerJob = Param(Params._dummy(), "roundsPerJob",
                         "averaging rounds per Spark job: 'auto' (default) = barrier-stage "
                         "jobs whose tasks average among themselves, each ending at the next "
                         "checkpoint or validation round or after about 10 s of rounds, when "
                         "the cluster has a task slot for every worker, else one job per "
                         "round (logged with the reason); 1 = one job per round, averaged on "
                         "the driver; k > 1 = barrier jobs of k rounds (needs a task slot per "
                         "worker); same weights bit for bit in every case; a failed barrier "
                         "job reruns its rounds", typeConverter=_auto_or_positive_int)
    numWorkers = Param(Params._dummy(), "numWorkers",
                       "partitions trained in parallel (default: the DataFrame's partitions)",
                       typeConverter=_optional(_positive_int))
    outputBlobs = Param(Params._dummy(), "outputBlobs",
                        "blobs added as array<float> columns by transform (feature extraction)",
                        typeConverter=TypeConverters.toListString)
    meanFile = Param(Params._dummy(), "meanFile",
                     "path of a mean image .binaryproto (as Caffe's compute_image_mean writes "
                     "it) subtracted from every stored example; overrides transform_param."
                     "mean_file, which like it is read on the driver (a relative path from its "
                     "working directory)", typeConverter=_optional(TypeConverters.toString))
    initialWeights = Param(Params._dummy(), "initialWeights",
                           "path of a .caffemodel to start training from (fine-tuning)",
                           typeConverter=_optional(TypeConverters.toString))
    useGpu = Param(Params._dummy(), "useGpu",
                   "'auto' (GPU when pycaffe has CUDA and a GPU is visible), 'true', 'false'",
                   typeConverter=_choice("auto", "true", "false"))
    allowTf32 = Param(Params._dummy(), "allowTf32",
                      "on a GPU, let cuBLAS and cuDNN convolutions use TensorFloat-32 tensor "
                      "cores (faster large layers, ~1e-3 relative error per product); default "
                      "False = IEEE fp32", typeConverter=TypeConverters.toBoolean)
    validationCol = Param(Params._dummy(), "validationCol",
                          "boolean column marking rows held out of training for validation",
                          typeConverter=_optional(TypeConverters.toString))
    validationInterval = Param(Params._dummy(), "validationInterval",
                               "rounds between validation accuracy evaluations (and after "
                               "the last round), when validationCol is set",
                               typeConverter=_positive_int)
    handleInvalid = Param(Params._dummy(), "handleInvalid",
                          "rows with a null or NaN/Inf feature (or label, at fit): 'error' "
                          "(default) stops the fit before round 1, or transform's task naming "
                          "the row; 'skip' leaves them out of training, or of transform's "
                          "output; 'keep' (transform only: a fit refuses it) scores them NaN "
                          "in every output column", typeConverter=_choice("error", "skip", "keep"))
    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "folder for checkpoints (weights, solver state, round, history); a "
                          "fit given the same folder resumes from its latest checkpoint",
                          typeConverter=_optional(TypeConverters.toString))
    checkpointInterval = Param(Params._dummy(), "checkpointInterval",
                               "rounds between checkpoints (and after the last round)",
                               typeConverter=_positive_int)
    baseLr = Param(Params._dummy(), "baseLr",
                   "overrides the solver's base_lr (for parameter grids)",
                   typeConverter=_optional(_positive_finite_float))
    showProgress = Param(Params._dummy(), "showProgress",
                         "show a progress bar of rounds (loss, samples/s, ETA) on the driver's "
                         "stderr when it is a terminal", typeConverter=TypeConverters.toBoolean)

    scoringBackend = Param(Params._dummy(), "scoringBackend",
                           "what transform scores with: 'caffe' (default) or 'onnxruntime' "
                           "(the model exported to ONNX; executors then need onnxruntime, "
                           "not pycaffe; CUDA where their onnxruntime has it and useGpu "
                           "allows)", typeConverter=_choice("caffe", "onnxruntime"))

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(**{name: value for name, value in DEFAULTS.items()
                            if name not in ("netPrototxt", "solverPrototxt", "seed")})

    def getNetPrototxt(self) -> str:
        """Gets the value of netPrototxt."""
        return self.getOrDefault(self.netPrototxt)

    def getSolverPrototxt(self) -> str:
        """Gets the value of solverPrototxt."""
        return self.getOrDefault(self.solverPrototxt)

    def getInputShape(self) -> list | None:
        """Gets the value of inputShape."""
        return self.getOrDefault(self.inputShape)

    def getBatchSize(self) -> int:
        """Gets the value of batchSize."""
        return self.getOrDefault(self.batchSize)

    def getSyncInterval(self) -> int:
        """Gets the value of syncInterval."""
        return self.getOrDefault(self.syncInterval)

    def getRoundsPerJob(self) -> int | str:
        """Gets the value of roundsPerJob."""
        return self.getOrDefault(self.roundsPerJob)

    def getNumWorkers(self) -> int | None:
        """Gets the value of numWorkers."""
        return self.getOrDefault(self.numWorkers)

    def getOutputBlobs(self) -> list:
        """Gets the value of outputBlobs."""
        return self.getOrDefault(self.outputBlobs)

    def getMeanFile(self) -> str | None:
        """Gets the value of meanFile."""
        return self.getOrDefault(self.meanFile)

    def getInitialWeights(self) -> str | None:
        """Gets the value of initialWeights."""
        return self.getOrDefault(self.initialWeights)

    def getUseGpu(self) -> str:
        """Gets the value of useGpu."""
        return self.getOrDefault(self.useGpu)

    def getAllowTf32(self) -> bool:
        """Gets the value of allowTf32."""
        return self.getOrDefault(self.allowTf32)

    def getValidationCol(self) -> str | None:
        """Gets the value of validationCol."""
        return self.getOrDefault(self.validationCol)

    def getValidationInterval(self) -> int:
        """Gets the value of validationInterval."""
        return self.getOrDefault(self.validationInterval)

    def getHandleInvalid(self) -> str:
        """Gets the value of handleInvalid."""
        return self.getOrDefault(self.handleInvalid)

    def getCheckpointDir(self) -> str | None:
        """Gets the value of checkpointDir."""
        return self.getOrDefault(self.checkpointDir)

    def getCheckpointInterval(self) -> int:
        """Gets the value of checkpointInterval."""
        return self.getOrDefault(self.checkpointInterval)

    def getBaseLr(self) -> float | None:
        """Gets the value of baseLr."""
        return self.getOrDefault(self.baseLr)

    def getShowProgress(self) -> bool:
        """Gets the value of showProgress."""
        return self.getOrDefault(self.showProgress)

    def getScoringBackend(self) -> str:
        """Gets the value of scoringBackend."""
        return self.getOrDefault(self.scoringBackend)


class _ScoringSetters:
    """Setters of the params that matter when scoring: shared by the estimator and the model."""

    def setFeaturesCol(self, value):
        """Sets featuresCol."""
        return self._set(featuresCol=value)

    def setPredictionCol(self, value):
        """Sets predictionCol."""
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value):
        """Sets probabilityCol."""
        return self._set(probabilityCol=value)

    def setRawPredictionCol(self, value):
        """Sets rawPredictionCol."""
        return self._set(rawPredictionCol=value)

    def setOutputBlobs(self, value):
        """Sets outputBlobs (blobs added as array<float> columns by transform)."""
        return self._set(outputBlobs=value)

    def setBatchSize(self, value):
        """Sets batchSize."""
        return self._set(batchSize=value)

    def setUseGpu(self, value):
        """Sets useGpu ('auto', 'true', 'false')."""
        return self._set(useGpu=value)

    def setAllowTf32(self, value):
        """Sets allowTf32 (TensorFloat-32 math on a GPU; default False)."""
        return self._set(allowTf32=value)

    def setScoringBackend(self, value):
        """Sets scoringBackend ('caffe', 'onnxruntime')."""
        return self._set(scoringBackend=value)

    def setHandleInvalid(self, value):
        """Sets handleInvalid ('error', 'skip'; 'keep' for transform only)."""
        return self._set(handleInvalid=value)
