"""Nets whose states do not fit through the driver's JVM (hardening issue, item 1): on local[2]
with default settings, LeNet with ip1 num_output 30000 (24M parameters) killed the driver JVM
in round 1. Its states travel over the driver's own authenticated sockets, never through a
JVM, whether a job runs one round or several."""
import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator, zoo  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402


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


@pytest.mark.parametrize("rounds_per_job", [1, "auto"])
def test_an_imagenet_sized_state_trains_on_default_driver_memory(spark, small_df,
                                                                 rounds_per_job):
    model = lenet(30000, roundsPerJob=rounds_per_job).fit(small_df)
    assert model.weights["ip1"][0].shape == (30000, 800)
    assert np.isfinite(model.history["loss"]).all() and len(model.history) == 2
