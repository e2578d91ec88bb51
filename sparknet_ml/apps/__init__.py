"""Runnable SparkNet apps (``python -m`` or ``spark-submit`` a file) and what they share."""
from __future__ import annotations

import os
import sys


def spark_session(master: str | None, name: str):
    """The SparkSession of an app or CLI command: spark-submit's when run under it, else one
    on ``master`` (default ``local[2]``) on loopback, with this interpreter for Python workers
    and one BLAS thread per worker."""
    from pyspark.sql import SparkSession
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    builder = SparkSession.builder.appName(name)
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        builder = builder.master(master or "local[2]")
    spark = builder.config("spark.ui.showConsoleProgress", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
