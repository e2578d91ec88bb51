"""The public model-zoo deploy files (tests/zoo_nets/SOURCES.md; V1 files included) exported to
ONNX as ``sparknet-ml export --net`` does (deploy_net at the file's own input shape, then
onnx_model), each matching pycaffe's forward within 1e-4 x max|output| with equal argmax on two
real pictures.

The weights are random but scaled so that the output depends on the input: each learnable
layer's output is brought to unit spread on the pictures, BatchNorm stores the pictures' own
statistics (raw random weights give every picture the same near-uniform output, and a broken
export would pass)."""
import warnings

import numpy as np
import pytest

from sparknet_ml import net as netlib
from sparknet_ml.engine.solver import prototxt_file
from sparknet_ml.persistence.onnx_file import onnx_model, serialized

from .conftest import caffe
from .test_onnx_nets import real_pictures
from .test_upgrade import zoo_file

ort = pytest.importorskip("onnxruntime")

DEPLOY_FILES = ["vgg16_v1", "vgg19_v1", "caffenet_v1", "alexnet_v1", "googlenet_v1",
                "googlenet", "resnet50", "resnet101", "squeezenet10", "squeezenet11",
                "mobilenet_v1", "mobilenet_v2", "densenet121", "inception_v3"]
SCALED = ("Convolution", "InnerProduct", "Deconvolution")


def scale_weights(net, x: np.ndarray, rng) -> dict:
    """Random weights for ``net``, layer by layer in forward order on the inputs ``x``: a
    convolution's or inner product's output scaled to unit standard deviation, BatchNorm
    holding its input's per-channel mean and variance, Scale near 1 (gamma) and 0 (beta)."""
    net.blobs["data"].data[...] = x
    for i, (name, layer) in enumerate(zip(net._layer_names, net.layers)):
        blobs = layer.blobs
        if layer.type == "BatchNorm":  # before the forward: Caffe's BatchNorm may run in place
            bottom = net.blobs[net.bottom_names[name][0]].data
            axes = (0, *range(2, bottom.ndim))
            blobs[0].data[...] = bottom.mean(axis=axes)
            blobs[1].data[...] = bottom.var(axis=axes)
            blobs[2].data[...] = 1
        elif layer.type == "Scale":
            blobs[0].data[...] = 1 + 0.1 * rng.standard_normal(blobs[0].data.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = 0.1 * rng.standard_normal(blobs[1].data.shape)
        else:
            for blob in blobs:
                blob.data[...] = rng.standard_normal(blob.data.shape)
        net._forward(i, i)
        if layer.type in SCALED:
            blobs[0].data[...] /= max(float(net.blobs[net.top_names[name][0]].data.std()), 1e-6)
            if len(blobs) > 1:
                blobs[1].data[...] *= 0.1
            net._forward(i, i)
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_zoo_deploy_file_exports_and_matches_caffe(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", netlib.UpgradedFormatWarning)
        shape = netlib.infer_input_shape(zoo_file(name))
        deploy = netlib.deploy_net(zoo_file(name), shape, 2)
    text = netlib.net_to_text(deploy.net)
    caffe.set_mode_cpu()
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    x = real_pictures(shape) / np.float32(255) - np.float32(0.5)
    weights = scale_weights(net, x, np.random.default_rng(0))
    net.forward()
    want = net.blobs[deploy.output_blob].data.reshape(2, -1)
    bound = 1e-4 * float(np.abs(want).max())
    assert float(np.abs(want[0] - want[1]).max()) > 100 * bound  # the pictures tell apart
    session = ort.InferenceSession(serialized(onnx_model(text, weights, [deploy.output_blob])),
                                   providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"data": x})
    got = got.reshape(2, -1)
    assert float(np.abs(got - want).max()) <= bound
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
