import os
import sys

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable

import pytest  # noqa: E402

from . import sftp_server  # noqa: E402


@pytest.fixture(scope="session")
def sftp_key(tmp_path_factory):
    """The client key of the tests' SFTP server (generated once per test run)."""
    if not sftp_server.available():
        pytest.skip("sshd is not installed (make setup installs openssh-server)")
    return sftp_server.client_key(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def sftp(sftp_key, tmp_path_factory):
    """sshd on 127.0.0.1 serving a temporary folder over SFTP for the whole test run; stopped
    by pid at the end."""
    server = sftp_server.SftpServer(str(tmp_path_factory.mktemp("sftp")), sftp_key)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local[2] SparkSession for every Spark test, like pyspark.testing's
    ReusedSQLTestCase; it reaches the tests' SFTP server (fixture ``sftp``) once that runs."""
    from pyspark.sql import SparkSession
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
