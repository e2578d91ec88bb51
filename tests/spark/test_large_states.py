"""Nets whose states do not fit through the driver's JVM (hardening issue, item 1): on local[2]
with default settings, LeNet with ip1 num_output 30000 (24M parameters) killed the driver JVM
in round 1. Its states now travel over the driver's own authenticated sockets."""
import logging

import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator, zoo  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402
from sparknet_ml.driver import exchange  # noqa: E402


@pytest.fixture(scope="module")
def small_df(spark):
    images, labels = fashion_mnist.load("train")
    rows = [(bytearray(images[i].tobytes()), float(labels[i])) for i in range(64)]
    return spark.createDataFrame(rows, "features binary, label double").repartition(2).cache()


def lenet(ip1_outputs=500, **params):
    net = zoo.prototxt("lenet_train_test").replace("num_output: 500",
                                                f"num_output: {ip1_outputs}")
    return SparkNetEstimator(netPrototxt=net, solverPrototxt=zoo.prototxt("lenet_solver"),
                             inputShape=[1, 28, 28], batchSize=4, syncInterval=2, maxIter=2,
                             seed=5, showProgress=False, **params)


@pytest.mark.parametrize("ip1_outputs, rounds_per_job", [(30000, 1), (30000, 2)])
def test_an_imagenet_sized_state_trains_on_default_driver_memory(spark, small_df, caplog,
                                                                 ip1_outputs, rounds_per_job):
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        model = lenet(ip1_outputs, roundsPerJob=rounds_per_job).fit(small_df)
    assert "they travel over the driver's sockets instead" in caplog.text
    assert model.weights["ip1"][0].shape == (ip1_outputs, 800)
    assert np.isfinite(model.history["loss"]).all() and len(model.history) == 2


@pytest.mark.parametrize("rounds_per_job", [1, 2])
def test_the_socket_route_gives_the_spark_routes_model_bit_for_bit(spark, small_df, monkeypatch,
                                                                    caplog, rounds_per_job):
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        through_spark = lenet(roundsPerJob=rounds_per_job).fit(small_df)
    assert "through Spark" in caplog.text
    # the test installs the choice of route (no switch in the production path)
    monkeypatch.setattr("sparknet_ml.driver.exchange.plan_route",
                        lambda *args: exchange.Route(True, "forced by the test"))
    over_sockets = lenet(roundsPerJob=rounds_per_job).fit(small_df)
    for name, blobs in through_spark.weights.items():
        for a, b in zip(blobs, over_sockets.weights[name]):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(through_spark.history["loss"], over_sockets.history["loss"])
