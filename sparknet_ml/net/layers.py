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

from caffe.proto import caffe_pb2

from .prototxt import NetSpecError

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


def check_bottoms(net: caffe_pb2.NetParameter) -> None:
    """Raise unless every bottom of every layer is a top of an earlier layer.

    Raises
    ------
    NetSpecError
        Naming the first layer at fault and the missing blob.
    """
    produced = set(net.input)
    for layer in net.layer:
        for bottom in layer.bottom:
            if bottom not in produced:
                raise NetSpecError(
                    f"layer {layer.name!r}: bottom {bottom!r} is not a top of any earlier layer")
        produced.update(layer.top)
