"""SparkNetEstimator: SparkNet's distributed Caffe training as a Spark ML Estimator."""
from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.util import MLReadable, MLWritable

from .. import net as netlib
from ..driver.fit import Trained, fit
from ..params import _ScoringSetters, _SparkNetParams, takes_params


class SparkNetEstimator(Estimator, _SparkNetParams, _ScoringSetters, MLReadable, MLWritable):
    """Trains a Caffe net on a DataFrame with SparkNet's scheme.

    Each of ``maxIter`` rounds broadcasts the weights, runs ``syncInterval`` local SGD
    iterations of the Caffe solver on every partition's own data, and averages the
    partitions' weights (and solver history) weighted by samples seen.

    Examples
    --------
    >>> from sparknet_ml import SparkNetEstimator, zoo
    >>> est = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train"),
    ...                         solverPrototxt=zoo.prototxt("lenet_solver"),
    ...                         inputShape=[1, 28, 28], syncInterval=10, maxIter=5)
    >>> est.getSyncInterval(), est.getBatchSize()
    (10, 64)
    """

    @keyword_only
    @takes_params
    def __init__(self, **params):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    @takes_params
    def setParams(self, **params):
        """Sets params; same keywords as the constructor."""
        return self._set(**self._input_kwargs)

    def setNetPrototxt(self, value):
        """Sets netPrototxt (text, a file path or a NetParameter)."""
        return self._set(netPrototxt=value)

    def setSolverPrototxt(self, value):
        """Sets solverPrototxt (text, a file path or a SolverParameter)."""
        return self._set(solverPrototxt=value)

    def setLabelCol(self, value):
        """Sets labelCol."""
        return self._set(labelCol=value)

    def setInputShape(self, value):
        """Sets inputShape."""
        return self._set(inputShape=value)

    def setSyncInterval(self, value):
        """Sets syncInterval (tau)."""
        return self._set(syncInterval=value)

    def setMaxIter(self, value):
        """Sets maxIter (number of averaging rounds)."""
        return self._set(maxIter=value)

    def setRoundsPerJob(self, value):
        """Sets roundsPerJob ('auto' or a positive integer)."""
        return self._set(roundsPerJob=value)

    def setNumWorkers(self, value):
        """Sets numWorkers."""
        return self._set(numWorkers=value)

    def setSeed(self, value):
        """Sets seed."""
        return self._set(seed=value)

    def setMeanFile(self, value):
        """Sets meanFile (a mean image .binaryproto; overrides transform_param.mean_file)."""
        return self._set(meanFile=value)

    def setInitialWeights(self, value):
        """Sets initialWeights (a .caffemodel path)."""
        return self._set(initialWeights=value)

    def setValidationCol(self, value):
        """Sets validationCol."""
        return self._set(validationCol=value)

    def setValidationInterval(self, value):
        """Sets validationInterval."""
        return self._set(validationInterval=value)

    def setCheckpointDir(self, value):
        """Sets checkpointDir."""
        return self._set(checkpointDir=value)

    def setCheckpointInterval(self, value):
        """Sets checkpointInterval."""
        return self._set(checkpointInterval=value)

    def setBaseLr(self, value):
        """Sets baseLr (overrides the solver's base_lr)."""
        return self._set(baseLr=value)

    def setShowProgress(self, value):
        """Sets showProgress."""
        return self._set(showProgress=value)

    def _fit(self, dataset):
        return fit(self, dataset, self._model)

    def _model(self, trained: Trained):
        """The SparkNetModel of a finished fit: its deploy net's weights (a TRAIN-only
        learnable layer, an auxiliary head, trains but is neither scored nor saved)."""
        from .model import SparkNetModel
        nets, test = trained.nets, trained.nets.test_transform
        scored = {layer.name for layer in nets.deploy.net.layer}
        model = SparkNetModel._create(
            weights={name: blobs for name, blobs in trained.weights.items() if name in scored},
            deploy_text=netlib.net_to_text(nets.deploy.net),
            output_blob=nets.deploy.output_blob, classification=nets.deploy.classification,
            probabilities=nets.deploy.probabilities, data_top=trained.spec.data_top,
            history=[h.__dict__ for h in trained.history], scale=test.scale,
            mean=list(test.mean_values), mean_image=test.mean_image,
            crop=None if test.crop is None else list(test.crop),
            input_shape=list(nets.inputs.input_shape), resize=nets.inputs.resize)
        model._resetUid(self.uid)
        return self._copyValues(model)

    @classmethod
    def read(cls):
        """Returns an MLReader that checks the saved class before loading."""
        from ..persistence import StageReader
        return StageReader(cls)

    def write(self):
        """Returns an MLWriter: params as JSON metadata, nothing pickled."""
        from ..persistence import StageWriter
        return StageWriter(self)
