"""Training and deployment nets derived from one user net (SparkNet's ``replaceDataLayers``).

A user's net reads its examples through data layers (``Data`` from LMDB, ``Input``, ...).
sparknet_ml feeds batches itself, so every data layer becomes one ``Input`` layer named
``data`` whose tops are the data blob and, for training, the label blob. Each function takes
anything :func:`~sparknet_ml.net.prototxt.parse_net` reads and never changes its argument.
"""
from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence

import numpy as np
from caffe.proto import caffe_pb2

from ..engine.transform import Transform
from .layers import (DATA_LAYER_TYPES, check_blob_shape, check_bottoms, check_layers,
                     check_unique_names)
from .prototxt import NetSpecError, parse_net

# Data layers that apply their transform_param to what they read; the others ignore it.
_TRANSFORMING_TYPES = {"Data": "data_param", "ImageData": "image_data_param",
                       "MemoryData": None, "WindowData": "window_data_param"}
# Fields of the layer's own parameter that Caffe's upgrade moves into transform_param.
_LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
# Layer parameters whose ``engine`` chooses Caffe's own implementation or cuDNN's.
_ENGINE_FIELDS = ("convolution_param", "pooling_param", "lrn_param", "relu_param",
                  "sigmoid_param", "softmax_param", "tanh_param")
# TransformationParameter fields of this Caffe (SSD's resize, noise and box constraints) that
# sparknet_ml does not apply: refused rather than ignored.
_UNSUPPORTED_TRANSFORM_FIELDS = ("old_resize_param", "noise_param", "emit_constraint")


@dataclasses.dataclass(frozen=True)
class DeployNet:
    """A net for scoring, with the blob to read predictions from.

    Attributes
    ----------
    net : caffe_pb2.NetParameter
        TEST-phase net fed by one ``Input`` layer ``data``, with no loss or label consumers.
    output_blob : str
        The blob holding predictions: class scores when ``classification``.
    classification : bool
        True when the training loss takes a class index (:data:`CLASS_INDEX_LOSSES`).
    probabilities : bool
        The output already holds class probabilities (``MultinomialLogisticLoss`` reads a
        Softmax's output), not logits.
    """

    net: caffe_pb2.NetParameter
    output_blob: str
    classification: bool
    probabilities: bool = False


CLASS_INDEX_LOSSES = ("SoftmaxWithLoss", "HingeLoss", "MultinomialLogisticLoss")
"""Losses whose label is a class index: their nets classify (labels checked in [0, classes),
prediction = argmax)."""


def _meets_rule(rule: caffe_pb2.NetStateRule, phase: int, level: int, stages: Sequence[str]) -> bool:
    """Caffe's ``Net::StateMeetsRule``."""
    return ((not rule.HasField("phase") or rule.phase == phase)
            and (not rule.HasField("min_level") or level >= rule.min_level)
            and (not rule.HasField("max_level") or level <= rule.max_level)
            and all(s in stages for s in rule.stage)
            and not any(s in stages for s in rule.not_stage))


def filter_phase(net, phase: int, level: int = 0, stages: Sequence[str] = ()) -> caffe_pb2.NetParameter:
    """Keep the layers that Caffe's ``Net::FilterNet`` keeps for a state.

    Parameters
    ----------
    net : str, os.PathLike or caffe_pb2.NetParameter
        The net.
    phase : int
        ``caffe_pb2.TRAIN`` or ``caffe_pb2.TEST``.
    level, stages : int, sequence of str
        The rest of the NetState, as ``caffe.Net(..., level=, stages=)`` takes them.

    Returns
    -------
    caffe_pb2.NetParameter
        A copy with the admitted layers, their include/exclude rules removed (the result is
        the same net in any phase), and ``state`` set to the given one.
    """
    if phase not in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        raise NetSpecError(f"phase must be caffe_pb2.TRAIN or caffe_pb2.TEST, got {phase!r}")
    source = parse_net(net)
    kept = []
    for layer in source.layer:
        if layer.include and layer.exclude:
            raise NetSpecError(
                f"layer {layer.name!r}: specify either include or exclude rules, not both")
        if layer.include:
            admitted = any(_meets_rule(r, phase, level, stages) for r in layer.include)
        else:
            admitted = not any(_meets_rule(r, phase, level, stages) for r in layer.exclude)
        if admitted:
            layer.ClearField("include")
            layer.ClearField("exclude")
            kept.append(layer)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(source)
    out.ClearField("layer")
    out.layer.extend(kept)
    out.state.Clear()
    out.state.phase = phase
    out.state.level = level
    out.state.stage.extend(stages)
    return out


def _data_layers(net: caffe_pb2.NetParameter) -> list[caffe_pb2.LayerParameter]:
    return [layer for layer in net.layer if layer.type in DATA_LAYER_TYPES]


def _data_tops(net: caffe_pb2.NetParameter) -> tuple[str, str | None]:
    tops = list(dict.fromkeys(top for layer in _data_layers(net) for top in layer.top))
    if not tops:
        raise NetSpecError(f"net {net.name!r} has no data layer "
                           f"(one of {', '.join(sorted(DATA_LAYER_TYPES))})")
    if len(tops) > 2:
        raise NetSpecError(f"net {net.name!r}: its data layers give {len(tops)} blobs {tops}; "
                           "sparknet_ml feeds a data blob and at most a label blob "
                           "(filter the net by phase first?)")
    return tops[0], (tops[1] if len(tops) == 2 else None)


def data_layer_tops(net) -> tuple[str, str | None]:
    """Return the data blob and the label blob (or None) that the net's data layers produce.

    The first top of the data layers (in order, legacy ``input`` fields first) is the data,
    the second distinct top, if any, the label: ``Data`` with tops data/label and a pair of
    ``Input`` layers ``data`` and ``label`` give the same answer. Filter by phase first when
    TRAIN and TEST data layers name their tops differently.

    Raises
    ------
    NetSpecError
        When there is no data layer or the data layers give more than two blobs.
    """
    return _data_tops(parse_net(net))


def _example_shape(layer: caffe_pb2.LayerParameter, index: int) -> tuple[int, ...] | None:
    """The shape of one example of top ``index`` of data layer ``layer``, when the layer says it."""
    def pick(repeated):
        if len(repeated) == 1:
            return repeated[0]
        return repeated[index] if index < len(repeated) else None

    if layer.type == "Input" and layer.input_param.shape:
        shape = pick(layer.input_param.shape)
        return tuple(shape.dim[1:]) if shape is not None and shape.dim else None
    if layer.type == "DummyData":
        p = layer.dummy_data_param
        if p.shape:
            shape = pick(p.shape)
            return tuple(shape.dim[1:]) if shape is not None and shape.dim else None
        if p.channels and p.height and p.width:
            return (pick(p.channels), pick(p.height), pick(p.width))
    if layer.type == "MemoryData" and index == 0:
        p = layer.memory_data_param
        if p.channels and p.height and p.width:
            return (p.channels, p.height, p.width)
    if layer.type == "ImageData" and index == 0:
        p = layer.image_data_param
        if p.new_height and p.new_width:  # the stored example; the crop is the net's input
            return (3 if p.is_color else 1, p.new_height, p.new_width)
    return None


def infer_input_shape(net) -> tuple[int, ...] | None:
    """Return the shape of one example of the data blob (e.g. C, H, W), or None when unknown.

    Read from an ``Input`` layer's ``input_param.shape``, ``DummyData`` shapes, ``MemoryData``
    channels/height/width, or ``ImageData``'s resize size (``new_height``/``new_width``; legacy
    ``input_shape``/``input_dim`` net fields are an ``Input`` layer once :func:`parse_net` upgraded
    them); the first (batch) dimension is dropped. ``Data`` and ``HDF5Data`` layers do not say
    their shape.
    """
    net = parse_net(net)
    data_top, _ = _data_tops(net)
    for layer in _data_layers(net):
        if data_top in layer.top:
            shape = _example_shape(layer, list(layer.top).index(data_top))
            if shape is not None:
                return shape
    return None


def _float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (Caffe stores these as float)."""
    for digits in range(1, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("f", short) == struct.pack("f", value):
            return short
    return value


def data_transform(net, phase: int) -> tuple[str | None, caffe_pb2.TransformationParameter]:
    """Return the ``transform_param`` the data layers of ``phase`` apply to the data blob.

    Parameters
    ----------
    net : str, os.PathLike or caffe_pb2.NetParameter
        The user's net (filtered here to ``phase``).
    phase : int
        ``caffe_pb2.TRAIN`` or ``caffe_pb2.TEST``: CaffeNet mirrors in TRAIN only.

    Returns
    -------
    layer : str or None
        The data layer it comes from (None when no layer transforms: ``Input``, ``HDF5Data``).
    param : caffe_pb2.TransformationParameter
        A copy; empty when no layer transforms.

    Raises
    ------
    NetSpecError
        Naming the layer: both ``mean_file`` and ``mean_value`` (Caffe CHECK-fails), both
        ``force_color`` and ``force_gray``, ``crop_h`` without ``crop_w``, resize, noise or
        annotation fields sparknet_ml does not apply, legacy transform fields in the layer's
        own parameter, or data layers of one phase that transform differently.
    """
    net = filter_phase(net, phase)
    data_top, _ = _data_tops(net)
    found, name = None, None
    for layer in _data_layers(net):
        if layer.type not in _TRANSFORMING_TYPES or data_top not in layer.top:
            continue
        own = _TRANSFORMING_TYPES[layer.type]
        for field in _LEGACY_TRANSFORM_FIELDS if own else ():
            if getattr(layer, own).HasField(field):
                raise NetSpecError(f"layer {layer.name!r}: {own}.{field} is deprecated; move it to "
                                   "transform_param (Caffe's tools/upgrade_net_proto_text does)")
        t = layer.transform_param
        for field in _UNSUPPORTED_TRANSFORM_FIELDS:
            if t.HasField(field):
                raise NetSpecError(f"layer {layer.name!r}: transform_param.{field} is not "
                                   "supported (sparknet_ml applies crop, mirror, mean and scale)")
        if t.HasField("mean_file") and t.mean_value:
            raise NetSpecError(f"layer {layer.name!r}: transform_param has both mean_file "
                               f"{t.mean_file!r} and mean_value; Caffe takes one of them")
        if t.force_color and t.force_gray:
            raise NetSpecError(f"layer {layer.name!r}: transform_param has both force_color "
                               "and force_gray")
        if not t.crop_size and bool(t.crop_h) != bool(t.crop_w):
            raise NetSpecError(f"layer {layer.name!r}: transform_param sets only one of crop_h "
                               f"({t.crop_h}) and crop_w ({t.crop_w})")
        if found is not None and found.SerializeToString(deterministic=True) != \
                t.SerializeToString(deterministic=True):
            raise NetSpecError(f"layers {name!r} and {layer.name!r} transform the data "
                               "differently in one phase; sparknet_ml applies one transform "
                               "per phase")
        found, name = t, layer.name
    out = caffe_pb2.TransformationParameter()
    if found is not None:
        out.CopyFrom(found)
    return name, out


def resolve_transform(layer: str | None, param: caffe_pb2.TransformationParameter,
                      input_shape: Sequence[int], mean_image=None,
                      mean_source: str | None = None) -> Transform:
    """Check one phase's ``transform_param`` against the stored example and resolve it.

    Parameters
    ----------
    layer, param :
        As :func:`data_transform` returns them.
    input_shape : sequence of int
        The stored example's shape (``inputShape``), e.g. ``(3, 256, 256)``.
    mean_image : ndarray, optional
        The mean blob read from ``mean_source`` (the layer's ``mean_file`` or ``meanFile``).
    mean_source : str, optional
        Where ``mean_image`` came from, for messages.

    Raises
    ------
    NetSpecError
        Naming the layer (and the mean file): a crop larger than the example, a crop or
        mirror of an example that is not (C, H, W), a mean_value count that is neither 1 nor
        C, a mean image of another shape than the example, force_color/force_gray where the
        examples do not already have 3/1 channels.
    """
    shape = tuple(int(d) for d in input_shape)
    where = f"layer {layer!r}" if layer else "the data transform"
    crop = ((param.crop_size,) * 2 if param.crop_size
            else (param.crop_h, param.crop_w) if param.crop_h else None)
    if (crop or param.mirror) and len(shape) != 3:
        raise NetSpecError(f"{where}: crop_size and mirror need examples of shape [C, H, W]; "
                           f"inputShape is {list(shape)}")
    if crop and (crop[0] > shape[1] or crop[1] > shape[2]):
        raise NetSpecError(f"{where}: the {crop[0]}x{crop[1]} crop is larger than the stored "
                           f"example, {shape[1]}x{shape[2]} (inputShape {list(shape)})")
    channels = shape[0] if len(shape) > 1 else 1
    if len(param.mean_value) not in (0, 1, channels):
        raise NetSpecError(f"{where}: {len(param.mean_value)} mean_value entries for "
                           f"{channels} channels; give 1 or {channels}")
    if mean_image is not None and tuple(mean_image.shape) != shape:
        raise NetSpecError(f"{where}: the mean file {mean_source} holds a "
                           f"{list(mean_image.shape)} mean, but the stored example is "
                           f"{list(shape)} (inputShape); Caffe needs them equal")
    for flag, wanted in (("force_color", 3), ("force_gray", 1)):
        if getattr(param, flag) and channels != wanted:
            raise NetSpecError(f"{where}: transform_param.{flag} asks for {wanted}-channel "
                               f"images but the examples have {channels}; convert them "
                               "(sparknet_ml does not decode images in the transform)")
    return Transform(scale=_float32(param.scale),
                     mean_values=tuple(_float32(m) for m in param.mean_value),
                     mean_image=None if mean_image is None else
                     np.ascontiguousarray(mean_image, np.float32),
                     crop=crop, mirror=param.mirror)


def resizes_images(net) -> bool:
    """Whether the TRAIN phase reads images through an ``ImageData`` layer that resizes them
    (``new_height`` and ``new_width``): image columns are then resized to ``inputShape``."""
    return any(layer.type == "ImageData" and layer.image_data_param.new_height
               and layer.image_data_param.new_width
               for layer in _data_layers(filter_phase(net, caffe_pb2.TRAIN)))


def ignore_label(net) -> int | None:
    """The ``loss_param.ignore_label`` of the TRAIN phase's loss layers (labels with that
    value are skipped by the loss), or None."""
    values = {layer.loss_param.ignore_label for layer in filter_phase(net, caffe_pb2.TRAIN).layer
              if _is_loss(layer) and layer.loss_param.HasField("ignore_label")}
    if len(values) > 1:
        raise NetSpecError(f"the loss layers ignore different labels {sorted(values)}; "
                           "sparknet_ml checks labels against one ignore_label")
    return values.pop() if values else None


def accuracy_top_ks(net) -> set[int]:
    """The ``top_k`` of the TEST phase's Accuracy layers (e.g. {1, 5} for GoogLeNet)."""
    return {layer.accuracy_param.top_k for layer in filter_phase(net, caffe_pb2.TEST).layer
            if layer.type == "Accuracy"}


def _with_input(net: caffe_pb2.NetParameter, tops: list[str],
                shapes: list[list[int]]) -> caffe_pb2.NetParameter:
    """A copy of ``net`` whose data layers are one ``Input`` layer ``data``."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layer")
    blob_shapes = [caffe_pb2.BlobShape(dim=s) for s in shapes]
    out.layer.add(name="data", type="Input", top=tops,
                  input_param=caffe_pb2.InputParameter(shape=blob_shapes))
    out.layer.extend(layer for layer in net.layer if layer.type not in DATA_LAYER_TYPES)
    _default_cudnn_engines(out)
    return out


def _default_cudnn_engines(net: caffe_pb2.NetParameter) -> None:
    """Turn ``engine: CUDNN`` (common in model-zoo files) into the default engine, in place.

    Our Caffe resolves the default to cuDNN for nets built in GPU mode by a cuDNN build, and
    to its own layers otherwise; an explicit CUDNN would abort a CPU-only build ("unknown
    engine") and needs a GPU. ``engine: CAFFE`` is kept.
    """
    for layer in net.layer:
        for field in _ENGINE_FIELDS:
            message = getattr(layer, field)
            if layer.HasField(field) and message.engine == type(message).CUDNN:
                message.ClearField("engine")


def _is_loss(layer: caffe_pb2.LayerParameter) -> bool:
    return layer.type.endswith("Loss") or any(w != 0 for w in layer.loss_weight)


def _batch_shape(input_shape: Sequence[int], batch_size: int) -> list[int]:
    """``[batch_size, *input_shape]``, checked (also against ``MAX_BLOB_ELEMENTS``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NetSpecError(f"batch_size must be a positive int, got {batch_size!r}")
    dims = list(input_shape)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise NetSpecError(f"input_shape must be a non-empty list of positive ints, got {input_shape!r}")
    check_blob_shape("layer 'data' (Input fed from the DataFrame, [batch_size, *input_shape])",
                     [batch_size, *dims])
    return [batch_size, *dims]


def train_net(net, input_shape: Sequence[int], batch_size: int) -> caffe_pb2.NetParameter:
    """Return the TRAIN-phase net fed by one ``Input`` layer ``data``.

    Parameters
    ----------
    net : str, os.PathLike or caffe_pb2.NetParameter
        The user's net: stock Caffe (``Data`` layers per phase) or sparknet_ml style.
    input_shape : sequence of int
        Shape of one example, e.g. ``[1, 28, 28]``.
    batch_size : int
        Examples per batch.

    Returns
    -------
    caffe_pb2.NetParameter
        Tops of ``data``: the data blob ``[batch_size, *input_shape]`` and, when the net has
        one, the label blob ``[batch_size]``; no include/exclude rules; ``state.phase`` TRAIN.

    Raises
    ------
    NetSpecError
        No data layer, no loss layer, two layers of one name, a bottom nothing produces, a
        disallowed layer type, or a data blob over ``MAX_BLOB_ELEMENTS``.
    """
    train = filter_phase(net, caffe_pb2.TRAIN)
    data_top, label_top = _data_tops(train)
    shape = _batch_shape(input_shape, batch_size)
    tops, shapes = [data_top], [shape]
    if label_top is not None:
        tops.append(label_top)
        shapes.append([batch_size])
    out = _with_input(train, tops, shapes)
    if not any(_is_loss(layer) for layer in out.layer):
        raise NetSpecError(f"net {out.name!r} has no loss layer in the TRAIN phase")
    check_unique_names(out)
    check_layers(out)
    check_bottoms(out)
    return out


def deploy_net(net, input_shape: Sequence[int], batch_size: int) -> DeployNet:
    """Return the TEST-phase net for scoring, fed by the data blob only.

    Loss layers and every layer that needs the label (``Accuracy``, ...), directly or through
    other removed layers, are dropped. The output is the first bottom of the last loss layer
    (a type ending in ``Loss`` or a layer with a ``loss_weight``), or without a loss the last
    top of the last layer.

    Parameters
    ----------
    net : str, os.PathLike or caffe_pb2.NetParameter
        The user's net.
    input_shape : sequence of int
        Shape of one example.
    batch_size : int
        Rows per forward pass.

    Returns
    -------
    DeployNet

    Raises
    ------
    NetSpecError
        No data layer, two layers of one name, a bottom nothing produces, a disallowed layer
        type, a data blob over ``MAX_BLOB_ELEMENTS``, or a loss whose first bottom needs the
        label.
    """
    test = filter_phase(net, caffe_pb2.TEST)
    data_top, label_top = _data_tops(test)
    shape = _batch_shape(input_shape, batch_size)
    tops = [data_top] + ([label_top] if label_top is not None else [])
    full = _with_input(test, tops, [shape, [batch_size]][:len(tops)])
    check_unique_names(full)
    check_layers(full)
    check_bottoms(full)
    available, kept, losses = {data_top}, [], []
    for layer in full.layer[1:]:
        if _is_loss(layer):
            losses.append(layer)
        elif all(b in available for b in layer.bottom):
            kept.append(layer)
            available.update(layer.top)
    if losses:
        loss = losses[-1]
        output, classification = loss.bottom[0], loss.type in CLASS_INDEX_LOSSES
        if output not in available:
            raise NetSpecError(f"loss layer {loss.name!r}: its first bottom {output!r} depends on "
                               "the label, so it cannot be a prediction")
    elif kept:
        output, classification = kept[-1].top[-1], False
    else:
        raise NetSpecError(f"net {test.name!r} has no layers after its data layers")
    out = _with_input(test, [data_top], [shape])
    del out.layer[1:]
    out.layer.extend(kept)
    return DeployNet(net=out, output_blob=output, classification=classification,
                     probabilities=bool(losses) and losses[-1].type == "MultinomialLogisticLoss")
