"""sparknet_ml: SparkNet's distributed Caffe training as Spark ML stages.

The stages are imported on first use, so the worker engine and the pycaffe build
(``sparknet_ml.engine``, ``sparknet_ml.build``) run where pyspark is not installed.

>>> from sparknet_ml import SparkNetEstimator, SparkNetModel
"""

__version__ = "0.1.0"
__all__ = ["SparkNetEstimator", "SparkNetModel", "__version__"]


def __getattr__(name):
    if name == "SparkNetEstimator":
        from .estimators.estimator import SparkNetEstimator
        return SparkNetEstimator
    if name == "SparkNetModel":
        from .estimators.model import SparkNetModel
        return SparkNetModel
    raise AttributeError(f"module 'sparknet_ml' has no attribute {name!r}")
