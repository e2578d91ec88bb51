"""The pycaffe that `make setup` built: importable, trains on real data, protobuf-compatible."""
import math
import os
import subprocess
import sysconfig

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from sparknet_ml import zoo
from sparknet_ml.data import fashion_mnist
from sparknet_ml.engine.solver import make_solver, net_with_batch, set_device

from .conftest import build_info, caffe_devices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_caffe_is_the_installed_wheel():
    installed = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    assert os.path.dirname(os.path.dirname(os.path.realpath(caffe.__file__))) in installed
    info = build_info()
    assert info["source_sha256"] == "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"
    assert caffe.__version__ == info["caffe_version"] == "9.0.2"
    assert "pycaffe-lazy-optional-imports" in info["patches"]


@pytest.mark.skipif(not os.path.exists(os.path.join(REPO, ".venv/bin/python")),
                    reason="no .venv here (the GPU machine runs without one)")
def test_venv_python_imports_caffe_without_optional_packages():
    probe = ("import sys, caffe; caffe.set_mode_cpu();"
             "print(sorted(m for m in ('skimage', 'scipy') if m in sys.modules))")
    done = subprocess.run([os.path.join(REPO, ".venv/bin/python"), "-c", probe],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("gpu", caffe_devices())
def test_lenet_from_prototxt_text_learns_fashion_mnist(gpu):
    images, labels = fashion_mnist.load("train")
    set_device(gpu)
    caffe.set_random_seed(7)
    solver = make_solver(zoo.prototxt("lenet_train"), zoo.prototxt("lenet_solver"), 64)
    losses = []
    for i in range(20):
        batch = slice(64 * i, 64 * (i + 1))
        solver.net.blobs["data"].data[...] = images[batch, None] / np.float32(255)
        solver.net.blobs["label"].data[...] = labels[batch]
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert solver.iter == 20
    assert all(math.isfinite(loss) for loss in losses)
    assert abs(np.mean(losses[:3]) - math.log(10)) < 0.3  # starts near chance
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    set_device(None)


def test_net_parameter_round_trips_through_text_and_binary():
    text = zoo.prototxt("lenet_train")
    param = text_format.Parse(text, caffe_pb2.NetParameter())
    assert [layer.name for layer in param.layer][:3] == ["data", "conv1", "pool1"]
    again = text_format.Parse(text_format.MessageToString(param), caffe_pb2.NetParameter())
    assert again == param
    binary = caffe_pb2.NetParameter.FromString(param.SerializeToString())
    assert binary == param
    assert binary.layer[1].convolution_param.num_output == 20


def test_caffemodel_written_by_caffe_reads_back_in_python_and_caffe(tmp_path):
    set_device(None)
    caffe.set_random_seed(3)
    deploy = tmp_path / "lenet.prototxt"
    deploy.write_text(text_format.MessageToString(net_with_batch(zoo.prototxt("lenet_train"), 4)))
    net = caffe.Net(str(deploy), caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    saved = caffe_pb2.NetParameter.FromString((tmp_path / "w.caffemodel").read_bytes())
    conv1 = next(layer for layer in saved.layer if layer.name == "conv1")
    assert list(conv1.blobs[0].shape.dim) == [20, 1, 5, 5]
    np.testing.assert_array_equal(np.array(conv1.blobs[0].data, np.float32).reshape(20, 1, 5, 5),
                                  net.params["conv1"][0].data)
    loaded = caffe.Net(str(deploy), caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    for name, blobs in net.params.items():
        for mine, theirs in zip(blobs, loaded.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


def test_tf32_switch_is_off_by_default_and_round_trips():
    """Patch tf32-switch: TF32 is opt-in, per thread, in CPU and CUDA builds alike."""
    assert not caffe.tf32()
    caffe.set_tf32(True)
    try:
        assert caffe.tf32()
    finally:
        caffe.set_tf32(False)
    assert not caffe.tf32()
