"""A task that fails through a Spark Connect session is recovered to the classic session's
weights, bit for bit: Spark's retry of a round's task, and the driver's rerun of a barrier
job. The Connect server here runs ``local[2,4]`` (tasks retried) with Python workers forked
from tests/cluster/fault_daemon.py: partition 0's worker exits (``os._exit(134)``) the first
time it runs round 2."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")

from .test_connect import fashion, lenet, same_weights  # noqa: E402

CLUSTER_TESTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cluster")


@pytest.fixture(scope="module")
def classic_model(spark):
    return lenet().fit(fashion(spark))


@pytest.fixture(scope="module")
def marks(tmp_path_factory):
    return tmp_path_factory.mktemp("fault-marks")


@pytest.fixture(scope="module")
def faulty_remote(classic_model, marks, tmp_path_factory):
    from pyspark.sql import SparkSession
    from .. import connect_server
    faults = {"rounds": [2], "mode": "exit", "marks": str(marks)}
    # a local master's Python workers take their environment from the server's process
    server = connect_server.ConnectServer(
        str(tmp_path_factory.mktemp("faulty-connect")), master="local[2,4]",
        conf={"spark.python.daemon.module": "fault_daemon"},
        env={"PYTHONPATH": os.pathsep.join(filter(None, [CLUSTER_TESTS,
                                                         os.environ.get("PYTHONPATH")])),
             "SPARKNET_TEST_FAULTS": json.dumps(faults)})
    spark = SparkSession.builder.remote(server.url()).create()
    yield spark
    spark.stop()
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    server.stop()


@pytest.mark.parametrize("rounds_per_job", [1, 3])
def test_a_failed_task_is_recovered_to_the_classic_weights(classic_model, faulty_remote, marks,
                                                            rounds_per_job, caplog):
    import logging
    for mark in marks.iterdir():  # arm the fault again
        mark.unlink()
    with caplog.at_level(logging.WARNING, logger="sparknet_ml"):
        model = lenet(roundsPerJob=rounds_per_job).fit(fashion(faulty_remote))
    assert [m.name for m in marks.iterdir()] == ["round-2"]  # the fault did happen
    if rounds_per_job > 1:
        assert "SparkNet rounds 1-3 failed (attempt 1 of 4)" in caplog.text
    same_weights(model, classic_model)
    assert np.isfinite(model.history["loss"]).all()
