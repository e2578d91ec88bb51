"""Every layer type sparknet_ml.net.onnx_export writes gives, under onnxruntime on the CPU,
pycaffe's CPU forward to within ``1e-4 * max(1, max|caffe|)``: one small Input -> layer(s) net
per case with seeded random weights and inputs, over the settings where the two formats
differ (grouped, dilated and rectangular convolutions, pooling's rounded-up last window and
its divisor, LRN's two regions, BatchNorm's scale factor, SPP's per-level windows, ArgMax's
tie order, where MVN and Normalize add eps, Resize's zero past the edge, in-place layers, the
data transform, ...). Each model passes ``onnx.checker`` and runs at batch sizes other than the
one Caffe's net was built with (the batch axis stays free; not for Unsqueeze, whose top shape
Caffe fixes at setup). Settings with no ONNX form raise
NetSpecError naming the layer."""
import os

import numpy as np
import pytest

from .conftest import caffe

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from sparknet_ml.engine.solver import prototxt_file  # noqa: E402
from sparknet_ml.engine.transform import Transform  # noqa: E402
from sparknet_ml.net import ALLOWED_LAYER_TYPES, NetSpecError  # noqa: E402
from sparknet_ml.net.onnx_export import BATCH, EXPORTED, to_onnx  # noqa: E402


# ---- nets as prototxt text ---------------------------------------------------------------
def inp(name, *shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


def lay(name, kind, bottom, top=None, param=""):
    bottoms = [bottom] if isinstance(bottom, str) else bottom
    tops = top if isinstance(top, list) else [top or name]
    links = " ".join([f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops])
    return f'layer {{ name: "{name}" type: "{kind}" {links} {param} }}\n'


DATA = inp("data", 2, 3, 6, 7)


def one(kind, param="", data=DATA):
    """``data`` -> one layer ``kind`` -> ``out``."""
    return data + lay("out", kind, "data", "out", param)


# ---- inputs ------------------------------------------------------------------------------
def normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def positive(rng, shape):
    return rng.uniform(0.2, 3.0, shape).astype(np.float32)


def wide(rng, shape):
    """|x| up to 50, with +-50 themselves (BNLL's exp overflows without its rewrite)."""
    x = (rng.standard_normal(shape) * 15).astype(np.float32)
    flat = x.reshape(-1)
    flat[:4] = [50.0, -50.0, 0.0, 30.0]
    return x


def times(k):
    return lambda rng, shape: normal(rng, shape) * np.float32(k)


def indices(k):
    """Whole numbers in [0, k) as floats (Embed's input)."""
    return lambda rng, shape: rng.integers(0, k, shape).astype(np.float32)


def ties(rng, shape):
    """Whole numbers in [-2, 2]: many equal values (ArgMax's tie order)."""
    return rng.integers(-2, 3, shape).astype(np.float32)


def pixels(rng, shape):
    return rng.integers(0, 256, shape).astype(np.float32)


# ---- the comparison ----------------------------------------------------------------------
def assert_close(got, want, what):
    want = np.asarray(want, np.float32)
    assert got.shape == want.shape, f"{what}: ONNX shape {got.shape}, Caffe {want.shape}"
    bound = 1e-4 * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= bound, f"{what}: max|onnx - caffe| = {err:.3g} > {bound:.3g}"


def fill(net, rng, params):
    """Seeded random learnable blobs, or ``params[layer]``; Caffe's order and shapes."""
    weights = {}
    for name, blobs in net.params.items():
        given = params.get(name)
        for i, blob in enumerate(blobs):
            blob.data[...] = (given[i] if given is not None
                              else rng.standard_normal(blob.data.shape) * 0.5)
        weights[name] = [b.data.copy() for b in blobs]
    return weights


def check(text, *, outputs=None, params=None, feed=normal, transform=None, stored=None,
          batches=(3, 1), seed=0, uint8=False, banded_lrn=False):
    """Build ``text`` in pycaffe (TEST), export it, and compare every output at the batch
    size of the prototxt and at each of ``batches`` (Caffe's net reshaped, the same model);
    ``uint8``: the model takes the stored examples as uint8 pixels; ``banded_lrn``: the
    scoring model's LRN."""
    rng = np.random.default_rng(seed)
    caffe.set_mode_cpu()
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    weights = fill(net, rng, params or {})
    shapes = {k: b.data.shape for k, b in net.blobs.items()}
    model = to_onnx(text_format.Parse(text, caffe_pb2.NetParameter()), weights, shapes,
                    outputs=outputs, transform=transform, stored_shape=stored, pixels=uint8,
                    banded_lrn=banded_lrn)
    onnx.checker.check_model(model, full_check=True)
    assert not banded_lrn or "LRN" not in {node.op_type for node in model.graph.node}
    # Inputs take their blobs' names; outputs too, but for an input blob a layer rewrote in
    # place (its last version is then "<blob>@<layer>").
    assert [i.name for i in model.graph.input] == list(net.inputs)
    names = [o.name for o in model.graph.output]
    wanted = list(outputs or net.outputs)
    assert len(names) == len(wanted)
    for name, blob in zip(names, wanted):
        assert name == blob or (blob in net.inputs and name.startswith(f"{blob}@")), (name, blob)
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == BATCH
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]
    assert len(feeds) == len(net.inputs)
    for batch in (shapes[net.inputs[0]][0], *batches):
        given = {}
        for blob, feed_name in zip(net.inputs, feeds):
            shape = (batch, *shapes[blob][1:])
            if transform is not None and blob == net.inputs[0]:
                stored_x = pixels(rng, (batch, *stored))
                given[feed_name] = stored_x.astype(np.uint8) if uint8 else stored_x
                x = transform.apply(stored_x)
            else:
                x = feed(rng, shape)
                given[feed_name] = x
            net.blobs[blob].reshape(*shape)
            net.blobs[blob].data[...] = x
        net.reshape()
        net.forward()
        got = session.run(names, given)
        for blob, value in zip(wanted, got):
            assert_close(value, net.blobs[blob].data, f"{blob!r} at batch {batch}")
    return model


# ---- the cases ---------------------------------------------------------------------------
CONV = "convolution_param { %s }"
POOL = "pooling_param { %s }"
BN_BLOBS = {  # mean, variance > 0, scale factor
    f: [np.array([0.3, -1.0, 2.0], np.float32) * (f or 1),
        np.array([0.5, 2.0, 0.1], np.float32) * (f or 1), np.array([f], np.float32)]
    for f in (0.5, 2.0, 0.0)}

CASES = [
    # Convolution / Deconvolution
    pytest.param(one("Convolution", CONV % "num_output: 6 kernel_size: 3 group: 3 dilation: 2 "
                     "pad: 1", inp("data", 2, 3, 9, 9)), {}, id="conv-group3-dilation2"),
    pytest.param(one("Convolution", CONV % "num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 "
                     "pad_w: 0 stride_h: 2 stride_w: 1 bias_term: false"), {},
                 id="conv-hw-nobias"),
    pytest.param(one("Convolution", CONV % "num_output: 5 kernel_size: 1"), {}, id="conv-1x1"),
    pytest.param(one("Deconvolution", CONV % "num_output: 4 kernel_size: 3 stride: 2 pad: 1 "
                     "group: 2", inp("data", 2, 4, 5, 5)), {}, id="deconv-stride2-pad-group2"),
    pytest.param(one("Deconvolution", CONV % "num_output: 3 kernel_size: 4 stride: 2 pad: 1 "
                     "bias_term: false"), {}, id="deconv-k4-nobias"),
    pytest.param(one("Convolution", CONV % "num_output: 4 kernel_size: 3 kernel_size: 1 "
                     "stride: 1 stride: 2 pad: 1 pad: 0 dilation: 2 dilation: 1"), {},
                 id="conv-per-axis-repeated"),
    pytest.param(one("Convolution", CONV % "num_output: 4 kernel_size: 3 stride: 2 pad: 1",
                     inp("data", 2, 3, 10)), {}, id="conv-1d"),
    pytest.param(one("Convolution", CONV % "num_output: 4 kernel_size: 3 stride: 2 pad: 1",
                     inp("data", 2, 2, 5, 6, 7)), {}, id="conv-3d"),
    pytest.param(one("Deconvolution", CONV % "num_output: 4 kernel_h: 3 kernel_w: 2 "
                     "stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0"), {}, id="deconv-hw"),
    pytest.param(one("Deconvolution", CONV % "num_output: 4 kernel_size: 3 stride: 2 "
                     "dilation: 2 pad: 1"), {}, id="deconv-dilation2"),
    # InnerProduct
    pytest.param(one("InnerProduct", "inner_product_param { num_output: 7 }"), {},
                 id="ip-axis1"),
    pytest.param(one("InnerProduct", "inner_product_param { num_output: 5 axis: 2 }"), {},
                 id="ip-axis2-3d"),
    pytest.param(one("InnerProduct", "inner_product_param { num_output: 4 transpose: true "
                     "bias_term: false }"), {}, id="ip-transpose-nobias"),
    pytest.param(one("InnerProduct", "inner_product_param { num_output: 4 axis: -1 "
                     "transpose: true }"), {}, id="ip-axis-last-transpose"),
    pytest.param(one("InnerProduct", "inner_product_param { num_output: 4 }",
                     inp("data", 2, 9)), {}, id="ip-2d"),
    # Embed
    pytest.param(one("Embed", "embed_param { input_dim: 7 num_output: 4 }", inp("data", 2, 5)),
                 {"feed": indices(7)}, id="embed"),
    pytest.param(one("Embed", "embed_param { input_dim: 5 num_output: 3 bias_term: false }",
                     inp("data", 2, 3, 4)), {"feed": indices(5)}, id="embed-3d-nobias"),
    # Pooling (Caffe rounds up by default; the last window may overflow)
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} kernel_size: {k} stride: 2",
                       inp("data", 2, 3, size, size)), {},
                   id=f"{pool.lower()}-k{k}s2-{size}x{size}")
      for pool in ("MAX", "AVE") for k, size in ((3, 6), (3, 7), (2, 7))],
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} kernel_size: 3 stride: 2 pad: 1",
                       inp("data", 2, 3, size, size)), {}, id=f"{pool.lower()}-pad1-{size}x{size}")
      for pool in ("MAX", "AVE") for size in (6, 7)],
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} kernel_h: 3 kernel_w: 2 pad_h: 1 "
                       "pad_w: 0 stride_h: 2 stride_w: 1", inp("data", 2, 3, 7, 6)), {},
                   id=f"{pool.lower()}-hw") for pool in ("MAX", "AVE")],
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} kernel_size: 3 stride: 2 pad: 1 "
                       "ceil_mode: false", inp("data", 2, 3, 6, 6)), {},
                   id=f"{pool.lower()}-floor") for pool in ("MAX", "AVE")],
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} kernel_size: 2 stride: 2 "
                       "ceil_mode: false", inp("data", 2, 3, 7, 7)), {},
                   id=f"{pool.lower()}-floor-nopad") for pool in ("MAX", "AVE")],
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} kernel_size: 3 stride: 3 pad: 2",
                       inp("data", 2, 3, 6, 8)), {}, id=f"{pool.lower()}-pad2-stride3")
      for pool in ("MAX", "AVE")],
    pytest.param(one("Pooling", POOL % "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 3 "
                     "stride_w: 2 pad_h: 1 pad_w: 2", inp("data", 2, 3, 8, 9)), {},
                 id="ave-hw-pad-overflow"),
    pytest.param(one("Pooling", POOL % "pool: AVE kernel_size: 3 pad: 1"), {},
                 id="ave-stride1-pad1"),
    *[pytest.param(one("Pooling", POOL % f"pool: {pool} global_pooling: true"), {},
                   id=f"{pool.lower()}-global") for pool in ("MAX", "AVE")],
    # Im2col
    pytest.param(one("Im2col", CONV % "kernel_size: 3"), {}, id="im2col"),
    pytest.param(one("Im2col", CONV % "kernel_h: 3 kernel_w: 2 pad_h: 1 stride_h: 2 stride_w: 1 "
                     "dilation: 2"), {}, id="im2col-hw-pad-stride-dilation"),
    pytest.param(one("Im2col", CONV % "kernel_size: 2 stride: 2", inp("data", 2, 3, 7)), {},
                 id="im2col-1d"),
    # SPP: Caffe's per-level kernel, stride and pad, each level flattened
    *[pytest.param(one("SPP", f"spp_param {{ pyramid_height: 3 pool: {pool} }}",
                       inp("data", 2, 3, size, size + 1)), {},
                   id=f"spp-{pool.lower()}3-{size}x{size + 1}")
      for pool in ("MAX", "AVE") for size in (6, 7)],
    pytest.param(one("SPP", "spp_param { pyramid_height: 2 pool: AVE }",
                     inp("data", 2, 3, 5, 5)), {}, id="spp-ave2-5x5"),
    pytest.param(one("SPP", "spp_param { pyramid_height: 1 }"), {}, id="spp-one-level"),
    # PixelShuffle, Upsample, BilinearInterpolate, Resize, Pad
    pytest.param(one("PixelShuffle", "pixelshuffle_param { upscale_factor: 2 }",
                     inp("data", 2, 8, 3, 4)), {}, id="pixelshuffle2"),
    pytest.param(one("PixelShuffle", "pixelshuffle_param { upscale_factor: 3 }",
                     inp("data", 2, 18, 2, 3)), {}, id="pixelshuffle3"),
    pytest.param(one("Upsample", "upsample_param { scale: 2 }"), {}, id="upsample2"),
    pytest.param(one("Upsample", "upsample_param { scale: 3 dims_num: 3 }",
                     inp("data", 2, 3, 5)), {}, id="upsample3-ncw"),
    *[pytest.param(one("BilinearInterpolate", f"bilinear_interpolate_param {{ {size} "
                       f"align_corners: {aligned} }}"), {}, id=f"bilinear-{name}-{aligned}")
      for aligned in ("true", "false")
      for name, size in (("up", "dst_h: 9 dst_w: 11"), ("down", "dst_h: 4 dst_w: 5"),
                         ("dst-h", "dst_h: 10"), ("scale", "scale_factor: 1.5"))],
    pytest.param(one("Resize", "resize_param { height: 9 width: 11 }"), {}, id="resize-up"),
    pytest.param(one("Resize", "resize_param { height: 4 width: 5 }"), {}, id="resize-down"),
    pytest.param(one("Resize", "resize_param { height: 12 width: 14 }"), {}, id="resize-2x"),
    pytest.param(one("Resize", "resize_param { is_pyramid_test: true out_height_scale: 1.5 "
                     "out_width_scale: 0.6 }"), {}, id="resize-scales"),
    pytest.param(one("Pad", "pad_param { pad_u: 1 pad_d: 2 pad_l: 3 pad_r: 0 pad_value: 1.5 }"),
                 {}, id="pad-constant"),
    pytest.param(one("Pad", "pad_param { pad_type: REPLICATE pad_u: 2 pad_d: 1 pad_l: 1 "
                     "pad_r: 3 }"), {}, id="pad-replicate"),
    pytest.param(one("Pad", "pad_param { pad_type: REFLECT pad_u: 2 pad_d: 5 pad_l: 6 "
                     "pad_r: 1 }"), {}, id="pad-reflect"),
    pytest.param(one("Pad", "pad_param { pad_type: REFLECT pad_u: -1 pad_d: -2 pad_l: -3 "
                     "pad_r: -1 }"), {}, id="pad-all-negative-crops"),
    # LRN
    pytest.param(one("LRN", "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 }",
                     inp("data", 2, 7, 4, 5)), {"feed": times(3)}, id="lrn-across"),
    pytest.param(one("LRN", "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 }",
                     inp("data", 2, 7, 4, 5)), {"feed": times(3), "banded_lrn": True},
                 id="lrn-across-banded"),
    pytest.param(one("LRN", "lrn_param { local_size: 7 alpha: 0.3 beta: 0.6 k: 1.5 }",
                     inp("data", 2, 3, 4, 5)), {"feed": times(3), "banded_lrn": True},
                 id="lrn-across-banded-window-wider-than-channels"),
    pytest.param(one("LRN", "lrn_param { local_size: 3 alpha: 0.2 beta: 0.75 "
                     "norm_region: WITHIN_CHANNEL }"), {"feed": times(3)}, id="lrn-within"),
    pytest.param(one("LRN", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.5 k: 3 "
                     "norm_region: WITHIN_CHANNEL }"), {"feed": times(3)},
                 id="lrn-within-5-k-unused"),
    # Neurons
    pytest.param(one("ReLU"), {}, id="relu"),
    pytest.param(one("ReLU", "relu_param { negative_slope: 0.1 }"), {}, id="relu-leaky"),
    pytest.param(one("ReLU6"), {"feed": times(5)}, id="relu6"),
    pytest.param(one("ReLU6", "relu6_param { threshold: 2.5 }"), {"feed": times(5)},
                 id="relu6-threshold"),
    pytest.param(one("PReLU"), {}, id="prelu"),
    pytest.param(one("PReLU", "prelu_param { channel_shared: true }"), {},
                 id="prelu-shared"),
    pytest.param(one("ELU", "elu_param { alpha: 0.5 }"), {}, id="elu"),
    pytest.param(one("Sigmoid"), {"feed": times(4)}, id="sigmoid"),
    pytest.param(one("TanH"), {"feed": times(3)}, id="tanh"),
    pytest.param(one("AbsVal"), {}, id="absval"),
    pytest.param(one("Power", "power_param { power: 2 scale: 0.5 shift: 1 }"), {},
                 id="power2"),
    pytest.param(one("Power", "power_param { power: 0.5 }"), {"feed": positive},
                 id="power-sqrt"),
    pytest.param(one("Power", "power_param { power: -1.5 scale: 2 shift: 0.5 }"),
                 {"feed": positive}, id="power-negative"),
    pytest.param(one("Power", "power_param { scale: 3 shift: -1 }"), {}, id="power-affine"),
    pytest.param(one("Power", "power_param { power: 0 }"), {}, id="power0"),
    pytest.param(one("Power", "power_param { power: 2 scale: 0 shift: 3 }"), {},
                 id="power-scale0"),
    pytest.param(one("Exp"), {}, id="exp"),
    pytest.param(one("Exp", "exp_param { scale: 0.5 shift: 0.3 }"), {}, id="exp-e-scale-shift"),
    pytest.param(one("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }"), {},
                 id="exp-base2-scale-shift"),
    pytest.param(one("Exp", "exp_param { base: 0.5 shift: -1 }"), {}, id="exp-base-half"),
    pytest.param(one("Log"), {"feed": positive}, id="log"),
    pytest.param(one("Log", "log_param { scale: 2 shift: 0.5 }"), {"feed": positive},
                 id="log-e-scale-shift"),
    pytest.param(one("Log", "log_param { base: 10 scale: 0.5 shift: 1 }"), {"feed": positive},
                 id="log-base10-scale-shift"),
    pytest.param(one("BNLL"), {"feed": wide}, id="bnll"),
    pytest.param(one("Threshold", "threshold_param { threshold: 0.3 }"), {}, id="threshold"),
    pytest.param(one("HardSigmoid"), {"feed": times(4)}, id="hardsigmoid"),
    pytest.param(one("HardSigmoid", "hardsigmoid_param { alpha: 0.5 beta: 0.2 }"),
                 {"feed": times(3)}, id="hardsigmoid-alpha-beta"),
    pytest.param(one("HardSwish"), {"feed": times(5)}, id="hardswish"),
    # Softmax
    pytest.param(one("Softmax"), {"feed": times(3)}, id="softmax-axis1"),
    pytest.param(one("Softmax", "softmax_param { axis: 2 }"), {"feed": times(3)},
                 id="softmax-axis2"),
    pytest.param(one("Softmax", "softmax_param { axis: -1 }"), {"feed": times(3)},
                 id="softmax-axis-last"),
    # BatchNorm, Scale, Bias
    *[pytest.param(one("BatchNorm", "", inp("data", 2, 3, 4, 5))
                   + lay("scale", "Scale", "out", "out", "scale_param { bias_term: true }"),
                   {"params": {"out": BN_BLOBS[f]}}, id=f"batchnorm-factor{f:g}-scale")
      for f in (0.5, 2.0, 0.0)],
    pytest.param(one("BatchNorm", "batch_norm_param { use_global_stats: true eps: 0.01 }",
                     inp("data", 2, 3, 4)), {"params": {"out": BN_BLOBS[2.0]}},
                 id="batchnorm-3d-eps"),
    pytest.param(one("Scale"), {}, id="scale"),
    pytest.param(one("Scale", "scale_param { axis: 2 num_axes: 2 bias_term: true }"), {},
                 id="scale-axis2-hw"),
    pytest.param(one("Scale", "scale_param { num_axes: 0 bias_term: true }"), {},
                 id="scale-scalar"),
    pytest.param(one("Scale", "scale_param { num_axes: -1 }"), {}, id="scale-chw"),
    pytest.param(one("Bias"), {}, id="bias"),
    pytest.param(one("Bias", "bias_param { axis: 2 num_axes: 2 }"), {}, id="bias-axis2-hw"),
    pytest.param(DATA + inp("b", 2, 3) + lay("out", "Bias", ["data", "b"], "out",
                                             "bias_param { axis: 0 }"), {},
                 id="bias-bottom-axis0"),
    pytest.param(DATA + lay("ip", "InnerProduct", "data", "ip",
                            "inner_product_param { num_output: 3 }")
                 + lay("out", "Scale", ["data", "ip"], "out", "scale_param { axis: 0 }"), {},
                 id="scale-bottom-ip-axis0"),
    pytest.param(DATA + inp("factor", 2, 3)
                 + lay("out", "Scale", ["data", "factor"], "out", "scale_param { axis: 0 }"),
                 {}, id="scale-bottom-input-axis0"),
    # MVN, Normalize
    pytest.param(one("MVN"), {"feed": times(3)}, id="mvn"),
    pytest.param(one("MVN", "mvn_param { across_channels: true eps: 0.5 }"), {"feed": times(3)},
                 id="mvn-across-eps"),
    pytest.param(one("MVN", "mvn_param { normalize_variance: false }"), {}, id="mvn-mean-only"),
    pytest.param(one("MVN", "mvn_param { across_channels: true }", inp("data", 2, 9)), {},
                 id="mvn-2d-across"),
    pytest.param(one("MVN", "", inp("data", 2, 3, 8)), {}, id="mvn-3d"),
    pytest.param(one("Normalize"), {}, id="normalize"),
    pytest.param(one("Normalize", "norm_param { across_spatial: false channel_shared: false "
                     "eps: 0.5 }"), {"feed": times(0.5)}, id="normalize-per-position-channel"),
    pytest.param(one("Normalize", "norm_param { channel_shared: false }", inp("data", 2, 5)),
                 {}, id="normalize-2d-channel"),
    # Eltwise
    pytest.param(DATA + inp("b", 2, 3, 6, 7) + lay(
        "out", "Eltwise", ["data", "b"], "out", "eltwise_param { operation: SUM coeff: 1 "
        "coeff: -0.5 }"), {}, id="eltwise-sum-coeffs"),
    pytest.param(DATA + inp("b", 2, 3, 6, 7) + inp("c", 2, 3, 6, 7) + lay(
        "out", "Eltwise", ["data", "b", "c"], "out", "eltwise_param { operation: PROD }"), {},
        id="eltwise-prod3"),
    pytest.param(DATA + inp("b", 2, 3, 6, 7) + lay(
        "out", "Eltwise", ["data", "b"], "out", "eltwise_param { operation: MAX }"), {},
        id="eltwise-max"),
    pytest.param(DATA + inp("b", 2, 3, 6, 7) + inp("c", 2, 3, 6, 7) + lay(
        "out", "Eltwise", ["data", "b", "c"], "out", "eltwise_param { operation: MAX }"), {},
        id="eltwise-max3"),
    pytest.param(DATA + inp("b", 2, 3, 6, 7) + lay("out", "Eltwise", ["data", "b"], "out"), {},
                 id="eltwise-sum"),
    # Blob plumbing
    pytest.param(DATA + inp("b", 2, 2, 6, 7) + lay("out", "Concat", ["data", "b"], "out"), {},
                 id="concat-axis1"),
    pytest.param(DATA + inp("b", 2, 3, 2, 7) + lay("out", "Concat", ["data", "b"], "out",
                                                   "concat_param { axis: 2 }"), {},
                 id="concat-axis2"),
    pytest.param(DATA + inp("b", 2, 3, 6, 2) + lay("out", "Concat", ["data", "b"], "out",
                                                   "concat_param { concat_dim: 3 }"), {},
                 id="concat-dim3"),
    pytest.param(inp("data", 2, 6, 4, 5) + lay("slice", "Slice", "data", ["s1", "s2", "s3"],
                                               "slice_param { slice_point: 1 slice_point: 4 }"),
                 {}, id="slice-points"),
    pytest.param(inp("data", 2, 3, 6, 5) + lay("slice", "Slice", "data", ["s1", "s2"],
                                               "slice_param { axis: 2 }"), {},
                 id="slice-equal-axis2"),
    pytest.param(inp("data", 2, 6, 4, 6) + lay("slice", "Slice", "data", ["s1", "s2", "s3"],
                                               "slice_param { axis: -1 }"), {},
                 id="slice-equal-axis-last"),
    pytest.param(inp("data", 2, 6, 4, 5) + lay("slice", "Slice", "data", ["s1", "s2"],
                                               "slice_param { slice_dim: 1 slice_point: 2 }"),
                 {}, id="slice-dim"),
    pytest.param(DATA + lay("split", "Split", "data", ["a", "b"])
                 + lay("relu", "ReLU", "a", "ra") + lay("tanh", "TanH", "b", "tb"), {},
                 id="split-two-consumers"),
    pytest.param(DATA + lay("relu", "ReLU", "data", "ra") + lay("tanh", "TanH", "data", "tb"),
                 {}, id="implicit-split"),
    pytest.param(one("Flatten"), {}, id="flatten"),
    pytest.param(one("Flatten", "flatten_param { axis: 1 end_axis: 2 }"), {},
                 id="flatten-end-axis2"),
    pytest.param(one("Flatten", "flatten_param { axis: 2 }"), {}, id="flatten-axis2"),
    pytest.param(inp("data", 2, 3, 4, 5) + lay("out", "Reshape", "data", "out",
                                               "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"),
                 {}, id="reshape"),
    pytest.param(one("Reshape", "reshape_param { axis: 2 num_axes: 1 shape { dim: 2 dim: 3 } }"),
                 {}, id="reshape-axis2"),
    pytest.param(one("Dropout", "dropout_param { dropout_ratio: 0.5 }"), {}, id="dropout"),
    pytest.param(inp("data", 2, 3, 8, 9) + inp("ref", 2, 3, 5, 4) + lay(
        "out", "Crop", ["data", "ref"], "out", "crop_param { axis: 2 offset: 1 offset: 3 }"),
        {}, id="crop-axis2-offsets"),
    pytest.param(inp("data", 2, 3, 8, 9) + inp("ref", 2, 2, 5, 4) + lay(
        "out", "Crop", ["data", "ref"], "out", "crop_param { axis: 1 offset: 1 }"),
        {}, id="crop-axis1-one-offset"),
    pytest.param(inp("data", 2, 3, 8, 9) + inp("ref", 2, 3, 5, 4)
                 + lay("out", "Crop", ["data", "ref"], "out"), {}, id="crop-default"),
    pytest.param(one("Unsqueeze", "unsqueeze_param { dim: 2 }", inp("data", 2, 3, 4)),
                 {"batches": ()}, id="unsqueeze-own-batch"),
    pytest.param(one("Unsqueeze", "unsqueeze_param { dim: -1 }", inp("data", 2, 3, 4)),
                 {"batches": ()}, id="unsqueeze-last-own-batch"),
    pytest.param(one("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }"), {},
                 id="permute-nhwc"),
    pytest.param(one("Permute", "permute_param { order: 0 order: 3 }"), {},
                 id="permute-rest-appended"),
    pytest.param(one("Permute", "permute_param { order: 0 order: 1 }"), {},
                 id="permute-identity"),
    pytest.param(one("Tile", "tile_param { tiles: 3 }"), {}, id="tile"),
    pytest.param(one("Tile", "tile_param { axis: -1 tiles: 2 }"), {}, id="tile-axis-last"),
    pytest.param(one("Tile", "tile_param { axis: 2 tiles: 2 }", inp("data", 2, 3, 4)), {},
                 id="tile-axis2-3d"),
    *[pytest.param(one("Reduction", f"reduction_param {{ operation: {op} axis: {axis} "
                       f"{coeff} }}"), {}, id=f"reduction-{op.lower()}-axis{axis}")
      for op, axis, coeff in (("SUM", 1, ""), ("ASUM", 2, "coeff: 0.5"),
                              ("SUMSQ", -1, "coeff: -2"), ("MEAN", 1, ""),
                              ("MEAN", 2, "coeff: 3"))],
    # ArgMax: ties go to the higher index
    pytest.param(one("ArgMax", "argmax_param { axis: 1 }"), {}, id="argmax-axis1"),
    pytest.param(one("ArgMax", "argmax_param { axis: 2 top_k: 4 }"), {"feed": ties},
                 id="argmax-axis2-top4-ties"),
    pytest.param(one("ArgMax", "argmax_param { axis: -1 top_k: 3 out_max_val: true }"),
                 {"feed": ties}, id="argmax-axis-last-values"),
    pytest.param(one("ArgMax"), {}, id="argmax-flat"),
    pytest.param(one("ArgMax", "argmax_param { top_k: 5 }"), {"feed": ties},
                 id="argmax-flat-top5-ties"),
    pytest.param(one("ArgMax", "argmax_param { top_k: 3 out_max_val: true }",
                     inp("data", 2, 9)), {"feed": ties}, id="argmax-flat-2d-values"),
    pytest.param(one("ArgMax", "argmax_param { top_k: 2 out_max_val: true }"),
                 {"feed": ties}, id="argmax-flat-4d-values"),
    pytest.param(DATA + inp("aux", 2, 4) + lay("silence", "Silence", "aux", [])
                 + lay("out", "TanH", "data", "out"), {}, id="silence"),
    # In-place layers: every blob's last value is the one output
    pytest.param(DATA + lay("conv", "Convolution", "data", "conv", CONV % "num_output: 4 "
                            "kernel_size: 3") + lay("relu", "ReLU", "conv", "conv")
                 + lay("pool", "Pooling", "conv", "pool", POOL % "pool: MAX kernel_size: 2 "
                       "stride: 2"), {"outputs": ["conv", "pool"]}, id="inplace-extra-output"),
    pytest.param(DATA + lay("scale", "Power", "data", "data", "power_param { scale: 2 }")
                 + lay("tanh", "TanH", "data", "data")
                 + lay("ip", "InnerProduct", "data", "ip", "inner_product_param { num_output: 3 }"),
                 {"outputs": ["data", "ip"]}, id="inplace-on-input"),
    pytest.param(DATA + lay("drop", "Dropout", "data", "data")
                 + lay("prob", "Softmax", "data", "data"), {}, id="inplace-dropout-softmax"),
    pytest.param(inp("data", 2, 3, 4, 5) + lay("bn", "BatchNorm", "data", "data")
                 + lay("scale", "Scale", "data", "data", "scale_param { bias_term: true }")
                 + lay("relu", "ReLU", "data", "data"),
                 {"params": {"bn": BN_BLOBS[0.5]}, "outputs": ["data"]},
                 id="inplace-batchnorm-scale-relu"),
]


@pytest.mark.parametrize("text, options", CASES)
def test_layer_matches_caffe(text, options):
    check(text, **options)


def test_cases_cover_every_exported_type():
    used = {layer.type for param in CASES
            for layer in text_format.Parse(param.values[0], caffe_pb2.NetParameter()).layer}
    assert EXPORTED <= used, sorted(EXPORTED - used)


# ---- the data transform ------------------------------------------------------------------
@pytest.mark.parametrize("uint8", [False, True])
def test_transform_mean_values_crop_scale(uint8):
    transform = Transform(scale=0.017, mean_values=(104, 117, 123), crop=(5, 5))
    text = inp("data", 2, 3, 5, 5) + lay("conv", "Convolution", "data", "conv",
                                         CONV % "num_output: 4 kernel_size: 3")
    model = check(text, transform=transform, stored=(3, 8, 8), uint8=uint8)
    tensor = model.graph.input[0].type.tensor_type
    assert [d.dim_param or d.dim_value for d in tensor.shape.dim] == [BATCH, 3, 8, 8]
    assert tensor.elem_type == (onnx.TensorProto.UINT8 if uint8 else onnx.TensorProto.FLOAT)


@pytest.mark.parametrize("uint8", [False, True])
def test_transform_mean_image_no_crop(uint8):
    mean = np.random.default_rng(3).uniform(0, 255, (1, 6, 6)).astype(np.float32)
    text = inp("data", 2, 1, 6, 6) + lay("relu", "ReLU", "data", "relu")
    check(text, transform=Transform(mean_image=mean), stored=(1, 6, 6), uint8=uint8)


def test_transform_mean_image():
    mean = np.random.default_rng(1).uniform(0, 255, (3, 9, 8)).astype(np.float32)
    transform = Transform(scale=0.5, mean_image=mean, crop=(6, 5))
    text = inp("data", 2, 3, 6, 5) + lay("ip", "InnerProduct", "data", "ip",
                                         "inner_product_param { num_output: 4 }")
    check(text, transform=transform, stored=(3, 9, 8), params={"ip": [
        np.random.default_rng(2).standard_normal((4, 90)).astype(np.float32) * 0.01,
        np.zeros(4, np.float32)]})


# ---- real input --------------------------------------------------------------------------
def test_fashion_mnist_through_conv_pool_lrn_ip():
    from sparknet_ml.data import fashion_mnist
    if not os.path.isdir(fashion_mnist.DEFAULT_DIR):
        pytest.skip(f"no Fashion-MNIST in {fashion_mnist.DEFAULT_DIR}")
    images, _ = fashion_mnist.load("test")
    x = images[:64, None].astype(np.float32) / 255
    text = (inp("data", 64, 1, 28, 28)
            + lay("conv1", "Convolution", "data", "conv1", CONV % "num_output: 8 kernel_size: 5")
            + lay("relu1", "ReLU", "conv1", "conv1")
            + lay("pool1", "Pooling", "conv1", "pool1", POOL % "pool: MAX kernel_size: 3 stride: 2")
            + lay("norm1", "LRN", "pool1", "norm1", "lrn_param { local_size: 5 alpha: 0.0001 "
                  "beta: 0.75 }")
            + lay("conv2", "Convolution", "norm1", "conv2", CONV % "num_output: 8 kernel_size: 3 "
                  "pad: 1 group: 2")
            + lay("pool2", "Pooling", "conv2", "pool2", POOL % "pool: AVE kernel_size: 3 stride: 2")
            + lay("ip", "InnerProduct", "pool2", "ip", "inner_product_param { num_output: 10 }")
            + lay("prob", "Softmax", "ip", "prob"))
    rng = np.random.default_rng(4)
    caffe.set_mode_cpu()
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    for name, blobs in net.params.items():
        for blob in blobs:
            fan_in = np.prod(blob.data.shape[1:]) if blob.data.ndim > 1 else 1
            blob.data[...] = rng.standard_normal(blob.data.shape) / np.sqrt(fan_in)
    weights = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    shapes = {k: b.data.shape for k, b in net.blobs.items()}
    model = to_onnx(text_format.Parse(text, caffe_pb2.NetParameter()), weights, shapes,
                    outputs=["ip", "prob"])
    onnx.checker.check_model(model)
    net.blobs["data"].data[...] = x
    net.forward()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ip, prob = session.run(["ip", "prob"], {"data": x})
    assert_close(ip, net.blobs["ip"].data, "ip")
    assert_close(prob, net.blobs["prob"].data, "prob")
    assert (prob.argmax(1) == net.blobs["prob"].data.argmax(1)).all()
    # The free batch axis: 7 of the images through the same model.
    (prob7,) = session.run(["prob"], {"data": x[:7]})
    assert_close(prob7, net.blobs["prob"].data[:7], "prob at batch 7")


# ---- what has no export ------------------------------------------------------------------
def export(text, weights=None, outputs=None):
    """``to_onnx`` of ``text`` with Caffe's shapes and (unless given) its weights."""
    caffe.set_mode_cpu()
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    if weights is None:
        weights = fill(net, np.random.default_rng(0), {})
    shapes = {k: b.data.shape for k, b in net.blobs.items()}
    return to_onnx(text_format.Parse(text, caffe_pb2.NetParameter()), weights, shapes,
                   outputs=outputs)


@pytest.mark.parametrize("kind, text", [
    ("LSTM", inp("x", 2, 3, 4) + inp("cont", 2, 3)
     + lay("out", "LSTM", ["x", "cont"], "out", "recurrent_param { num_output: 5 }")),
    ("Filter", DATA + inp("keep", 2, 1) + lay("out", "Filter", ["data", "keep"], "out")),
])
def test_allowed_type_without_export_raises(kind, text):
    assert kind in ALLOWED_LAYER_TYPES and kind not in EXPORTED
    with pytest.raises(NetSpecError, match=f"'out'.*{kind}"):
        export(text)


@pytest.mark.parametrize("text, match", [
    pytest.param(one("BatchNorm", "batch_norm_param { use_global_stats: false }"),
                 "'out'.*use_global_stats", id="batchnorm-batch-statistics"),
    pytest.param(one("Pooling", POOL % "pool: STOCHASTIC kernel_size: 2 stride: 2"),
                 "'out'.*STOCHASTIC", id="pooling-stochastic"),
    pytest.param(one("ReLU6", "relu6_param { negative_slope: 0.1 }"), "'out'.*negative_slope",
                 id="relu6-negative-slope"),
    pytest.param(inp("data", 4, 3, 2) + lay("slice", "Slice", "data", ["a", "b"],
                                            "slice_param { axis: 0 }"), "'slice'.*batch",
                 id="slice-batch-axis"),
    pytest.param(one("Reshape", "reshape_param { shape { dim: -1 dim: 21 } }"), "'out'.*batch",
                 id="reshape-folds-batch"),
    pytest.param(one("Unsqueeze", "unsqueeze_param { dim: 0 }"), "'out'.*batch",
                 id="unsqueeze-before-batch"),
    pytest.param(one("Permute", "permute_param { order: 1 order: 0 }"), "'out'.*batch",
                 id="permute-moves-batch"),
    pytest.param(one("Tile", "tile_param { axis: 0 tiles: 2 }"), "'out'.*batch",
                 id="tile-batch"),
    pytest.param(one("Reduction"), "'out'.*axis 0", id="reduction-default-axis0"),
    pytest.param(one("ArgMax", "argmax_param { axis: 0 }"), "'out'.*axis 0",
                 id="argmax-batch-axis"),
    pytest.param(one("SPP", "spp_param { pyramid_height: 2 pool: STOCHASTIC }",
                     inp("data", 2, 3, 8, 8)), "'out'.*STOCHASTIC", id="spp-stochastic"),
    pytest.param(one("PixelShuffle", "pixelshuffle_param { upscale_factor: 2 }",
                     inp("data", 2, 6, 3, 4)), "'out'.*multiple of 4",
                 id="pixelshuffle-channels"),
    pytest.param(one("Upsample", "upsample_param { scale: 2 dims_num: 3 }"),
                 "'out'.*dims_num", id="upsample-dims-num"),
    pytest.param(one("BilinearInterpolate", "bilinear_interpolate_param { dst_h: 1 dst_w: 3 }"),
                 "'out'.*align_corners", id="bilinear-aligned-to-one-row"),
    pytest.param(one("Pad", "pad_param { pad_u: 1 pad_d: -1 }"), "'out'.*all >= 0",
                 id="pad-mixed-signs"),
    pytest.param(one("Pad", "pad_param { pad_type: REFLECT pad_l: 7 }"), "'out'.*REFLECT",
                 id="pad-reflect-too-far"),
])
def test_setting_without_export_raises(text, match):
    with pytest.raises(NetSpecError, match=match):
        export(text)


@pytest.mark.parametrize("param", ["", "bilinear_interpolate_param { dst_h: 4 scale_factor: 2 }"],
                         ids=["neither", "both"])
def test_bilinear_interpolate_without_one_size_raises(param):
    # Caffe leaves its output size unset (and may abort): the shapes given, no pycaffe net
    text = one("BilinearInterpolate", param)
    with pytest.raises(NetSpecError, match="'out'.*not both nor neither"):
        to_onnx(text_format.Parse(text, caffe_pb2.NetParameter()), {},
                {"data": (2, 3, 6, 7), "out": (2, 3, 4, 14)})


@pytest.mark.parametrize("blobs", [0, 1, 3], ids=["none", "no-bias", "extra"])
def test_wrong_weight_blob_count_raises(blobs):
    rng = np.random.default_rng(0)
    given = [normal(rng, (4, 3, 3, 3)), normal(rng, (4,)), normal(rng, (4,))][:blobs]
    text = one("Convolution", CONV % "num_output: 4 kernel_size: 3")
    with pytest.raises(NetSpecError, match=f"'out'.*needs 2 weight blobs.*give {blobs}"):
        export(text, weights={"out": given} if blobs else {})


def test_unknown_output_blob_raises():
    with pytest.raises(NetSpecError, match="'nothere'"):
        export(one("ReLU"), outputs=["out", "nothere"])
