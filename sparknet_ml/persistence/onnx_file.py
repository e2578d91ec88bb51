"""A deploy net and its weights as an ONNX file: Caffe's shapes, the conversion, the write.

Caffe builds the net once in a child process (:mod:`sparknet_ml.engine.probe`) for every
blob's and weight's shape; :func:`sparknet_ml.net.onnx_export.to_onnx` converts;
:mod:`sparknet_ml.storage` writes (any location, staged so that a failed save leaves nothing
that loads).
"""
from __future__ import annotations

from .. import storage

PROBE_BATCH = 2
"""The batch the net is set up with for its shapes (the exported batch axis is free)."""


def onnx_bytes(deploy_text: str, weights: dict, outputs=None, transform=None,
               stored_shape=None, pixels: bool = False) -> bytes:
    """The deploy net ``deploy_text`` with ``weights`` as a serialized ONNX model.

    Parameters
    ----------
    deploy_text : str
        A deploy net's prototxt (``Input`` layers, no data or loss layers).
    weights : dict
        ``{layer: [blobs]}`` (from training, or a caffemodel).
    outputs, transform, stored_shape, pixels
        As for :func:`sparknet_ml.net.onnx_export.to_onnx`.

    Raises
    ------
    ValueError
        Caffe cannot build the net (its message and the layer), the weights do not fit it, a
        layer or setting has no ONNX export (:class:`~sparknet_ml.net.NetSpecError`, naming
        the layer), or the model is over protobuf's 2 GiB.
    """
    from .. import net as netlib
    from ..engine.probe import deploy_blob_shapes, deploy_param_shapes
    from ..engine.solver import net_with_batch
    from ..net.onnx_export import to_onnx
    from .caffemodel import conform_weights
    netlib.check_layers(netlib.parse_net(deploy_text))  # before Caffe builds an untrusted net
    net = net_with_batch(deploy_text, PROBE_BATCH)
    probed = netlib.net_to_text(net)
    model = to_onnx(net, conform_weights(weights, deploy_param_shapes(probed)),
                    deploy_blob_shapes(probed), outputs, transform, stored_shape,
                    pixels=pixels)
    if model.ByteSize() >= 2 ** 31:
        raise ValueError(f"the ONNX model is {model.ByteSize()} bytes, over protobuf's 2 GiB "
                         "for one file")
    return model.SerializeToString()


def write_onnx(path: str, data: bytes, overwrite: bool = False) -> None:
    """Write the model ``data`` to ``path`` (any storage location): staged beside it and
    renamed into place, so that a failed write leaves no file there.

    Raises
    ------
    StorageError
        When ``path`` exists and ``overwrite`` is False, is a folder, or the write fails.
    """
    with storage.replacing(path, overwrite, how="overwrite=True",
                           ours=lambda uri: not storage.is_dir(uri), what="a file") as staged:
        storage.write_bytes(staged, data)
