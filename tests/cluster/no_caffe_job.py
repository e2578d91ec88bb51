"""Score a saved SparkNetModel on a local[2] session whose Python workers cannot import
pycaffe (no_caffe_daemon.py): ``python no_caffe_job.py MODEL DATA OUT``.

With ``scoringBackend='onnxruntime'`` it writes ``id`` and ``raw`` (the rawPrediction as an
array) of every row of the parquet ``DATA`` to the parquet ``OUT``; then it tries the Caffe
backend and prints why that failed.
"""
import os
import sys

from pyspark.ml.functions import vector_to_array
from pyspark.sql import SparkSession

from sparknet_ml import SparkNetModel

if __name__ == "__main__":
    folder, data, out = sys.argv[1:4]
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
             .config("spark.python.daemon.module", "no_caffe_daemon")
             .config("spark.executorEnv.PYTHONPATH", os.path.dirname(os.path.abspath(__file__)))
             .getOrCreate())
    spark.sparkContext.setLogLevel("OFF")
    rows = spark.read.parquet(data)
    model = SparkNetModel.load(folder).setScoringBackend("onnxruntime")
    (model.transform(rows).select("id", vector_to_array("rawPrediction").alias("raw"))
     .write.parquet(out))
    try:
        model.setScoringBackend("caffe").transform(rows).collect()
        print("caffe backend scored")
    except Exception as err:  # noqa: BLE001 - the worker's error, whatever Spark wraps it in
        text = str(err)
        print("caffe backend failed: No module named 'caffe'" if "No module named 'caffe"
              in text else f"caffe backend failed otherwise: {text[:2000]}")
    spark.stop()
