"""Read and write Caffe's binary ``.caffemodel`` (a NetParameter whose layers carry blobs)."""
from __future__ import annotations

import os

import numpy as np

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
    """Learnable blobs by layer name from caffemodel bytes.

    Raises
    ------
    ValueError
        When the bytes are not a NetParameter (truncated or corrupt) or a blob is inconsistent.
    """
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"not a caffemodel (truncated or corrupt): {err}") from None
    weights = {}
    for layer in list(net.layer) + list(net.layers):
        if layer.blobs:
            try:
                weights[layer.name] = [_blob_array(b) for b in layer.blobs]
            except ValueError as err:
                raise ValueError(f"layer {layer.name!r}: {err}") from None
    return weights


def read_caffemodel(path: str) -> Weights:
    """Learnable blobs by layer name from a ``.caffemodel`` file.

    Raises
    ------
    ValueError
        Naming ``path``: a file over :data:`MAX_CAFFEMODEL_BYTES`, or as :func:`parse_caffemodel`.
    """
    size = os.path.getsize(path)
    if size > MAX_CAFFEMODEL_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the {MAX_CAFFEMODEL_BYTES} bytes cap "
                         "(MAX_CAFFEMODEL_BYTES)")
    with open(path, "rb") as f:
        try:
            return parse_caffemodel(f.read())
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
