"""Read and write Caffe's binary ``.caffemodel`` (a NetParameter whose layers carry blobs)."""
from __future__ import annotations

import numpy as np

from .. import storage

Weights = dict[str, list[np.ndarray]]

MAX_CAFFEMODEL_BYTES = 2 * 2 ** 30
"""Largest ``.caffemodel`` read (2 GiB, protobuf's own message limit), checked before reading."""


def _blob_array(blob) -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:  # legacy 4-D blobs
        shape = tuple(d for d in (blob.num, blob.channels, blob.height, blob.width))
    data = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def parse_caffemodel(data: bytes) -> Weights:
    """Learnable blobs by layer name from caffemodel bytes; a caffemodel in a deprecated format
    (V1 ``layers``) is upgraded first, as Caffe does on loading it
    (:func:`sparknet_ml.net.prototxt.upgrade_net`).

    Raises
    ------
    ValueError
        When the bytes are not a NetParameter (truncated or corrupt), a blob is inconsistent,
        or the format is one Caffe's upgrade refuses.
    """
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    from ..net.prototxt import upgrade_net
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"not a caffemodel (truncated or corrupt): {err}") from None
    if net.layers:  # Caffe's other upgrades leave the blobs as they are: not worth a copy
        net = upgrade_net(net)
    weights = {}
    for layer in net.layer:
        if layer.blobs:
            try:
                weights[layer.name] = [_blob_array(b) for b in layer.blobs]
            except ValueError as err:
                raise ValueError(f"layer {layer.name!r}: {err}") from None
    return weights


def read_caffemodel(path: str, inside: str | None = None) -> Weights:
    """Learnable blobs by layer name from a ``.caffemodel`` file (any storage location).

    Raises
    ------
    ValueError
        Naming ``path``: unreadable, over :data:`MAX_CAFFEMODEL_BYTES`, outside ``inside``
        (see :func:`sparknet_ml.storage.read_bytes`), or as :func:`parse_caffemodel`.
    """
    data = storage.read_bytes(path, MAX_CAFFEMODEL_BYTES, "MAX_CAFFEMODEL_BYTES", inside)
    try:
        return parse_caffemodel(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def caffemodel_bytes(net, weights: Weights) -> bytes:
    """A caffemodel for ``net`` (a NetParameter): its layers with ``weights`` as blobs."""
    model = type(net)()
    model.CopyFrom(net)
    for layer in model.layer:
        for value in weights.get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.dim.extend(value.shape)
            blob.data.extend(np.asarray(value, np.float32).ravel().tolist())
    return model.SerializeToString()


MAX_MEAN_FILE_BYTES = 256 * 2 ** 20
"""Largest mean ``.binaryproto`` read (256 MiB; ImageNet's 3x256x256 mean is 786 kB)."""


def parse_mean_blob(data: bytes) -> np.ndarray:
    """The mean image (C, H, W) of a BlobProto, as Caffe's ``compute_image_mean`` writes it
    (one example: num 1, or a 4-D shape with first dimension 1; a 3-D shape is taken as is).

    Raises
    ------
    ValueError
        When the bytes are not a BlobProto or hold more than one example.
    """
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"not a BlobProto .binaryproto (truncated or corrupt): {err}") from None
    if not (blob.HasField("shape") or blob.channels):
        raise ValueError("not a mean .binaryproto: the BlobProto has no shape")
    mean = _blob_array(blob)
    if mean.ndim == 4:
        if mean.shape[0] != 1:
            raise ValueError(f"a mean .binaryproto holds one example; this one has shape "
                             f"{list(mean.shape)}")
        mean = mean[0]
    return np.ascontiguousarray(mean)


def read_mean_file(path: str, inside: str | None = None) -> np.ndarray:
    """The mean image (C, H, W) of a ``.binaryproto`` file (see :func:`parse_mean_blob`).

    Raises
    ------
    ValueError
        Naming ``path``: missing or unreadable (a plain relative path is read from the default
        file system's working directory), over :data:`MAX_MEAN_FILE_BYTES`, or not a mean blob.
    """
    data = storage.read_bytes(path, MAX_MEAN_FILE_BYTES, "MAX_MEAN_FILE_BYTES", inside)
    try:
        return parse_mean_blob(data)
    except ValueError as err:
        raise ValueError(f"mean file {path}: {err}") from None


def mean_blob_bytes(mean: np.ndarray) -> bytes:
    """A ``.binaryproto`` of the mean image ``mean`` (C, H, W), laid out as Caffe's
    ``compute_image_mean`` writes it (num 1, channels, height, width)."""
    from caffe.proto import caffe_pb2
    channels, height, width = mean.shape
    blob = caffe_pb2.BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(np.asarray(mean, np.float32).ravel().tolist())
    return blob.SerializeToString()
