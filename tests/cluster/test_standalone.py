"""The Fashion-MNIST app spark-submitted to a Spark standalone cluster (a master and two
workers started from the pip-installed pyspark by the ``standalone_cluster`` fixture), and its
saved Caffe model loaded back with plain pycaffe."""
import json
import os
import re
import sys

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(REPO, "sparknet_ml", "apps", "fashion_mnist.py")
TEST_ROWS = 1000


def test_fashion_mnist_app_trains_on_the_standalone_cluster(standalone_cluster, tmp_path):
    out = tmp_path / "model"
    done = standalone_cluster.submit(
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", "spark.executorEnv.OPENBLAS_NUM_THREADS=1",
        APP, "--workers", "2", "--sync-interval", "20", "--rounds", "8",
        "--train-rows", "6000", "--test-rows", str(TEST_ROWS), "--out", str(out),
        cwd=str(tmp_path), timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    line = done.stdout.strip().splitlines()[-1]
    print("\n" + line)
    assert f"({standalone_cluster.master_url}, 2 workers, tau=20, 8 rounds, batch 64)" in line
    accuracy = float(re.search(r"test accuracy ([0-9.]+);", line).group(1))
    assert accuracy > 0.6, line  # chance is 0.1

    # The master ran it, on both workers' cores.
    (app,) = [a for a in standalone_cluster.state()["completedapps"]
              if a["name"] == "sparknet_ml fashion-mnist"]
    assert app["state"] == "FINISHED" and app["cores"] == 2

    # The saved Caffe files score the same test images the same way in plain pycaffe.
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load("test")
    images, labels = images[:TEST_ROWS], labels[:TEST_ROWS]
    with open(out / "model" / "model.json") as f:
        meta = json.load(f)  # deploy.prototxt has an Input layer: the input scaling is ours
    assert meta["mean"] == []
    caffe.set_mode_cpu()
    net = caffe.Net(str(out / "caffe" / "deploy.prototxt"), caffe.TEST,
                    weights=str(out / "caffe" / "weights.caffemodel"))
    net.blobs["data"].reshape(TEST_ROWS, 1, 28, 28)
    net.reshape()
    net.blobs["data"].data[...] = images[:, None].astype(np.float32) * meta["scale"]
    logits = net.forward()["ip2"]
    assert logits.shape == (TEST_ROWS, 10)
    pycaffe_accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert abs(pycaffe_accuracy - accuracy) <= 1e-3, (pycaffe_accuracy, accuracy)
