"""A Caffe deploy net and its weights as an ONNX model, with Caffe's exact semantics.

Pure protobuf, numpy and the ``onnx`` package (``pip install 'sparknet_ml[onnx]'``): no Spark,
no pycaffe ``Net``. The blob shapes come from the caller (Caffe's own, see
:func:`sparknet_ml.engine.probe.deploy_blob_shapes`): every layer whose ONNX form needs a size
(pooling's rounded-up output, a slice point, a crop) reads it from Caffe rather than
recomputing it, and the finished graph's inferred shapes are checked against them.

The batch axis stays free (``N``): a net must keep its first axis as the batch. Caffe's
in-place layers (``top == bottom``) become fresh ONNX tensors; each blob's last version keeps
the blob's name, so graph outputs are named as in Caffe.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from google.protobuf.message import EncodeError
from onnx import TensorProto, helper, numpy_helper

from caffe.proto import caffe_pb2

from .layers import check_bottoms, check_layers, check_unique_names
from .prototxt import NetSpecError

OPSET = 21
"""The ONNX opset written (onnxruntime 1.20 and later run it)."""

IR_VERSION = 10
"""The ONNX file format version written: opset 21's (ONNX 1.16). The ``onnx`` package's own
default follows its release (IR 14 in onnx 1.23), which older runtimes refuse to load
(onnxruntime 1.31 reads IR 13 at most)."""

BATCH = "N"
"""The symbolic batch dimension of every input and output."""


def _ints(repeated, h: int, w: int, default: int, spatial: int, what: str,
          layer: str) -> list[int]:
    """Caffe's per-axis setting: ``h``/``w`` when given (2-D), else the repeated field (one
    value for every axis, or one per axis), else ``default``."""
    if h or w:
        if spatial != 2:
            raise NetSpecError(f"layer {layer!r}: {what}_h/{what}_w need 2 spatial axes")
        return [h, w]
    values = list(repeated)
    if not values:
        return [default] * spatial
    if len(values) == 1:
        return values * spatial
    if len(values) != spatial:
        raise NetSpecError(f"layer {layer!r}: {len(values)} values of {what} for {spatial} "
                           "spatial axes")
    return values


def _pooled(size: int, kernel: int, pad: int, stride: int) -> int:
    """Caffe's rounded-up pooled size, less a last window that would start in the padding."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    return out - 1 if pad and (out - 1) * stride >= size + pad else out


class _Graph:
    """The ONNX graph under construction: nodes, initializers and the Caffe blob -> tensor map."""

    def __init__(self, writes: Counter):
        self.nodes: list = []
        self.initializers: list = []
        self.tensor: dict[str, str] = {}   # Caffe blob -> its current ONNX tensor
        self._left = Counter(writes)       # writes of each blob still to come
        self._names: set[str] = set()
        self.versions: dict[str, str] = {}  # every tensor written as a Caffe blob -> the blob

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def const(self, base: str, value, dtype=np.float32) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def slice_inputs(self, base: str, starts, ends, axes) -> list[str]:
        """The constant starts, ends and axes inputs of a ``Slice`` node."""
        return [self.const(f"{base}/{what}", values, np.int64)
                for what, values in (("starts", starts), ("ends", ends), ("axes", axes))]

    def temp(self, layer: str, what: str) -> str:
        return self.unique(f"{layer}/{what}")

    def input(self, blob: str) -> None:
        """The graph input ``blob`` takes the blob's name (a later in-place write does not)."""
        self._left[blob] -= 1
        self._names.add(blob)

    def top(self, blob: str, layer: str) -> str:
        """The tensor name for this write of ``blob``: the blob's own on its last write."""
        self._left[blob] -= 1
        if self._left[blob] == 0 and blob not in self._names:
            self._names.add(blob)
            name = blob
        else:
            name = self.unique(f"{blob}@{layer}")
        self.versions[name] = blob
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str,
             **attrs) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))


def _broadcast_shape(shape: Sequence[int], axis: int, ndim: int) -> tuple[int, ...]:
    """A parameter of ``shape`` applied at ``axis`` of an ``ndim`` tensor, padded with ones so
    that right-aligned (numpy) broadcasting lines it up."""
    return (*shape, *([1] * (ndim - axis - len(shape))))


class _Converter:
    """Caffe layers to ONNX nodes, one method per layer type (``_<Type>``)."""

    def __init__(self, net: caffe_pb2.NetParameter, weights: Mapping[str, Sequence[np.ndarray]],
                 shapes: Mapping[str, Sequence[int]], banded_lrn: bool = False):
        self.weights = weights
        self.banded_lrn = banded_lrn
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        writes = Counter(t for layer in net.layer for t in layer.top)
        self.g = _Graph(writes)

    # ---- helpers -------------------------------------------------------------------------
    def shape(self, blob: str, layer) -> tuple[int, ...]:
        if blob not in self.shapes:
            raise NetSpecError(f"layer {layer.name!r}: no shape for blob {blob!r}")
        return self.shapes[blob]

    def blobs(self, layer, count: int) -> list[np.ndarray]:
        """The layer's learnable blobs, checked against the count Caffe's layer needs."""
        found = [np.asarray(b, np.float32) for b in self.weights.get(layer.name, [])]
        if len(found) != count:
            raise NetSpecError(f"layer {layer.name!r} ({layer.type}) needs {count} weight "
                               f"blobs, the weights give {len(found)}")
        return found

    def axis(self, axis: int, ndim: int, layer) -> int:
        if not -ndim <= axis < ndim:
            raise NetSpecError(f"layer {layer.name!r}: axis {axis} is out of range for "
                               f"{ndim} axes")
        return axis % ndim

    def past_batch(self, axis: int, ndim: int, layer) -> int:
        """``axis`` of an ``ndim`` blob, refused when it is 0: the batch, which an exported
        net keeps free."""
        axis = self.axis(axis, ndim, layer)
        if axis == 0:
            raise NetSpecError(f"layer {layer.name!r} ({layer.type}) works over axis 0, the "
                               "batch; an exported net keeps its first axis as the batch")
        return axis

    def reshape(self, x: str, target: Sequence[int], out: str, layer, what: str) -> None:
        """Reshape to Caffe's ``target``, its first axis the (free) batch."""
        self.g.node("Reshape", [x, self.g.const(f"{layer.name}/{what}_shape",
                                               [0, *target[1:]], np.int64)], [out],
                    f"{layer.name}/{what}")

    def keep_batch(self, layer, bottom: str, top: str) -> None:
        if self.shape(top, layer)[:1] != self.shape(bottom, layer)[:1]:
            raise NetSpecError(f"layer {layer.name!r} ({layer.type}) changes the batch axis "
                               f"({list(self.shape(bottom, layer))} -> "
                               f"{list(self.shape(top, layer))}); an exported net keeps its "
                               "first axis as the batch")

    # ---- layers --------------------------------------------------------------------------
    def convert(self, layer) -> None:
        method = getattr(self, f"_{layer.type}", None)
        if method is None:
            raise NetSpecError(f"layer {layer.name!r} has type {layer.type!r}, which has no "
                               f"ONNX export (exported types: {', '.join(sorted(EXPORTED))})")
        bottoms = [self.g.tensor[b] for b in layer.bottom]
        method(layer, bottoms)

    def _single(self, layer, op: str, x: list[str], **attrs) -> None:
        top = self.g.top(layer.top[0], layer.name)
        self.g.node(op, x, [top], layer.name, **attrs)
        self.g.tensor[layer.top[0]] = top

    def _chain(self, layer, x: str, steps: list[tuple[str, object]]) -> None:
        """Elementwise steps (op, constant or None) from ``x`` to the layer's top."""
        if not steps:
            steps = [("Identity", None)]
        for i, (op, value) in enumerate(steps):
            last = i == len(steps) - 1
            out = self.g.top(layer.top[0], layer.name) if last else self.g.temp(layer.name, op)
            inputs = [x] if value is None else [x, self.g.const(f"{layer.name}/{op}_c", value)]
            self.g.node(op, inputs, [out], f"{layer.name}/{op}" if not last else layer.name)
            x = out
        self.g.tensor[layer.top[0]] = x

    def _geometry(self, layer) -> dict:
        """Caffe's convolution_param window as Conv attributes (axis 1 of N,C,spatial...)."""
        p = layer.convolution_param
        ndim = len(self.shape(layer.bottom[0], layer))
        if p.axis != 1 or ndim < 3:
            raise NetSpecError(f"layer {layer.name!r}: convolution over axis {p.axis} of a "
                               f"{ndim}-axis blob has no ONNX export (axis 1 of N,C,spatial...)")
        spatial = ndim - 2
        pad = _ints(p.pad, p.pad_h, p.pad_w, 0, spatial, "pad", layer.name)
        return {"kernel_shape": _ints(p.kernel_size, p.kernel_h, p.kernel_w, 0, spatial,
                                      "kernel", layer.name),
                "pads": pad + pad,
                "strides": _ints(p.stride, p.stride_h if p.HasField("stride_h") else 0,
                                 p.stride_w if p.HasField("stride_w") else 0, 1, spatial,
                                 "stride", layer.name),
                "dilations": _ints(p.dilation, 0, 0, 1, spatial, "dilation", layer.name)}

    def _conv(self, layer, x, transposed: bool) -> None:
        p = layer.convolution_param
        geometry = self._geometry(layer)
        if p.width_group != 1 or p.height_group != 1:
            raise NetSpecError(f"layer {layer.name!r}: width_group/height_group have no ONNX "
                               "export")
        blobs = self.blobs(layer, 2 if p.bias_term else 1)
        inputs = [x[0], self.g.const(f"{layer.name}/weight", blobs[0])]
        if p.bias_term:
            inputs.append(self.g.const(f"{layer.name}/bias", blobs[1].reshape(-1)))
        self._single(layer, "ConvTranspose" if transposed else "Conv", inputs, group=p.group,
                     **geometry)

    def _Convolution(self, layer, x):
        self._conv(layer, x, False)

    def _Deconvolution(self, layer, x):
        self._conv(layer, x, True)

    def _Im2col(self, layer, x):
        # Caffe: channel c * prod(kernel) + k holds offset k of each window of channel c, a
        # depthwise convolution by one-hot kernels
        geometry = self._geometry(layer)
        channels = self.shape(layer.bottom[0], layer)[1]
        kernel = geometry["kernel_shape"]
        one_hot = np.tile(np.eye(math.prod(kernel), dtype=np.float32), (channels, 1))
        self._single(layer, "Conv", [x[0], self.g.const(f"{layer.name}/one_hot", one_hot.reshape(
            -1, 1, *kernel))], group=channels, **geometry)

    def _InnerProduct(self, layer, x):
        p = layer.inner_product_param
        shape = self.shape(layer.bottom[0], layer)
        axis = self.past_batch(p.axis, len(shape), layer)
        blobs = self.blobs(layer, 2 if p.bias_term else 1)
        weight = blobs[0].reshape(blobs[0].shape[-2:]) if blobs[0].ndim > 2 else blobs[0]
        matrix = weight if p.transpose else weight.T  # (K, num_output)
        flat = self.g.temp(layer.name, "flat")
        self.reshape(x[0], [*shape[:axis], math.prod(shape[axis:])], flat, layer, "flatten")
        if not p.bias_term:
            return self._single(layer, "MatMul", [flat, self.g.const(f"{layer.name}/weight",
                                                                     matrix)])
        product = self.g.temp(layer.name, "matmul")
        self.g.node("MatMul", [flat, self.g.const(f"{layer.name}/weight", matrix)], [product],
                    f"{layer.name}/matmul")
        self._single(layer, "Add", [product, self.g.const(f"{layer.name}/bias",
                                                          blobs[1].reshape(-1))])

    def _Embed(self, layer, x):
        # Caffe: row int(x) of the (input_dim, num_output) weight, for every element of x
        p = layer.embed_param
        blobs = self.blobs(layer, 2 if p.bias_term else 1)
        name = layer.name
        index = self.g.temp(name, "index")
        self.g.node("Cast", x, [index], f"{name}/index", to=TensorProto.INT64)
        weight = self.g.const(f"{name}/weight", blobs[0])
        if not p.bias_term:
            return self._single(layer, "Gather", [weight, index], axis=0)
        rows = self.g.temp(name, "rows")
        self.g.node("Gather", [weight, index], [rows], f"{name}/rows", axis=0)
        self._single(layer, "Add", [rows, self.g.const(f"{name}/bias", blobs[1].reshape(-1))])

    def _Pooling(self, layer, x):
        p = layer.pooling_param
        shape = self.shape(layer.bottom[0], layer)
        if len(shape) != 4:
            raise NetSpecError(f"layer {layer.name!r}: pooling of a {len(shape)}-axis blob "
                               "(Caffe pools N,C,H,W)")
        if p.pool not in (p.MAX, p.AVE):
            raise NetSpecError(f"layer {layer.name!r}: {p.PoolMethod.Name(p.pool)} pooling "
                               "has no ONNX export (MAX and AVE do)")
        if p.global_pooling:
            return self._single(layer, "GlobalMaxPool" if p.pool == p.MAX
                                else "GlobalAveragePool", x)
        kernel = _ints([p.kernel_size] if p.kernel_size else [], p.kernel_h, p.kernel_w, 0, 2,
                       "kernel", layer.name)
        pad = _ints([p.pad] if p.pad else [], p.pad_h, p.pad_w, 0, 2, "pad", layer.name)
        stride = _ints([p.stride] if p.HasField("stride") else [], p.stride_h, p.stride_w, 1,
                       2, "stride", layer.name)
        top = self.g.top(layer.top[0], layer.name)
        self._pool(layer, layer.name, x[0], top, p.pool == p.MAX, kernel, pad, stride,
                   shape[2:], self.shape(layer.top[0], layer)[2:])
        self.g.tensor[layer.top[0]] = top

    def _pool(self, layer, name: str, x: str, top: str, is_max: bool, kernel, pad, stride,
              size, out) -> None:
        """Caffe's MAX or AVE pooling of ``x`` (spatial ``size``) to ``top`` (spatial ``out``,
        Caffe's), the nodes named ``name``."""
        # Caffe's output size (rounded up, less a window starting in the padding) is out:
        # pad the end so that ONNX's rounded-down size gives it.
        end = [max(0, (o - 1) * s + k - n - b)
               for o, s, k, n, b in zip(out, stride, kernel, size, pad)]
        if any(e >= k for e, k in zip(end, kernel)):
            raise NetSpecError(f"layer {layer.name!r}: its last pooling window lies wholly "
                               f"outside the {list(size)} input (kernel {kernel}, stride "
                               f"{stride}, rounded up), where Caffe gives NaN or -FLT_MAX; "
                               "no ONNX export")
        if is_max:  # ONNX ignores padded positions, as Caffe's window clipping does
            return self.g.node("MaxPool", [x], [top], name, kernel_shape=kernel,
                               pads=pad + end, strides=stride)
        # AVE: Caffe divides each window's sum by its size clipped to the padded extent
        # (H + pad), not beyond; zero-pad explicitly, average whole windows, rescale.
        divisor = np.ones(out, np.float32)
        for axis, (o, s, k, n, b) in enumerate(zip(out, stride, kernel, size, pad)):
            start = np.arange(o) * s - b
            extent = np.minimum(start + k, n + b) - start
            divisor *= extent.reshape((-1, 1) if axis == 0 else (1, -1)).astype(np.float32)
        padded = x
        if any(pad) or any(end):
            padded = self.g.temp(name, "pad")
            self.g.node("Pad", [x, self.g.const(f"{name}/pads", [0, 0, *pad, 0, 0, *end],
                                                np.int64)], [padded], f"{name}/pad")
        window = float(kernel[0] * kernel[1])
        if np.all(divisor == window):
            return self.g.node("AveragePool", [padded], [top], name, kernel_shape=kernel,
                               strides=stride)
        mean = self.g.temp(name, "mean")
        self.g.node("AveragePool", [padded], [mean], f"{name}/mean", kernel_shape=kernel,
                    strides=stride)
        self.g.node("Mul", [mean, self.g.const(f"{name}/rescale", window / divisor)], [top],
                    name)

    def _SPP(self, layer, x):
        p = layer.spp_param
        shape = self.shape(layer.bottom[0], layer)
        if p.pool == p.STOCHASTIC:
            raise NetSpecError(f"layer {layer.name!r}: STOCHASTIC pooling has no ONNX export "
                               "(MAX and AVE do)")
        top = self.g.top(layer.top[0], layer.name)
        single = p.pyramid_height == 1  # Caffe's top is then the one N,C,1,1 pooling itself
        levels = []
        for i in range(p.pyramid_height):
            # Caffe's level i: 2^i bins, each a kernel of ceil(size / 2^i) with that stride,
            # half the excess (rounded up) as pad, rounded-up pooling; flattened, concatenated.
            bins = 2 ** i
            kernel = [-(-n // bins) for n in shape[2:]]
            pad = [(k * bins - n + 1) // 2 for k, n in zip(kernel, shape[2:])]
            out = [_pooled(n, k, b, k) for n, k, b in zip(shape[2:], kernel, pad)]
            name = layer.name if single else f"{layer.name}/level{i}"
            pooled = top if single else self.g.temp(name, "pool")
            self._pool(layer, name, x[0], pooled, p.pool == p.MAX, kernel, pad, kernel,
                       shape[2:], out)
            if not single:
                levels.append(self.g.temp(name, "flat"))
                self.reshape(pooled, [shape[0], shape[1] * math.prod(out)], levels[-1], layer,
                             f"level{i}/flatten")
        if levels:
            self.g.node("Concat", levels, [top], layer.name, axis=1)
        self.g.tensor[layer.top[0]] = top

    def _LRN(self, layer, x):
        p = layer.lrn_param
        if p.local_size % 2 == 0:
            raise NetSpecError(f"layer {layer.name!r}: LRN local_size {p.local_size} must be "
                               "odd (as Caffe requires)")
        if p.norm_region == p.ACROSS_CHANNELS:
            if self.banded_lrn:
                return self._banded_lrn(layer, x)
            return self._single(layer, "LRN", x, size=p.local_size, alpha=p.alpha, beta=p.beta,
                                bias=p.k)
        # WITHIN_CHANNEL, as Caffe composes it: x * (1 + alpha * avgpool(x^2))^-beta, the
        # average over a local_size^2 window (zero-padded, always divided by its full size).
        n, half = p.local_size, (p.local_size - 1) // 2
        name = layer.name
        square, padded, mean, scaled, shifted, power = (
            self.g.temp(name, w) for w in ("square", "pad", "mean", "scale", "shift", "power"))
        self.g.node("Mul", [x[0], x[0]], [square], f"{name}/square")
        self.g.node("Pad", [square, self.g.const(f"{name}/pads", [0, 0, half, half, 0, 0, half,
                                                                  half], np.int64)],
                    [padded], f"{name}/pad")
        self.g.node("AveragePool", [padded], [mean], f"{name}/mean", kernel_shape=[n, n],
                    strides=[1, 1])
        self.g.node("Mul", [mean, self.g.const(f"{name}/alpha", p.alpha)], [scaled],
                    f"{name}/alpha")
        self.g.node("Add", [scaled, self.g.const(f"{name}/one", 1.0)], [shifted], f"{name}/one")
        self.g.node("Pow", [shifted, self.g.const(f"{name}/beta", -p.beta)], [power],
                    f"{name}/beta")
        self._single(layer, "Mul", [x[0], power])

    def _banded_lrn(self, layer, x):
        """Across-channel LRN, x * (k + alpha / n * window sum of x^2)^-beta, with the window
        sum as a 1x1 convolution whose C x C weights are the band of the window (bias k)."""
        p = layer.lrn_param
        channels, half = self.shape(layer.bottom[0], layer)[1], (p.local_size - 1) // 2
        band = np.zeros((channels, channels, 1, 1), np.float32)
        for c in range(channels):
            band[c, max(0, c - half):c + half + 1] = p.alpha / p.local_size
        name = layer.name
        square, total, power = (self.g.temp(name, w) for w in ("square", "sum", "power"))
        self.g.node("Mul", [x[0], x[0]], [square], f"{name}/square")
        self.g.node("Conv", [square, self.g.const(f"{name}/band", band),
                             self.g.const(f"{name}/k", np.full(channels, p.k, np.float32))],
                    [total], f"{name}/sum")
        self.g.node("Pow", [total, self.g.const(f"{name}/beta", -p.beta)], [power],
                    f"{name}/beta")
        self._single(layer, "Mul", [x[0], power])

    def _PixelShuffle(self, layer, x):
        r = layer.pixelshuffle_param.upscale_factor
        shape = self.shape(layer.bottom[0], layer)
        if len(shape) != 4 or shape[1] % (r * r):
            raise NetSpecError(f"layer {layer.name!r}: PixelShuffle of a {list(shape)} blob by "
                               f"{r} has no ONNX export (N,C,H,W with C a multiple of {r * r})")
        # Caffe: out[c, h * r + i, w * r + j] = in[c * r^2 + i * r + j, h, w], DepthToSpace's CRD
        self._single(layer, "DepthToSpace", x, blocksize=r, mode="CRD")

    def _Upsample(self, layer, x):
        p = layer.upsample_param  # Caffe: out[..., h, w] = in[..., h // scale, w // scale]
        ndim = len(self.shape(layer.bottom[0], layer))
        if p.dims_num != ndim or ndim not in (3, 4) or p.scale < 1:
            raise NetSpecError(f"layer {layer.name!r}: Upsample by {p.scale} with dims_num "
                               f"{p.dims_num} of a {ndim}-axis blob has no ONNX export (dims_num "
                               "the blob's 3 or 4 axes, scale >= 1)")
        axes = list(range(2, ndim))
        self._single(layer, "Resize", [x[0], "", self.g.const(f"{layer.name}/scales",
                                                              [p.scale] * len(axes))],
                     axes=axes, mode="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")

    def _BilinearInterpolate(self, layer, x):
        # Caffe: bilinear at corner-aligned (or pixel-centre) coordinates clamped to the input
        p = layer.bilinear_interpolate_param
        shape = self.shape(layer.bottom[0], layer)
        out = self.shape(layer.top[0], layer)
        sized = p.HasField("dst_h") or p.HasField("dst_w")
        if sized == p.HasField("scale_factor"):
            raise NetSpecError(f"layer {layer.name!r}: BilinearInterpolate needs dst_h/dst_w or "
                               "scale_factor, not both nor neither (Caffe leaves the size unset)")
        if len(shape) != 4 or min(shape[2:]) < 2 or (p.align_corners and min(out[2:]) < 2):
            raise NetSpecError(f"layer {layer.name!r}: BilinearInterpolate of {list(shape)} to "
                               f"{list(out)} has no ONNX export (N,C,H,W of at least 2x2, and "
                               "2x2 out with align_corners, where Caffe reads outside the input "
                               "or divides by zero)")
        self._single(layer, "Resize", [x[0], "", "", self.g.const(f"{layer.name}/sizes",
                                                                  out[2:], np.int64)],
                     axes=[2, 3], mode="linear", coordinate_transformation_mode=(
                         "align_corners" if p.align_corners else "half_pixel"))

    def _Resize(self, layer, x):
        # Caffe: bilinear at out_index * in / out, a neighbour past the last row or column 0:
        # zero-pad one row and column, resize by out / in (not clamped there), cut to out.
        shape = self.shape(layer.bottom[0], layer)
        out = self.shape(layer.top[0], layer)
        if len(shape) != 4:
            raise NetSpecError(f"layer {layer.name!r}: Resize of a {len(shape)}-axis blob has "
                               "no ONNX export (N,C,H,W)")
        name = layer.name
        padded, resized = self.g.temp(name, "pad"), self.g.temp(name, "resize")
        self.g.node("Pad", [x[0], self.g.const(f"{name}/pads", [0, 0, 0, 0, 0, 0, 1, 1],
                                               np.int64)], [padded], f"{name}/pad")
        self.g.node("Resize", [padded, "", self.g.const(f"{name}/scales", [
            o / n for o, n in zip(out[2:], shape[2:])])], [resized], f"{name}/resize",
            axes=[2, 3], mode="linear", coordinate_transformation_mode="asymmetric")
        self._single(layer, "Slice",
                     [resized, *self.g.slice_inputs(name, [0, 0], out[2:], [2, 3])])

    def _Pad(self, layer, x):
        p = layer.pad_param
        shape = self.shape(layer.bottom[0], layer)
        pads = [p.pad_u, p.pad_l, p.pad_d, p.pad_r]  # H, W begins, then ends
        cropped = all(v < 0 for v in pads)  # Caffe crops when all four are negative
        if len(shape) != 4 or (not cropped and min(pads) < 0):
            raise NetSpecError(f"layer {layer.name!r}: Pad of a {len(shape)}-axis blob by "
                               f"{pads} (up, left, down, right) has no ONNX export (N,C,H,W, "
                               "the pads all >= 0 or all < 0)")
        if p.pad_type == p.REFLECT and not cropped and (
                max(p.pad_u, p.pad_d) >= shape[2] or max(p.pad_l, p.pad_r) >= shape[3]):
            raise NetSpecError(f"layer {layer.name!r}: REFLECT pads {pads} reach past the "
                               f"{list(shape[2:])} input, where Caffe reads unset values")
        mode = "constant" if cropped else {p.CONSTANT: "constant", p.REPLICATE: "edge",
                                           p.REFLECT: "reflect"}[p.pad_type]
        inputs = [x[0], self.g.const(f"{layer.name}/pads", [0, 0, *pads[:2], 0, 0, *pads[2:]],
                                     np.int64)]
        if mode == "constant":
            inputs.append(self.g.const(f"{layer.name}/value", p.pad_value))
        self._single(layer, "Pad", inputs, mode=mode)

    def _ReLU(self, layer, x):
        slope = layer.relu_param.negative_slope
        if slope:
            return self._single(layer, "LeakyRelu", x, alpha=slope)
        self._single(layer, "Relu", x)

    def _ReLU6(self, layer, x):
        p = layer.relu6_param
        if p.negative_slope:
            raise NetSpecError(f"layer {layer.name!r}: ReLU6 with a negative_slope has no "
                               "ONNX export")
        self._single(layer, "Clip", [x[0], self.g.const(f"{layer.name}/min", 0.0),
                                     self.g.const(f"{layer.name}/max", p.threshold)])

    def _PReLU(self, layer, x):
        (slope,) = self.blobs(layer, 1)
        ndim = len(self.shape(layer.bottom[0], layer))
        shape = (1,) if layer.prelu_param.channel_shared else _broadcast_shape(
            slope.shape, 1, ndim)
        self._single(layer, "PRelu", [x[0], self.g.const(f"{layer.name}/slope",
                                                         slope.reshape(shape))])

    def _ELU(self, layer, x):
        self._single(layer, "Elu", x, alpha=layer.elu_param.alpha)

    def _Sigmoid(self, layer, x):
        self._single(layer, "Sigmoid", x)

    def _TanH(self, layer, x):
        self._single(layer, "Tanh", x)

    def _AbsVal(self, layer, x):
        self._single(layer, "Abs", x)

    def _Threshold(self, layer, x):
        above = self.g.temp(layer.name, "above")
        self.g.node("Greater", [x[0], self.g.const(f"{layer.name}/threshold",
                                                   layer.threshold_param.threshold)],
                    [above], f"{layer.name}/above")
        self._single(layer, "Cast", [above], to=TensorProto.FLOAT)

    def _Power(self, layer, x):
        p = layer.power_param  # (shift + scale * x) ^ power
        steps = [("Mul", p.scale)] if p.scale != 1 else []
        steps += [("Add", p.shift)] if p.shift != 0 else []
        steps += [("Pow", p.power)] if p.power != 1 else []
        self._chain(layer, x[0], steps)

    def _Exp(self, layer, x):
        p = layer.exp_param  # Caffe: base^shift * exp(log(base) * scale * x)
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        inner = np.float32(log_base) * np.float32(p.scale)
        steps = [("Mul", inner)] if inner != 1 else []
        steps.append(("Exp", None))
        if p.shift != 0:
            steps.append(("Mul", np.float32(p.base) ** np.float32(p.shift)
                          if p.base != -1 else np.exp(np.float32(p.shift))))
        self._chain(layer, x[0], steps)

    def _Log(self, layer, x):
        p = layer.log_param  # Caffe: log(shift + scale * x) / log(base)
        steps = [("Mul", p.scale)] if p.scale != 1 else []
        steps += [("Add", p.shift)] if p.shift != 0 else []
        steps.append(("Log", None))
        if p.base != -1:
            steps.append(("Mul", np.float32(1) / np.float32(math.log(p.base))))
        self._chain(layer, x[0], steps)

    def _BNLL(self, layer, x):
        # Caffe: x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x)) == relu(x) + log(1 + exp(-|x|))
        name = layer.name
        relu, absolute, negative, exp, plus, log = (
            self.g.temp(name, w) for w in ("relu", "abs", "neg", "exp", "plus", "log"))
        self.g.node("Relu", x, [relu], f"{name}/relu")
        self.g.node("Abs", x, [absolute], f"{name}/abs")
        self.g.node("Neg", [absolute], [negative], f"{name}/neg")
        self.g.node("Exp", [negative], [exp], f"{name}/exp")
        self.g.node("Add", [exp, self.g.const(f"{name}/one", 1.0)], [plus], f"{name}/plus")
        self.g.node("Log", [plus], [log], f"{name}/log")
        self._single(layer, "Add", [relu, log])

    def _HardSigmoid(self, layer, x):  # Caffe: max(0, min(1, alpha * x + beta))
        p = layer.hardsigmoid_param
        self._single(layer, "HardSigmoid", x, alpha=p.alpha, beta=p.beta)

    def _HardSwish(self, layer, x):  # Caffe: x * max(0, min(1, x / 6 + 0.5))
        self._single(layer, "HardSwish", x)

    def _Softmax(self, layer, x):
        ndim = len(self.shape(layer.bottom[0], layer))
        self._single(layer, "Softmax", x, axis=self.axis(layer.softmax_param.axis, ndim, layer))

    def _BatchNorm(self, layer, x):
        p = layer.batch_norm_param
        if p.HasField("use_global_stats") and not p.use_global_stats:
            raise NetSpecError(f"layer {layer.name!r}: BatchNorm with use_global_stats: false "
                               "normalizes by each batch's own statistics; an exported net "
                               "needs the stored ones (remove the setting for deploy)")
        mean, var, factor = self.blobs(layer, 3)
        f = factor.reshape(-1)[0]
        scale = np.float32(0) if f == 0 else np.float32(1) / f
        channels = mean.size
        name = layer.name
        self._single(layer, "BatchNormalization", [
            x[0], self.g.const(f"{name}/gamma", np.ones(channels)),
            self.g.const(f"{name}/beta", np.zeros(channels)),
            self.g.const(f"{name}/mean", mean.reshape(-1) * scale),
            self.g.const(f"{name}/var", var.reshape(-1) * scale)], epsilon=p.eps)

    def _MVN(self, layer, x):
        # Caffe: (x - mean) / (sqrt(mean((x - mean)^2)) + eps), means over H,W (C,H,W across
        # channels), of its N,C,H,W view of the blob
        p = layer.mvn_param
        name = layer.name
        view = self.shape(layer.top[0], layer)
        source = x[0]
        if self.shape(layer.bottom[0], layer) != view:
            source = self.g.temp(name, "view")
            self.reshape(x[0], view, source, layer, "view")
        axes = self.g.const(f"{name}/axes", [1, 2, 3] if p.across_channels else [2, 3], np.int64)
        mean = self.g.temp(name, "mean")
        self.g.node("ReduceMean", [source, axes], [mean], f"{name}/mean")
        if not p.normalize_variance:
            return self._single(layer, "Sub", [source, mean])
        centered, square, variance, std, shifted = (
            self.g.temp(name, w) for w in ("centered", "square", "variance", "std", "eps"))
        self.g.node("Sub", [source, mean], [centered], f"{name}/centered")
        self.g.node("Mul", [centered, centered], [square], f"{name}/square")
        self.g.node("ReduceMean", [square, axes], [variance], f"{name}/variance")
        self.g.node("Sqrt", [variance], [std], f"{name}/std")
        self.g.node("Add", [std, self.g.const(f"{name}/eps_c", p.eps)], [shifted], f"{name}/eps")
        self._single(layer, "Div", [centered, shifted])

    def _Normalize(self, layer, x):
        # Caffe (SSD): x / sqrt(sum of x^2 over C,H,W (over C without across_spatial) + eps)
        # * scale (one value, or one per channel)
        p = layer.norm_param
        (scale,) = self.blobs(layer, 1)
        ndim = len(self.shape(layer.bottom[0], layer))
        name = layer.name
        axes = list(range(1, ndim)) if p.across_spatial else [1]
        square, total, shifted, norm, normed = (
            self.g.temp(name, w) for w in ("square", "sum", "eps", "norm", "normed"))
        self.g.node("Mul", [x[0], x[0]], [square], f"{name}/square")
        self.g.node("ReduceSum", [square, self.g.const(f"{name}/axes", axes, np.int64)],
                    [total], f"{name}/sum")
        self.g.node("Add", [total, self.g.const(f"{name}/eps_c", p.eps)], [shifted],
                    f"{name}/eps")
        self.g.node("Sqrt", [shifted], [norm], f"{name}/norm")
        self.g.node("Div", [x[0], norm], [normed], f"{name}/normed")
        factor = scale.reshape(()) if p.channel_shared else scale.reshape(
            _broadcast_shape(scale.shape, 1, ndim))
        self._single(layer, "Mul", [normed, self.g.const(f"{name}/scale", factor)])

    def _affine(self, layer, x, op: str, param, learned: np.ndarray | None, bias=None):
        """Scale (``Mul``) or Bias (``Add``) of bottom 0 by a learned blob or bottom 1, over
        ``param.axis`` .. ``axis + num_axes``."""
        shape = self.shape(layer.bottom[0], layer)
        axis = self.axis(param.axis, len(shape), layer)
        name = layer.name
        if learned is not None:
            factor = self.g.const(f"{name}/{op.lower()}", learned.reshape(
                _broadcast_shape(learned.shape, axis, len(shape))))
        else:
            other = self.shape(layer.bottom[1], layer)
            if axis != 0 and len(other) + axis != len(shape):
                raise NetSpecError(f"layer {name!r}: a second bottom of shape {list(other)} "
                                   f"at axis {axis} has no ONNX export (axis 0, or a blob "
                                   "ending at the last axis)")
            factor = x[1]
            if axis == 0 and len(other) < len(shape):
                factor = self.g.temp(name, "factor")
                self.reshape(x[1], _broadcast_shape(other, 0, len(shape)), factor, layer,
                             "factor")
        if bias is None:
            return self._single(layer, op, [x[0], factor])
        scaled = self.g.temp(name, "scaled")
        self.g.node(op, [x[0], factor], [scaled], f"{name}/scaled")
        self._single(layer, "Add", [scaled, self.g.const(f"{name}/bias", bias.reshape(
            _broadcast_shape(bias.shape, axis, len(shape))))])

    def _Scale(self, layer, x):
        p = layer.scale_param
        learned = len(layer.bottom) == 1
        blobs = self.blobs(layer, int(learned) + int(p.bias_term))
        self._affine(layer, x, "Mul", p, blobs[0] if learned else None,
                     blobs[-1] if p.bias_term else None)

    def _Bias(self, layer, x):
        learned = len(layer.bottom) == 1
        blobs = self.blobs(layer, int(learned))
        self._affine(layer, x, "Add", layer.bias_param, blobs[0] if learned else None)

    def _Eltwise(self, layer, x):
        p = layer.eltwise_param
        name = layer.name
        if p.operation == p.PROD:
            product = x[0]
            for i, other in enumerate(x[1:], 1):
                if i == len(x) - 1:
                    return self._single(layer, "Mul", [product, other])
                step = self.g.temp(name, f"prod{i}")
                self.g.node("Mul", [product, other], [step], f"{name}/prod{i}")
                product = step
        if p.operation == p.MAX:
            return self._single(layer, "Max", x)
        if p.coeff and len(p.coeff) != len(x):
            raise NetSpecError(f"layer {name!r}: Eltwise SUM has {len(p.coeff)} coeffs for "
                               f"{len(x)} bottoms")
        terms = []
        for i, (tensor, coeff) in enumerate(zip(x, list(p.coeff) or [1.0] * len(x))):
            if coeff != 1:
                scaled = self.g.temp(name, f"term{i}")
                self.g.node("Mul", [tensor, self.g.const(f"{name}/coeff{i}", coeff)], [scaled],
                            f"{name}/term{i}")
                tensor = scaled
            terms.append(tensor)
        self._single(layer, "Sum", terms)

    def _Concat(self, layer, x):
        p = layer.concat_param
        ndim = len(self.shape(layer.bottom[0], layer))
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        self._single(layer, "Concat", x, axis=self.axis(axis, ndim, layer))

    def _Slice(self, layer, x):
        p = layer.slice_param
        shape = self.shape(layer.bottom[0], layer)
        axis = self.past_batch(p.slice_dim if p.HasField("slice_dim") else p.axis, len(shape),
                               layer)
        sizes = [self.shape(t, layer)[axis] for t in layer.top]
        tops = [self.g.top(t, layer.name) for t in layer.top]
        self.g.node("Split", [x[0], self.g.const(f"{layer.name}/split", sizes, np.int64)], tops,
                    layer.name, axis=axis)
        self.g.tensor.update(zip(layer.top, tops))

    def _Split(self, layer, x):
        for i, blob in enumerate(layer.top):
            top = self.g.top(blob, layer.name)
            self.g.node("Identity", x, [top], f"{layer.name}/{i}")
            self.g.tensor[blob] = top

    def _Silence(self, layer, x):
        pass

    def _Dropout(self, layer, x):  # Caffe's TEST phase passes the data through
        self._single(layer, "Identity", x)

    def _reshaped(self, layer, x):
        self.keep_batch(layer, layer.bottom[0], layer.top[0])
        top = self.g.top(layer.top[0], layer.name)
        self.reshape(x[0], self.shape(layer.top[0], layer), top, layer, "reshape")
        self.g.tensor[layer.top[0]] = top

    _Flatten = _reshaped
    _Reshape = _reshaped
    _Unsqueeze = _reshaped  # Caffe sets its top shape once: only the net's batch size is Caffe's

    def _Crop(self, layer, x):
        p = layer.crop_param
        shape = self.shape(layer.bottom[0], layer)
        reference = self.shape(layer.bottom[1], layer)
        axis = self.past_batch(p.axis, len(shape), layer)
        axes = list(range(axis, len(shape)))
        offsets = list(p.offset) or [0]
        offsets = offsets * len(axes) if len(offsets) == 1 else offsets
        ends = [o + reference[a] for o, a in zip(offsets, axes)]
        self._single(layer, "Slice",
                     [x[0], *self.g.slice_inputs(layer.name, offsets, ends, axes)])

    def _Permute(self, layer, x):
        ndim = len(self.shape(layer.bottom[0], layer))
        order = list(layer.permute_param.order)
        order += [a for a in range(ndim) if a not in order]  # Caffe appends the axes unnamed
        if order[0] != 0:
            raise NetSpecError(f"layer {layer.name!r}: Permute order {order} moves the batch "
                               "axis; an exported net keeps its first axis as the batch")
        self._single(layer, "Transpose", x, perm=order)

    def _Tile(self, layer, x):  # Caffe: the axis..end block repeated tiles times, numpy's tile
        p = layer.tile_param
        ndim = len(self.shape(layer.bottom[0], layer))
        self.keep_batch(layer, layer.bottom[0], layer.top[0])
        repeats = [1] * ndim
        repeats[self.axis(p.axis, ndim, layer)] = p.tiles
        self._single(layer, "Tile", [x[0], self.g.const(f"{layer.name}/repeats", repeats,
                                                        np.int64)])

    def _Reduction(self, layer, x):
        # Caffe: coeff * (sum, sum of |x|, sum of x^2, or sum / count) over axes axis..end
        p = layer.reduction_param
        shape = self.shape(layer.bottom[0], layer)
        axis = self.past_batch(p.axis, len(shape), layer)  # Caffe's default, 0, is refused
        op = {p.SUM: "ReduceSum", p.ASUM: "ReduceL1", p.SUMSQ: "ReduceSumSquare",
              p.MEAN: "ReduceSum"}[p.operation]
        coeff = np.float32(p.coeff)
        if p.operation == p.MEAN:
            coeff /= np.float32(math.prod(shape[axis:]))
        name = layer.name
        axes = self.g.const(f"{name}/axes", list(range(axis, len(shape))), np.int64)
        if coeff == 1:
            return self._single(layer, op, [x[0], axes], keepdims=0)
        total = self.g.temp(name, "sum")
        self.g.node(op, [x[0], axes], [total], f"{name}/sum", keepdims=0)
        self._single(layer, "Mul", [total, self.g.const(f"{name}/coeff", coeff)])

    def _ArgMax(self, layer, x):
        # Caffe: the top_k largest along axis (without one: of all but the batch axis, shaped
        # N, 1 or 2, top_k), ties to the higher index; indices as floats, then (or instead,
        # with an axis) the values with out_max_val
        p = layer.argmax_param
        shape = self.shape(layer.bottom[0], layer)
        name = layer.name
        has_axis = p.HasField("axis")
        source = x[0]
        if has_axis:
            axis = self.past_batch(p.axis, len(shape), layer)
            dim = shape[axis]
        else:
            axis, dim, source = 1, math.prod(shape[1:]), self.g.temp(name, "flat")
            self.reshape(x[0], [shape[0], dim], source, layer, "flatten")
        top = self.g.top(layer.top[0], name)
        # TopK ties to the lower index: take the top_k of the reversed axis.
        flipped, values, flipped_index = (
            self.g.temp(name, w) for w in ("flip", "values", "flipped_index"))
        self.g.node("Slice", [source, self.g.const(f"{name}/starts", [-1], np.int64),
                              self.g.const(f"{name}/ends", [np.iinfo(np.int64).min], np.int64),
                              self.g.const(f"{name}/axes", [axis], np.int64),
                              self.g.const(f"{name}/steps", [-1], np.int64)],
                    [flipped], f"{name}/flip")
        only_values = has_axis and p.out_max_val
        self.g.node("TopK", [flipped, self.g.const(f"{name}/k", [p.top_k], np.int64)],
                    [top if only_values else values, flipped_index], f"{name}/topk", axis=axis)
        if not only_values:
            position = self.g.temp(name, "position")
            self.g.node("Sub", [self.g.const(f"{name}/last", dim - 1, np.int64), flipped_index],
                        [position], f"{name}/position")
            index = top if has_axis else self.g.temp(name, "index")
            self.g.node("Cast", [position], [index], f"{name}/index", to=TensorProto.FLOAT)
        if not has_axis:
            joined = index
            if p.out_max_val:
                joined = self.g.temp(name, "joined")
                self.g.node("Concat", [index, values], [joined], f"{name}/joined", axis=1)
            self.reshape(joined, self.shape(layer.top[0], layer), top, layer, "reshape")
        self.g.tensor[layer.top[0]] = top


EXPORTED = frozenset(name[1:] for name in vars(_Converter) if name[1:2].isupper())
"""The Caffe layer types :func:`to_onnx` writes (besides ``Input``)."""


def _input_blobs(net: caffe_pb2.NetParameter) -> list[str]:
    return [top for layer in net.layer if layer.type == "Input" for top in layer.top]


def net_outputs(net: caffe_pb2.NetParameter) -> list[str]:
    """The blobs no later layer consumes (Caffe's ``net.outputs``), in order."""
    available: dict[str, None] = {}
    for layer in net.layer:
        for bottom in layer.bottom:
            available.pop(bottom, None)
        available.update(dict.fromkeys(layer.top))
    return list(available)


def _transform_nodes(g: _Graph, data: str, stored: Sequence[int], transform,
                     pixels: bool) -> str:
    """Caffe's TEST-phase DataTransformer as nodes on the stored examples ``data``
    (N, *stored; uint8 ``pixels`` cast to float after the crop): center crop, mean image or
    values, scale. Returns the transformed tensor."""
    x = data
    window = (slice(None), slice(None), slice(None))
    if transform.crop is not None:
        h, w = transform.center(stored)
        ch, cw = transform.crop
        window = (slice(None), slice(h, h + ch), slice(w, w + cw))
        cropped = g.unique("transform/crop")
        g.node("Slice", [x, *g.slice_inputs("transform", [h, w], [h + ch, w + cw], [2, 3])],
               [cropped], "transform/crop")
        x = cropped
    if pixels:
        cast = g.unique("transform/cast")
        g.node("Cast", [x], [cast], "transform/cast", to=TensorProto.FLOAT)
        x = cast
    mean = None
    if transform.mean_image is not None:
        mean = np.asarray(transform.mean_image, np.float32)[window]
    elif transform.mean_values:
        mean = np.asarray(transform.mean_values, np.float32).reshape(-1, 1, 1)
    if mean is not None:
        centered = g.unique("transform/mean")
        g.node("Sub", [x, g.const("transform/mean_values", mean)], [centered], "transform/mean")
        x = centered
    if transform.scale != 1.0:
        scaled = g.unique("transform/scale")
        g.node("Mul", [x, g.const("transform/scale_value", np.float32(transform.scale))],
               [scaled], "transform/scale")
        x = scaled
    return x


def to_onnx(net: caffe_pb2.NetParameter, weights: Mapping[str, Sequence[np.ndarray]],
            shapes: Mapping[str, Sequence[int]], outputs: Sequence[str] | None = None,
            transform=None, stored_shape: Sequence[int] | None = None,
            name: str | None = None, pixels: bool = False,
            banded_lrn: bool = False) -> onnx.ModelProto:
    """The deploy ``net`` with ``weights`` as a checked ONNX model.

    Parameters
    ----------
    net : caffe_pb2.NetParameter
        A deploy net (from :func:`~sparknet_ml.net.parse_net`): ``Input`` layers, no data or
        loss layers.
    weights : mapping of str to list of ndarray
        Learnable blobs by layer name, in Caffe's order and shapes.
    shapes : mapping of str to tuple of int
        Every blob's shape as Caffe sets the net up (any batch size).
    outputs : sequence of str, optional
        Blobs to output (each blob's value after the last layer that writes it); by default
        the blobs no layer consumes.
    transform : sparknet_ml.engine.transform.Transform, optional
        Caffe's TEST-phase data transform (center crop, mean, scale) of the first input, as
        nodes in front of the net: the model then takes stored examples of ``stored_shape``.
    stored_shape : sequence of int, optional
        One stored example's shape (C, H, W), with ``transform``.
    name : str, optional
        The graph's name (default: the net's).
    pixels : bool
        With ``transform``: the stored examples are uint8 pixels (the model's input is uint8,
        cast to float inside the graph: a quarter of the bytes to a GPU).
    banded_lrn : bool
        Across-channel LRN layers as a 1x1 convolution with a banded weight matrix (the window
        sum) and elementwise nodes instead of ONNX's ``LRN``: the same values, what
        ``scoringBackend="onnxruntime"`` scores with (onnxruntime's CPU ``LRN`` kernel takes
        2-3x longer on CaffeNet's norm1 and norm2). Exported files keep ``LRN``.

    Returns
    -------
    onnx.ModelProto
        Opset :data:`OPSET`, passing ``onnx.checker`` and strict shape inference, every
        output's inferred shape equal to Caffe's but for the free batch axis.

    Raises
    ------
    NetSpecError
        Before anything is built: a layer type outside :data:`EXPORTED` or the allowlist,
        a setting ONNX cannot express (both naming the layer), missing or misshapen weights,
        an unknown output blob.
    """
    check_unique_names(net)
    check_layers(net)
    check_bottoms(net)
    for layer in net.layer:
        if layer.type != "Input" and layer.type not in EXPORTED:
            raise NetSpecError(f"layer {layer.name!r} has type {layer.type!r}, which has no "
                               f"ONNX export (exported types: {', '.join(sorted(EXPORTED))})")
    inputs = _input_blobs(net)
    if not inputs:
        raise NetSpecError("the net has no Input layer (export a deploy net)")
    produced = {t for layer in net.layer for t in layer.top}
    outputs = list(outputs) if outputs else net_outputs(net)
    for blob in outputs:
        if blob not in produced:
            raise NetSpecError(f"output blob {blob!r} is not a blob of the net")
    if transform is not None and stored_shape is None:
        raise ValueError("a transform needs the stored examples' shape (stored_shape)")
    if pixels and transform is None:
        raise ValueError("uint8 pixels are taken only with a transform")

    conv = _Converter(net, weights, shapes, banded_lrn)
    g = conv.g
    graph_inputs = []
    for i, blob in enumerate(inputs):
        shape = conv.shapes.get(blob)
        if shape is None:
            raise NetSpecError(f"no shape for input blob {blob!r}")
        if i == 0 and transform is not None:
            expected = transform.output_shape(stored_shape)
            if tuple(expected) != tuple(shape[1:]):
                raise NetSpecError(f"input {blob!r}: the transform gives {list(expected)} from "
                                   f"{list(stored_shape)}, the net takes {list(shape[1:])}")
            g.input(blob)  # the graph input takes the stored examples under the blob's name
            graph_inputs.append(helper.make_tensor_value_info(
                blob, TensorProto.UINT8 if pixels else TensorProto.FLOAT, [BATCH, *stored_shape]))
            top = g.top(blob, "transform")
            g.node("Identity", [_transform_nodes(g, blob, stored_shape, transform, pixels)],
                   [top], "transform")
            g.tensor[blob] = top
        else:
            g.input(blob)
            graph_inputs.append(helper.make_tensor_value_info(blob, TensorProto.FLOAT,
                                                              [BATCH, *shape[1:]]))
            g.tensor[blob] = blob
    for layer in net.layer:
        if layer.type == "Input":
            continue
        conv.convert(layer)
    graph_outputs = [helper.make_tensor_value_info(g.tensor[b], TensorProto.FLOAT,
                                                   [BATCH, *conv.shapes[b][1:]])
                     for b in outputs]
    # Every version of every blob declared with Caffe's shape: strict shape inference then
    # checks each layer's output, not only the net's.
    declared = {v.name for v in graph_inputs + graph_outputs}
    value_info = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [BATCH, *conv.shapes[b][1:]])
                  for t, b in g.versions.items() if t not in declared]
    graph = helper.make_graph(g.nodes, name or net.name or "caffe_net", graph_inputs,
                              graph_outputs, g.initializers, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sparknet_ml", ir_version=IR_VERSION)
    return _checked(model)


def _checked(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` after ``onnx.checker`` and strict shape inference, which raises where a shape
    it infers disagrees with Caffe's declared for an output (a defect of this module, not the
    user's). A model over protobuf's 2 GiB is checked as ONNX external data in a temporary
    folder (the checker takes no such message), then given its weights back."""
    data = message_bytes(model)
    if data is not None:
        onnx.checker.check_model(data)
        _inferred(lambda: onnx.shape_inference.infer_shapes(
            data, check_type=True, strict_mode=True, data_prop=True))
        return model
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
        onnx.checker.check_model(path)
        _inferred(lambda: onnx.shape_inference.infer_shapes_path(
            path, os.path.join(folder, "inferred.onnx"), check_type=True, strict_mode=True,
            data_prop=True))
        onnx.load_external_data_for_model(model, folder)
    return model


def message_bytes(model: onnx.ModelProto) -> bytes | None:
    """``model`` serialized as one protobuf message, or None when it is over the 2 GiB one
    message may hold (``onnx.checker.MAXIMUM_PROTOBUF``)."""
    try:
        data = model.SerializeToString()
    except EncodeError:  # protobuf's upb runtime cannot serialize such a message
        return None
    return data if len(data) < onnx.checker.MAXIMUM_PROTOBUF else None


def _inferred(infer) -> None:
    """Run ``infer`` (strict shape inference); its first error as an AssertionError."""
    try:
        infer()
    except onnx.shape_inference.InferenceError as err:
        first = str(err).split("Inference error(s): ")[-1].splitlines()[0]
        raise AssertionError(f"the exported graph's shapes disagree with Caffe's: "
                             f"{first}") from None
