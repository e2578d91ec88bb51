"""A Spark Connect server on a standalone cluster whose executors get pycaffe and sparknet_ml
only from an archive the client ships with its session
(``spark.addArtifacts("env.tar.gz#env", archive=True)`` and
``spark.sql.execution.pyspark.python=./env/bin/python``), the Connect form of docs/cluster.md's
``--archives``: a client fits and scores through it, and its executors' Python workers import
caffe and sparknet_ml from the unpacked archive, never from the project's .venv (the archive
built once with test_shipping.py, fixture ``packed_env``)."""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")
pytest.importorskip("venv_pack")

from ..spark.test_bad_input import tiny  # noqa: E402
from ..storage_checks import rows  # noqa: E402


def test_a_connect_servers_executors_run_from_the_shipped_archive(standalone_cluster,
                                                                  packed_env, tmp_path):
    from pyspark.sql import SparkSession

    from ..connect_server import ConnectServer
    archive, _, _ = packed_env
    server = ConnectServer(str(tmp_path), master=standalone_cluster.master_url, conf={
        "spark.executorEnv.OPENBLAS_NUM_THREADS": "1", "spark.executor.memory": "1g",
        "spark.local.dir": str(tmp_path / "driver-local")}, env=standalone_cluster.env())
    spark = SparkSession.builder.remote(server.url()).create()
    # the session's own archive, unpacked in its working folder on every executor, and its
    # Python functions run by the Python inside (a Connect server runs each session's
    # functions in a folder of their own, where the server's --archives are not)
    spark.addArtifacts(f"{archive}#env", archive=True)
    spark.conf.set("spark.sql.execution.pyspark.python", "./env/bin/python")
    try:
        df = rows(spark)
        model = tiny().fit(df)
        scored = model.transform(df).select("prediction").toPandas()
        assert len(scored) == 64 and np.isfinite(model.history["loss"]).all()

        def where(batches):
            import caffe
            import pyarrow as pa

            import sparknet_ml
            for _ in batches:
                yield pa.RecordBatch.from_pydict({
                    "cwd": [os.getcwd()], "executable": [sys.executable],
                    "caffe": [caffe.__file__], "sparknet_ml": [sparknet_ml.__file__]})
        found = spark.range(2).repartition(2).mapInArrow(
            where, "cwd string, executable string, caffe string, sparknet_ml string").collect()
    finally:
        spark.stop()
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        server.stop()
    project_venv = os.path.dirname(os.path.dirname(sys.executable)) + os.sep
    assert found
    for executor in found:
        unpacked = os.path.join(executor.cwd, "env") + os.sep  # Spark unpacks X#env here
        assert executor.cwd.startswith(standalone_cluster.root + os.sep), executor
        for key in ("executable", "caffe", "sparknet_ml"):
            assert getattr(executor, key).startswith(unpacked), (key, executor)
            assert not getattr(executor, key).startswith(project_venv), (key, executor)
