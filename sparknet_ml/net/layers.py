"""Which Caffe layer types a net may use.

A net shipped to Spark executors must not read or write files nor run user code there.
Allowed are Caffe's compute layers (those of the pinned brocolli-caffe build that touch no
files) and the data-source types that :mod:`sparknet_ml.net.derive` replaces by an ``Input``
layer. Left out on purpose: ``Python`` (user code), ``HDF5Output`` (writes files),
``InfogainLoss`` (reads ``infogain_loss_param.source``), ``AnnotatedData``, ``VideoData``,
``DetectionOutput`` (writes results), ``DetectionEvaluate`` (reads a name/size file) and the
rest of the SSD / Faster R-CNN detection family (``PriorBox``, ``MultiBoxLoss``, ``Proposal``,
``PSROIPooling``), whose labels are not one value per example.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from caffe.proto import caffe_pb2

from .prototxt import NetSpecError

MAX_BLOB_ELEMENTS = 2 ** 28
"""Most elements of any blob shape a net states (2**28, 1 GiB of float32): Caffe allocates
blobs on first use, and aborts the process on a negative or int-overflowing dimension."""

DATA_LAYER_TYPES = frozenset({
    "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "Input", "DummyData"})

ALLOWED_LAYER_TYPES = DATA_LAYER_TYPES | frozenset({
    # vision
    "Convolution", "Deconvolution", "Pooling", "SPP", "Im2col", "LRN", "Crop", "Pad",
    "Upsample", "PixelShuffle", "MaxUnPool", "Resize", "BilinearInterpolate",
    # common
    "InnerProduct", "Dropout", "Embed", "BatchNorm", "BatchNormKyle", "Scale", "Bias", "MVN",
    "Normalize", "Softmax", "ArgMax", "Accuracy", "LSTM", "LSTMUnit", "RNN", "Parameter",
    # neurons
    "ReLU", "ReLU6", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL",
    "Threshold", "HardSigmoid", "HardSwish",
    # blob plumbing
    "Eltwise", "Concat", "Slice", "Split", "Flatten", "Reshape", "Permute", "Unsqueeze", "Tile",
    "Reduction", "Silence", "Filter", "BatchReindex",
    # losses
    "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
    "MultinomialLogisticLoss", "ContrastiveLoss", "SmoothL1Loss",
})


def check_layers(net: caffe_pb2.NetParameter) -> None:
    """Raise unless every layer of ``net`` has a type in :data:`ALLOWED_LAYER_TYPES`.

    Raises
    ------
    NetSpecError
        Naming the first layer at fault and its type.

    Examples
    --------
    >>> net = caffe_pb2.NetParameter()
    >>> net.layer.add(name="py", type="Python")  # doctest: +ELLIPSIS
    name: "py"...
    >>> check_layers(net)
    Traceback (most recent call last):
    ...
    sparknet_ml.net.prototxt.NetSpecError: layer 'py' has type 'Python', which ...
    """
    for layer in net.layer:
        if layer.type not in ALLOWED_LAYER_TYPES:
            raise NetSpecError(
                f"layer {layer.name!r} has type {layer.type!r}, which sparknet_ml does not allow "
                "(it reads or writes files, runs user code, or is not a Caffe compute layer); "
                "see sparknet_ml.net.ALLOWED_LAYER_TYPES")


def check_unique_names(net: caffe_pb2.NetParameter) -> None:
    """Raise when two layers of ``net`` (one phase's) share a name.

    Caffe keys learnable blobs by layer name: of two learnable layers named alike, one would
    never be averaged, saved or loaded (plain pycaffe refuses such a caffemodel).

    Raises
    ------
    NetSpecError
        Naming the layer and both types.
    """
    seen: dict[str, str] = {}
    for layer in net.layer:
        if layer.name in seen:
            raise NetSpecError(f"two layers are named {layer.name!r} ({seen[layer.name]} and "
                               f"{layer.type}) in the {caffe_pb2.Phase.Name(net.state.phase)} "
                               "phase; Caffe keys weights by layer name: rename one")
        seen[layer.name] = layer.type


def check_bottoms(net: caffe_pb2.NetParameter) -> None:
    """Raise unless every bottom of every layer is a top of an earlier layer.

    Raises
    ------
    NetSpecError
        Naming the first layer at fault and the missing blob.
    """
    produced = set()
    for layer in net.layer:
        for bottom in layer.bottom:
            if bottom not in produced:
                raise NetSpecError(
                    f"layer {layer.name!r}: bottom {bottom!r} is not a top of any earlier layer")
        produced.update(layer.top)


def check_blob_shape(owner: str, shape: Sequence[int]) -> None:
    """Raise unless ``shape`` has no negative dimension and at most :data:`MAX_BLOB_ELEMENTS`.

    Raises
    ------
    NetSpecError
        Naming ``owner`` (the layer or blob) and the shape.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise NetSpecError(f"{owner}: shape {dims} has a negative dimension")
    count = math.prod(dims)
    if count > MAX_BLOB_ELEMENTS:
        raise NetSpecError(f"{owner}: shape {dims} has {count} elements, over the "
                           f"{MAX_BLOB_ELEMENTS} cap (MAX_BLOB_ELEMENTS)")


def _stated_shapes(net: caffe_pb2.NetParameter):
    """(owner, shape) of every blob shape written in ``net``."""
    for layer in net.layer:
        owner = f"layer {layer.name!r} ({layer.type})"
        if layer.type == "Input":
            shapes = [s.dim for s in layer.input_param.shape]
        elif layer.type == "DummyData":
            p = layer.dummy_data_param
            legacy = (p.num, p.channels, p.height, p.width)
            shapes = [s.dim for s in p.shape] + [
                [r[min(i, len(r) - 1)] if r else 0 for r in legacy]
                for i in range(max(len(r) for r in legacy))]
        elif layer.type == "MemoryData":
            p = layer.memory_data_param
            shapes = [(p.batch_size, p.channels, p.height, p.width)]
        elif layer.type == "Parameter":
            shapes = [layer.parameter_param.shape.dim]
        else:
            shapes = []
        for shape in shapes:
            yield owner, shape


def check_blob_shapes(net: caffe_pb2.NetParameter) -> None:
    """Raise unless every blob shape ``net`` states passes :func:`check_blob_shape`.

    Checked: ``Input`` (also legacy ``input_dim`` fields, which :func:`~sparknet_ml.net.parse_net`
    upgrades into one) and ``DummyData`` shapes, ``MemoryData`` batch shapes and ``Parameter``
    shapes, in every phase.

    Raises
    ------
    NetSpecError
        Naming the first layer at fault and the shape.
    """
    for owner, shape in _stated_shapes(net):
        check_blob_shape(owner, shape)
