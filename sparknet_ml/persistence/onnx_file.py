"""A deploy net and its weights as an ONNX file: Caffe's shapes, the conversion, the write.

Caffe builds the net once in a child process (:mod:`sparknet_ml.engine.probe`) for every
blob's and weight's shape; :func:`sparknet_ml.net.onnx_export.to_onnx` converts;
:mod:`sparknet_ml.storage` writes (any location, staged so that a failed save leaves nothing
that loads).
"""
from __future__ import annotations

import os
import posixpath
import tempfile

from .. import storage

PROBE_BATCH = 2
"""The batch the net is set up with for its shapes (the exported batch axis is free)."""


def onnx_model(deploy_text: str, weights: dict, outputs=None, transform=None,
               stored_shape=None, pixels: bool = False, banded_lrn: bool = False):
    """The deploy net ``deploy_text`` with ``weights`` as a checked ``onnx.ModelProto`` (of any
    size: see :func:`write_onnx`).

    Parameters
    ----------
    deploy_text : str
        A deploy net's prototxt (``Input`` layers, no data or loss layers).
    weights : dict
        ``{layer: [blobs]}`` (from training, or a caffemodel).
    outputs, transform, stored_shape, pixels, banded_lrn
        As for :func:`sparknet_ml.net.onnx_export.to_onnx`.

    Raises
    ------
    ValueError
        Caffe cannot build the net (its message and the layer), the weights do not fit it, or
        a layer or setting has no ONNX export (:class:`~sparknet_ml.net.NetSpecError`, naming
        the layer).
    """
    from .. import net as netlib
    from ..engine.probe import deploy_blob_shapes, deploy_param_shapes
    from ..engine.scoring import conform_weights
    from ..engine.solver import net_with_batch
    from ..net.onnx_export import to_onnx
    netlib.check_layers(netlib.parse_net(deploy_text))  # before Caffe builds an untrusted net
    net = net_with_batch(deploy_text, PROBE_BATCH)
    probed = netlib.net_to_text(net)
    return to_onnx(net, conform_weights(weights, deploy_param_shapes(probed)),
                   deploy_blob_shapes(probed), outputs, transform, stored_shape, pixels=pixels,
                   banded_lrn=banded_lrn)


def serialized(model) -> bytes:
    """``model`` (an ``onnx.ModelProto``) as one message's bytes, for onnxruntime sessions.

    Raises
    ------
    ValueError
        For a model of 2 GiB or more (:func:`~sparknet_ml.net.onnx_export.message_bytes`).
    """
    from ..net.onnx_export import message_bytes
    data = message_bytes(model)
    if data is None:
        raise ValueError("the ONNX model is over protobuf's 2 GiB for one message: write it "
                         "as a file (saveOnnx, sparknet-ml export), which puts its weights "
                         "beside it as ONNX external data; scoringBackend='onnxruntime' takes "
                         "models under 2 GiB")
    return data


def write_onnx(path: str, model, overwrite: bool = False) -> None:
    """Write ``model`` (an ``onnx.ModelProto``) to ``path`` (any storage location): staged
    beside it and renamed into place, so that a failed write leaves no file there. A model of
    2 GiB or more (over one protobuf message) goes as ONNX external data: its weights in
    ``<path>.data`` beside it (written first, replaced under the same rule), which the model
    names relative to itself, so the two files load from any folder together.

    Raises
    ------
    StorageError
        When ``path`` (or ``<path>.data`` for a large model) exists and ``overwrite`` is
        False, is a folder, or the write fails.
    """
    import onnx

    from ..net.onnx_export import message_bytes
    data = message_bytes(model)
    if data is not None:
        _write(path, data, overwrite)
        return
    location = posixpath.basename(path) + ".data"
    for target in (path + ".data", path):  # before gigabytes are written
        storage.check_replaceable(target, overwrite, _HOW, _not_a_folder, "a file")
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "model.onnx")
        onnx.save_model(model, local, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location)
        for source, target in ((location, path + ".data"), ("model.onnx", path)):
            with open(os.path.join(folder, source), "rb") as f:
                _write(target, f.read(), overwrite)
        onnx.load_external_data_for_model(model, folder)  # the caller's model, whole again


_HOW = "overwrite=True"


def _not_a_folder(uri: str) -> bool:
    return not storage.is_dir(uri)


def _write(path: str, data: bytes, overwrite: bool) -> None:
    with storage.replacing(path, overwrite, _HOW, _not_a_folder, "a file") as staged:
        storage.write_bytes(staged, data)
