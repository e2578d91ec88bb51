"""A small SparkNet fit run under spark-submit with the executors' Python shipped as an archive
(``--archives env.tar#env --conf spark.pyspark.python=./env/bin/python``); run by
test_shipping.py. Prints one JSON line: the fit's rounds and accuracy, and what each executor's
Python worker imported (``caffe``, ``sparknet_ml``, ``pyspark``) and ran as (``sys.executable``).

The driver runs the project's own Python (spark.pyspark.driver.python); it never imports the
archive.
"""
import json
import logging
import os
import sys
import time

from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.sql import SparkSession

from sparknet_ml import SparkNetEstimator, zoo
from sparknet_ml.apps.fashion_mnist import fashion_mnist_df


def where_am_i(_):
    """Run in a task: the modules and interpreter this executor's Python worker uses."""
    time.sleep(1.0)  # keep this task's core busy so the other task goes to the other executor
    import caffe
    import pyspark

    import sparknet_ml
    from pyspark import SparkFiles, TaskContext
    return {"executor_cwd": os.getcwd(), "spark_files_root": os.path.abspath(
                SparkFiles.getRootDirectory()),
            "sys_executable": sys.executable, "sys_prefix": sys.prefix,
            "caffe": caffe.__file__, "sparknet_ml": sparknet_ml.__file__,
            "pyspark": pyspark.__file__, "partition": TaskContext.get().partitionId(),
            "pid": os.getpid()}


def main():
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sparknet_ml").setLevel(logging.INFO)
    started = time.monotonic()
    seconds = {}
    spark = SparkSession.builder.appName("sparknet_ml shipped env").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    seconds["session"] = time.monotonic() - started
    train = fashion_mnist_df(spark, "train", 3000).repartition(2)
    test = fashion_mnist_df(spark, "test", 1000)
    model = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train_test"),
                              solverPrototxt=zoo.prototxt("lenet_solver"),
                              inputShape=[1, 28, 28], syncInterval=10, maxIter=6, numWorkers=2,
                              seed=5).fit(train)
    seconds["fit"] = time.monotonic() - started - sum(seconds.values())
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(test))
    seconds["score"] = time.monotonic() - started - sum(seconds.values())
    executors = spark.sparkContext.parallelize(range(2), 2).map(where_am_i).collect()
    seconds["probe"] = time.monotonic() - started - sum(seconds.values())
    print(json.dumps({"rounds": len(model.history), "accuracy": accuracy, "seconds": seconds,
                      "driver_executable": sys.executable,
                      "python_exec": spark.sparkContext.pythonExec, "executors": executors}))
    spark.stop()


if __name__ == "__main__":
    main()
