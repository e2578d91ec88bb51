"""Whole stock nets exported to ONNX: onnxruntime's CPU output equals pycaffe's forward within
max |diff| <= 1e-4 x max(1, max |caffe|), on random inputs and on real pictures (Fashion-MNIST,
upscaled to the ImageNet nets' 227x227 / 224x224 RGB), for LeNet, cifar10_quick, CaffeNet,
AlexNet, GoogLeNet (the model zoo's train_val nets, deploy-derived) and a residual net with
BatchNorm/Scale."""
import os

import numpy as np
import pytest

from sparknet_ml import net as netlib
from sparknet_ml import zoo
from sparknet_ml.data import fashion_mnist
from sparknet_ml.data.images import resize_bilinear
from sparknet_ml.engine.solver import prototxt_file
from sparknet_ml.net.onnx_export import to_onnx

from .conftest import caffe

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BN_NET = """name: "bn_residual"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "relu2" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

NETS = {  # name: (deploy net text, one example's shape, the output blob)
    "lenet": ("lenet_train", (1, 28, 28)),
    "cifar10_quick": ("cifar10_quick_train", (3, 32, 32)),
    "caffenet": ("bvlc_reference_caffenet_train_val", (3, 227, 227)),
    "alexnet": ("bvlc_alexnet_train_val", (3, 227, 227)),
    "googlenet": ("bvlc_googlenet_train_val", (3, 224, 224)),
}


def deploy(name):
    if name == "bn_residual":
        return BN_NET, (3, 32, 32), "prob"
    source, shape = NETS[name]
    net = netlib.deploy_net(zoo.prototxt(source), shape, 2)
    return netlib.net_to_text(net.net), shape, net.output_blob


def real_pictures(shape, n=2):
    """``n`` Fashion-MNIST test pictures as ``shape`` (C, H, W) pixels, 0..255."""
    if not os.path.isdir(fashion_mnist.DEFAULT_DIR):
        pytest.skip("Fashion-MNIST is not installed (make setup installs it)")
    images, _ = fashion_mnist.load("test")
    channels, height, width = shape
    out = np.empty((n, *shape), np.float32)
    for i in range(n):
        big = resize_bilinear(images[i][:, :, None], height, width)
        out[i] = np.repeat(big.transpose(2, 0, 1), channels, axis=0)
    return out


@pytest.mark.parametrize("name", [*NETS, "bn_residual"])
@pytest.mark.parametrize("inputs", ["random", "real"])
def test_stock_net_matches_caffe(name, inputs):
    text, shape, output = deploy(name)
    caffe.set_mode_cpu()
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    rng = np.random.default_rng(0)
    weights = {}
    for layer, blobs in net.params.items():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape) * 0.05
        if layer.startswith("bn"):  # mean, variance > 0, scale factor
            blobs[1].data[...] = np.abs(blobs[1].data) + 0.5
            blobs[2].data[...] = 0.9
        weights[layer] = [b.data.copy() for b in blobs]
    model = to_onnx(netlib.parse_net(text), weights,
                    {k: b.data.shape for k, b in net.blobs.items()}, outputs=[output])
    x = (rng.standard_normal((2, *shape)).astype(np.float32) if inputs == "random"
         else real_pictures(shape) / np.float32(255) - np.float32(0.5))
    net.blobs["data"].data[...] = x
    net.forward()
    want = net.blobs[output].data
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"data": x})
    assert got.shape == want.shape
    bound = 1e-4 * max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= bound
    if name != "bn_residual":
        assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
