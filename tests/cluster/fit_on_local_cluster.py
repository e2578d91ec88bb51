"""Fit and score LeNet on a local-cluster master (real executor JVMs); prints a JSON result.

Run by test_local_cluster.py in its own process: a process has one SparkContext, and the
other tests hold a local[2] one.
"""
import json
import os
import sys

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable

from pyspark.ml.evaluation import MulticlassClassificationEvaluator  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from sparknet_ml import SparkNetEstimator, zoo  # noqa: E402
from sparknet_ml.apps.fashion_mnist import fashion_mnist_df  # noqa: E402

spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
         .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
         .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable).getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
train = fashion_mnist_df(spark, "train").limit(3000).repartition(2)
test = fashion_mnist_df(spark, "test").limit(1000)
model = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train_test"),
                          solverPrototxt=zoo.prototxt("lenet_solver"), inputShape=[1, 28, 28],
                          syncInterval=10, maxIter=6, seed=5).fit(train)
accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
    model.transform(test))
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
print(json.dumps({"accuracy": accuracy, "executors": executors,
                  "rounds": len(model.history)}))
spark.stop()
