"""Spark's GPU scheduling with a fake discovery script (no GPU needed): one worker with two
"GPUs" and two cores; prints the device each of two concurrent tasks would give Caffe."""
import json
import os
import sys
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable

from pyspark import TaskContext  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from sparknet_ml.engine.devices import task_gpu  # noqa: E402


def device_of_task(_):
    started = time.time()
    time.sleep(1.0)  # both tasks hold their GPU at the same time
    return task_gpu(TaskContext.get().resources()), started, time.time()


script = sys.argv[1]
spark = (SparkSession.builder.master("local-cluster[1,2,1024]")
         .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
         .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
         .config("spark.worker.resource.gpu.amount", "2")
         .config("spark.worker.resource.gpu.discoveryScript", script)
         .config("spark.executor.resource.gpu.amount", "2")
         .config("spark.executor.resource.gpu.discoveryScript", script)
         .config("spark.task.resource.gpu.amount", "1").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
print(json.dumps(spark.sparkContext.parallelize(range(2), 2).map(device_of_task).collect()))
spark.stop()
