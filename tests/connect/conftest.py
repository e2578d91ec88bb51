"""A Spark Connect client session on the tests' own Connect server (tests/connect_server.py).

pyspark marks a process as a Connect client (``SPARK_CONNECT_MODE_ENABLED``) when it builds a
remote session, and pyspark.ml then takes its Connect paths; the mark is removed when the
module's session stops, so the classic tests of the same run keep the classic paths.
"""
import os
import sys

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """The server, for the whole test run; stopped by pid at the end."""
    from .. import connect_server, sftp_server
    conf = (sftp_server.spark_conf(sftp_server.key_path(str(tmp_path_factory.getbasetemp())))
            if sftp_server.available() else {})  # its JVM reaches the tests' SFTP server
    # a 466 MiB state carried back in a job's rows passes through the server's driver JVM
    # (local[2]: the executor's result block and the driver's copy in one heap)
    conf["spark.driver.memory"] = "4g"
    server = connect_server.ConnectServer(str(tmp_path_factory.mktemp("connect")), conf=conf)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(connect_server):
    """A Connect session on the server, for one test module."""
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(connect_server.url()).create()
    yield spark
    spark.stop()
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
