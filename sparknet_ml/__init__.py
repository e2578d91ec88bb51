"""sparknet_ml: SparkNet's distributed Caffe training as Spark ML stages."""

__version__ = "0.1.0"
