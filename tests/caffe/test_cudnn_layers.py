"""Caffe's cuDNN layers, ported to cuDNN 9 (patches ``cudnn9``, ``cudnn-conv-one-call``,
``cudnn-pooling-caffe-shapes``),
against Caffe's own CPU layers on random inputs: forward output, gradient of the input and of
the parameters. Runs only with a cuDNN build and a visible GPU (the GPU machine).

Tolerance: the largest absolute difference is at most ``rtol * max(1, max |CPU value|)``, with
rtol = 1e-4 in IEEE fp32 and 1e-2 with TF32 (10-bit mantissa products) for the convolutions.
"""
import numpy as np
import pytest
from google.protobuf import text_format

from .conftest import build_info, caffe

pytestmark = pytest.mark.skipif(not build_info().get("cudnn"),
                                reason="this pycaffe was built without cuDNN")

FP32_RTOL, TF32_RTOL = 1e-4, 1e-2

# (id, layer prototxt without name/bottom/top, the engine field's message, input shape)
LAYERS = [
    ("conv", 'type: "Convolution" convolution_param { num_output: 8 kernel_size: 3 pad: 1 '
             'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" } }',
     "convolution_param", (4, 6, 9, 9)),
    ("conv-stride-group", 'type: "Convolution" convolution_param { num_output: 8 kernel_h: 5 '
                          'kernel_w: 3 stride: 2 pad_h: 2 group: 2 weight_filler { type: '
                          '"gaussian" std: 0.1 } bias_filler { type: "gaussian" } }',
     "convolution_param", (3, 6, 11, 10)),
    ("conv-batch256", 'type: "Convolution" convolution_param { num_output: 32 kernel_size: 5 '
                      'pad: 2 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: '
                      '"constant" value: 0.1 } }', "convolution_param", (256, 3, 32, 32)),
    ("conv-depthwise", 'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 '
                       'pad: 1 group: 6 weight_filler { type: "gaussian" std: 0.1 } '
                       'bias_filler { type: "gaussian" } }', "convolution_param", (8, 6, 9, 9)),
    ("conv-group4-batch64", 'type: "Convolution" convolution_param { num_output: 32 '
                            'kernel_size: 3 pad: 1 group: 4 weight_filler { type: "gaussian" '
                            'std: 0.05 } bias_filler { type: "constant" value: 0.1 } }',
     "convolution_param", (64, 16, 13, 13)),
    ("avepool-cudnn-shape", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 2 }',
     "pooling_param", (4, 5, 8, 8)),
    ("avepool-caffe-shape", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }',
     "pooling_param", (4, 5, 16, 16)),
    ("avepool-pad", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 }',
     "pooling_param", (2, 3, 7, 7)),
    ("relu", 'type: "ReLU"', "relu_param", (4, 5, 6, 7)),
    ("leaky-relu", 'type: "ReLU" relu_param { negative_slope: 0.1 }', "relu_param", (4, 5, 6, 7)),
    ("sigmoid", 'type: "Sigmoid"', "sigmoid_param", (4, 5, 6, 7)),
    ("tanh", 'type: "TanH"', "tanh_param", (4, 5, 6, 7)),
    ("softmax", 'type: "Softmax"', "softmax_param", (8, 10, 1, 1)),
    ("softmax-spatial", 'type: "Softmax"', "softmax_param", (2, 7, 4, 5)),
    ("lrn-across", 'type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
     "lrn_param", (2, 16, 6, 6)),
    ("lrn-within", 'type: "LRN" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 '
                   'norm_region: WITHIN_CHANNEL }', "lrn_param", (2, 4, 6, 6)),
]


def one_layer_net(layer: str, engine_field: str, engine: str, shape) -> str:
    """A net of an Input and one layer with the given engine, which back-propagates to data."""
    net = text_format.Parse(
        f'force_backward: true layer {{ name: "data" type: "Input" top: "data" '
        f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }} '
        f'layer {{ name: "probe" bottom: "data" top: "out" {layer} }}',
        caffe.proto.caffe_pb2.NetParameter())
    message = getattr(net.layer[1], engine_field)
    message.engine = type(message).Engine.Value(engine)
    return text_format.MessageToString(net)


def make_net(text: str, tmp_path, name: str):
    path = tmp_path / f"{name}.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TRAIN)


def run(net, x, top_diff, gpu: bool):
    """Forward ``x``, backward ``top_diff``; return (output, input gradient, parameter gradients)."""
    if gpu:
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net.blobs["data"].data[...] = x
    net.forward()
    out = net.blobs["out"].data.copy()
    net.clear_param_diffs()
    net.blobs["out"].diff[...] = top_diff
    net.backward()
    return (out, net.blobs["data"].diff.copy(),
            [blob.diff.copy() for blob in net.params.get("probe", [])])


def assert_close(gpu, cpu, rtol, what):
    scale = max(1.0, float(np.abs(cpu).max()))
    error = float(np.abs(gpu - cpu).max())
    assert error <= rtol * scale, f"{what}: max |cuDNN - CPU| = {error:.3g} > {rtol} x {scale:.3g}"


@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
@pytest.mark.parametrize("layer_id, layer, engine_field, shape", LAYERS,
                         ids=[case[0] for case in LAYERS])
def test_cudnn_layer_matches_caffe_cpu(layer_id, layer, engine_field, shape, tf32, tmp_path):
    if tf32 and engine_field != "convolution_param":
        pytest.skip("TF32 changes only convolutions and cuBLAS")
    caffe.set_device(0)
    caffe.set_tf32(tf32)
    try:
        caffe.set_mode_cpu()
        cpu_net = make_net(one_layer_net(layer, engine_field, "CAFFE", shape), tmp_path, "cpu")
        caffe.set_mode_gpu()
        gpu_net = make_net(one_layer_net(layer, engine_field, "CUDNN", shape), tmp_path, "gpu")
        for gpu_blob, cpu_blob in zip(gpu_net.params.get("probe", []),
                                      cpu_net.params.get("probe", [])):
            gpu_blob.data[...] = cpu_blob.data
        rng = np.random.default_rng(7)
        x = rng.standard_normal(shape).astype(np.float32)
        top_diff = rng.standard_normal(cpu_net.blobs["out"].data.shape).astype(np.float32)
        cpu = run(cpu_net, x, top_diff, gpu=False)
        gpu = run(gpu_net, x, top_diff, gpu=True)
    finally:
        caffe.set_tf32(False)
        caffe.set_mode_cpu()
    rtol = TF32_RTOL if tf32 else FP32_RTOL
    assert gpu[0].shape == cpu[0].shape
    assert np.abs(cpu[0]).max() > 0 and np.abs(cpu[1]).max() > 0  # the check compares something
    assert_close(gpu[0], cpu[0], rtol, f"{layer_id} forward")
    assert_close(gpu[1], cpu[1], rtol, f"{layer_id} input gradient")
    for k, (g, c) in enumerate(zip(gpu[2], cpu[2])):
        assert_close(g, c, rtol, f"{layer_id} parameter {k} gradient")



TWO_CONVS = """force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 4 dim: 12 dim: 12 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 8
  kernel_size: 5 pad: 2 group: 2 engine: ENGINE weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "b" type: "Convolution" bottom: "a" top: "out" convolution_param { num_output: 6
  kernel_size: 3 stride: 2 engine: ENGINE weight_filler { type: "gaussian" std: 0.1 } } }
"""


def test_convolutions_sharing_one_workspace_follow_a_reshape(tmp_path):
    """cudnn-conv-one-call: every convolution of a thread uses one workspace, grown as a new
    input shape's algorithms need; a net reshaped to another batch still matches the CPU."""
    caffe.set_device(0)
    try:
        caffe.set_mode_cpu()
        cpu_net = make_net(TWO_CONVS.replace("ENGINE", "CAFFE"), tmp_path, "cpu")
        caffe.set_mode_gpu()
        gpu_net = make_net(TWO_CONVS.replace("ENGINE", "CUDNN"), tmp_path, "gpu")
        for name in ("a", "b"):
            for g, c in zip(gpu_net.params[name], cpu_net.params[name]):
                g.data[...] = c.data
        rng = np.random.default_rng(11)
        for batch in (4, 32, 4):
            for net in (cpu_net, gpu_net):
                net.blobs["data"].reshape(batch, 4, 12, 12)
                net.reshape()
            x = rng.standard_normal((batch, 4, 12, 12)).astype(np.float32)
            top_diff = rng.standard_normal(cpu_net.blobs["out"].data.shape).astype(np.float32)
            cpu = run(cpu_net, x, top_diff, gpu=False)
            gpu = run(gpu_net, x, top_diff, gpu=True)
            assert_close(gpu[0], cpu[0], FP32_RTOL, f"batch {batch} forward")
            assert_close(gpu[1], cpu[1], FP32_RTOL, f"batch {batch} input gradient")
    finally:
        caffe.set_mode_cpu()
