"""One local[2] SparkSession for every Spark test, like pyspark.testing's ReusedSQLTestCase."""
import os
import sys

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The session; it reaches the tests' SFTP server (fixture ``sftp``) once that runs."""
    from pyspark.sql import SparkSession
    from .. import sftp_server
    builder = SparkSession.builder
    if sftp_server.available():
        key = sftp_server.key_path(str(tmp_path_factory.getbasetemp()))
        for name, value in sftp_server.spark_conf(key).items():
            builder = builder.config(name, value)
    session = (builder.master("local[2]").appName("sparknet_ml-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.python.worker.reuse", "true")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
