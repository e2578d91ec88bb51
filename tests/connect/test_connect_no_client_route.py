"""A fit over Spark Connect that opens no connection from the executors to the client
(``spark.sparknet.stateServer=false``, for a client behind NAT): a CaffeNet-sized state (LeNet
with ip1 of 75,300 outputs, 61.1M weights: 466 MiB with the solver's history, CaffeNet's 465
MiB) goes to the executors as a shipped artifact and comes back in the barrier job's rows, to
the classic fit's weights bit for bit. The client's state server is never opened: opening it fails the test.

The classic baseline is computed before the module's Connect session opens."""
import numpy as np
import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")

from sparknet_ml import SparkNetEstimator, zoo  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402


def rows(spark):
    images, labels = fashion_mnist.load("train")
    data = [(bytearray(images[i].tobytes()), float(labels[i])) for i in range(64)]
    return spark.createDataFrame(data, "features binary, label double").repartition(2)


def big_lenet():
    net = zoo.prototxt("lenet_train_test").replace("num_output: 500", "num_output: 75300")
    return SparkNetEstimator(netPrototxt=net, solverPrototxt=zoo.prototxt("lenet_solver"),
                             inputShape=[1, 28, 28], batchSize=4, syncInterval=2, maxIter=2,
                             seed=5, numWorkers=2, showProgress=False)


@pytest.fixture(scope="module")
def classic(spark):
    return big_lenet().fit(rows(spark).cache()).weights


def test_a_466_mib_state_goes_through_spark_to_the_classic_weights(classic, remote,
                                                                   monkeypatch):
    from sparknet_ml.driver import fit
    from sparknet_ml.engine.state import SolverState, state_size

    def no_server(*args, **kwargs):
        raise AssertionError("the client's state server was opened")
    monkeypatch.setattr(fit, "StateServer", no_server)
    remote.conf.set("spark.sparknet.stateServer", "false")
    try:
        model = big_lenet().fit(rows(remote))
    finally:
        remote.conf.unset("spark.sparknet.stateServer")
    weights = [b for name in model.weights for b in model.weights[name]]
    assert state_size(SolverState(weights, weights)) * 4 > 465 * 2 ** 20
    assert model.weights.keys() == classic.keys()
    for name in classic:
        for mine, theirs in zip(model.weights[name], classic[name]):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
