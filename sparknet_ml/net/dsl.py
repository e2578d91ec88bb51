"""The Python twin of SparkNet's Scala net DSL: functions that build ``caffe_pb2`` layers.

As in SparkNet, each layer has one top named like the layer, and an ``RDDLayer`` is an input
fed by the caller (here an ``Input`` layer, which :func:`~sparknet_ml.net.derive.train_net`
replaces like any data layer).

>>> net = NetParam("tiny",
...     RDDLayer("data", shape=[8, 4]), RDDLayer("label", shape=[8, 1]),
...     InnerProductLayer("ip", ["data"], numOutput=3),
...     SoftmaxWithLoss("loss", ["ip", "label"]))
>>> [(layer.name, layer.type, list(layer.bottom)) for layer in net.layer][2:]
[('ip', 'InnerProduct', ['data']), ('loss', 'SoftmaxWithLoss', ['ip', 'label'])]
"""
from __future__ import annotations

import enum
from collections.abc import Sequence

from caffe.proto import caffe_pb2

from .layers import check_bottoms
from .prototxt import NetSpecError

Filler = caffe_pb2.FillerParameter | str | None


class Pooling(enum.IntEnum):
    """Pooling methods of :func:`PoolingLayer`."""

    Max = caffe_pb2.PoolingParameter.MAX
    Average = caffe_pb2.PoolingParameter.AVE


def NetParam(name: str, *layers: caffe_pb2.LayerParameter) -> caffe_pb2.NetParameter:
    """Return a net of ``layers`` in order.

    Raises
    ------
    NetSpecError
        When a layer's bottom is not the top of an earlier layer.
    """
    net = caffe_pb2.NetParameter(name=name, layer=layers)
    check_bottoms(net)
    return net


def _layer(name: str, type_: str, bottom: Sequence[str], **fields) -> caffe_pb2.LayerParameter:
    """A layer with top ``name``; a single bottom may be given as a str."""
    bottoms = [bottom] if isinstance(bottom, str) else list(bottom)
    return caffe_pb2.LayerParameter(name=name, type=type_, bottom=bottoms, top=[name], **fields)


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` from an int or a pair."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 0 for v in pair):
        raise NetSpecError(f"layer {name!r}: expected an int or an (h, w) pair of ints, got {value!r}")
    return pair


def _hw(pair: tuple[int, int]) -> list[int]:
    """Caffe's repeated spatial field: one value when h == w."""
    return [pair[0]] if pair[0] == pair[1] else list(pair)


def _learnable(weightFiller: Filler, biasFiller: Filler) -> dict:
    """Filler fields for a ``**``: a type name, a FillerParameter, or None for Caffe's default."""
    fillers = {"weight_filler": weightFiller, "bias_filler": biasFiller}
    return {key: caffe_pb2.FillerParameter(type=spec) if isinstance(spec, str) else spec
            for key, spec in fillers.items() if spec is not None}


def _set_hw(param: caffe_pb2.PoolingParameter, prefix: str, pair: tuple[int, int]) -> None:
    """Set ``kernel_size``/``stride``/``pad`` when h == w, else ``<prefix>_h`` and ``<prefix>_w``."""
    if pair[0] == pair[1]:
        setattr(param, "kernel_size" if prefix == "kernel" else prefix, pair[0])
    else:
        setattr(param, f"{prefix}_h", pair[0])
        setattr(param, f"{prefix}_w", pair[1])


def RDDLayer(name: str, shape: Sequence[int]) -> caffe_pb2.LayerParameter:
    """An input blob ``name`` of ``shape`` (batch first), fed from the DataFrame."""
    dims = list(shape)
    if not dims or any(not isinstance(d, int) or d < 1 for d in dims):
        raise NetSpecError(
            f"layer {name!r}: shape must be a non-empty list of positive ints, got {shape!r}")
    return caffe_pb2.LayerParameter(
        name=name, type="Input", top=[name],
        input_param=caffe_pb2.InputParameter(shape=[caffe_pb2.BlobShape(dim=dims)]))


def ConvolutionLayer(name: str, bottom: Sequence[str], kernel: int | Sequence[int], numOutput: int,
                     stride: int | Sequence[int] = (1, 1), pad: int | Sequence[int] = (0, 0),
                     weightFiller: Filler = "xavier",
                     biasFiller: Filler = "constant") -> caffe_pb2.LayerParameter:
    """A 2-D convolution with ``numOutput`` filters of size ``kernel`` (an int or ``(h, w)``).

    ``weightFiller``/``biasFiller`` are a filler type name, a ``caffe_pb2.FillerParameter`` or
    None for Caffe's default; weights learn at the base rate, biases at twice it.
    """
    param = caffe_pb2.ConvolutionParameter(num_output=numOutput, kernel_size=_hw(_pair(name, kernel)),
                                           stride=_hw(_pair(name, stride)),
                                           **_learnable(weightFiller, biasFiller))
    if any(_pair(name, pad)):
        param.pad.extend(_hw(_pair(name, pad)))
    return _layer(name, "Convolution", bottom, convolution_param=param,
                  param=[caffe_pb2.ParamSpec(lr_mult=1), caffe_pb2.ParamSpec(lr_mult=2)])


def PoolingLayer(name: str, bottom: Sequence[str], pooling: Pooling, kernel: int | Sequence[int],
                 stride: int | Sequence[int] = (1, 1),
                 pad: int | Sequence[int] = (0, 0)) -> caffe_pb2.LayerParameter:
    """Max or average pooling over ``kernel`` windows."""
    param = caffe_pb2.PoolingParameter(pool=Pooling(pooling).value)
    _set_hw(param, "kernel", _pair(name, kernel))
    _set_hw(param, "stride", _pair(name, stride))
    if any(_pair(name, pad)):
        _set_hw(param, "pad", _pair(name, pad))
    return _layer(name, "Pooling", bottom, pooling_param=param)


def InnerProductLayer(name: str, bottom: Sequence[str], numOutput: int, weightFiller: Filler = "xavier",
                      biasFiller: Filler = "constant") -> caffe_pb2.LayerParameter:
    """A fully connected layer with ``numOutput`` outputs; fillers as :func:`ConvolutionLayer`."""
    param = caffe_pb2.InnerProductParameter(num_output=numOutput, **_learnable(weightFiller, biasFiller))
    return _layer(name, "InnerProduct", bottom, inner_product_param=param,
                  param=[caffe_pb2.ParamSpec(lr_mult=1), caffe_pb2.ParamSpec(lr_mult=2)])


def ReLULayer(name: str, bottom: Sequence[str]) -> caffe_pb2.LayerParameter:
    """Rectified linear unit."""
    return _layer(name, "ReLU", bottom)


def SigmoidLayer(name: str, bottom: Sequence[str]) -> caffe_pb2.LayerParameter:
    """Logistic sigmoid."""
    return _layer(name, "Sigmoid", bottom)


def TanHLayer(name: str, bottom: Sequence[str]) -> caffe_pb2.LayerParameter:
    """Hyperbolic tangent."""
    return _layer(name, "TanH", bottom)


def SoftmaxLayer(name: str, bottom: Sequence[str]) -> caffe_pb2.LayerParameter:
    """Softmax over the channel axis."""
    return _layer(name, "Softmax", bottom)


def DropoutLayer(name: str, bottom: Sequence[str], ratio: float = 0.5) -> caffe_pb2.LayerParameter:
    """Dropout of a fraction ``ratio`` of the units while training."""
    return _layer(name, "Dropout", bottom, dropout_param=caffe_pb2.DropoutParameter(dropout_ratio=ratio))


def ConcatLayer(name: str, bottom: Sequence[str], axis: int = 1) -> caffe_pb2.LayerParameter:
    """Concatenation of the bottoms along ``axis``."""
    return _layer(name, "Concat", bottom, concat_param=caffe_pb2.ConcatParameter(axis=axis))


def AccuracyLayer(name: str, bottom: Sequence[str]) -> caffe_pb2.LayerParameter:
    """Top-1 accuracy of the scores ``bottom[0]`` against the labels ``bottom[1]``."""
    return _layer(name, "Accuracy", bottom)


def SoftmaxWithLoss(name: str, bottom: Sequence[str]) -> caffe_pb2.LayerParameter:
    """Softmax cross-entropy of the scores ``bottom[0]`` against the labels ``bottom[1]``."""
    return _layer(name, "SoftmaxWithLoss", bottom)
