"""sparknet_ml: SparkNet's distributed Caffe training as Spark ML stages.

The stages are imported on first use, so the worker engine and the pycaffe build
(``sparknet_ml.engine``, ``sparknet_ml.build``) run where pyspark is not installed.

>>> from sparknet_ml import SparkNetEstimator, SparkNetModel
"""

import os

# glog reads this when libglog loads (the first import of caffe, anywhere in sparknet_ml):
# keep Caffe's INFO chatter (a solver's whole parameter dump) out of users' logs unless
# they ask for it.
os.environ.setdefault("GLOG_minloglevel", "2")

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
