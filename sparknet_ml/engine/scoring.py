"""Batched forward passes of a deploy net on numpy blocks (what ``SparkNetModel`` tasks run)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from caffe.proto import caffe_pb2
from google.protobuf import text_format

from .caches import BoundedCache
from .solver import (BLOCK_TOP, MEAN_TOP, ROWS_TOP, pack_pixels, packable, packed_shape,
                     prototxt_file, set_device, with_device_transform)
from .transform import Transform


@dataclass(frozen=True)
class ScoreSpec:
    """A deploy net and the blobs to read from it.

    Attributes
    ----------
    net_text : str
        Deploy net prototxt with one Input layer feeding ``data_top``.
    batch_size : int
        Rows per forward pass.
    data_top : str
        The input blob.
    blobs : tuple of str
        Blobs returned for every row (the logits first, then any ``outputBlobs``).
    gpu : int or None
        GPU id, or None for the CPU.
    tf32 : bool
        TensorFloat-32 math on the GPU.
    transform : Transform
        The TEST-phase data transform (center crop, mean, scale). On a GPU a crop or a mean
        image runs on the device (:attr:`on_device`): stored examples are uploaded, uint8
        ones four to a float, and the SparkNetTransform layer transforms them there.
    """

    net_text: str
    batch_size: int
    data_top: str
    blobs: tuple[str, ...]
    gpu: int | None = None
    tf32: bool = False
    transform: Transform = Transform()

    @property
    def on_device(self) -> bool:
        """Whether the transform runs in the net (on the GPU) rather than on the host."""
        return self.gpu is not None and (self.transform.crop is not None
                                         or self.transform.mean_image is not None)


Weights = dict[str, list[np.ndarray]]  # layer name -> its learnable blobs, in order

# By (spec, weights key, packed): one scoring net per process, models are scored one at a time.
_NETS = BoundedCache(1)


def weights_key(weights: Weights) -> str:
    """Digest of a weight set: identifies it in the per-process net cache."""
    digest = hashlib.sha256()
    for name, blobs in weights.items():
        digest.update(name.encode())
        for blob in blobs:
            digest.update(np.ascontiguousarray(blob, np.float32).tobytes())
    return digest.hexdigest()


def conform_weights(weights: dict, shapes: dict[str, list[tuple[int, ...]]]) -> dict:
    """``weights`` in the shapes Caffe gives the net's learnable blobs (legacy 4-D blobs of an
    old caffemodel, such as ``(1, 1, 4096, 9216)`` for an InnerProduct, are reshaped as
    Caffe's loader accepts them).

    Raises
    ------
    ValueError
        Naming the layer: weights missing, another number of blobs, or a blob of another shape.
    """
    conformed = {}
    for layer, wanted in shapes.items():
        blobs = weights.get(layer)
        if blobs is None:
            raise ValueError(f"no weights for layer {layer!r}")
        if len(blobs) != len(wanted):
            raise ValueError(f"layer {layer!r} has {len(wanted)} blobs, the weights give "
                             f"{len(blobs)}")
        conformed[layer] = []
        for i, (blob, shape) in enumerate(zip(blobs, wanted)):
            blob = np.asarray(blob, np.float32)
            stripped = tuple(blob.shape[len(blob.shape) - len(shape):])
            if blob.shape != shape and not (blob.ndim == 4 and stripped == shape
                                            and blob.size == int(np.prod(shape))):
                raise ValueError(f"layer {layer!r}: blob {i} of the weights has shape "
                                 f"{list(blob.shape)}, the net's is {list(shape)}")
            conformed[layer].append(blob.reshape(shape))
    return conformed


def load_weights(net, weights: Weights) -> None:
    """Copy ``weights`` into ``net`` by layer name; every learnable layer must be covered
    (legacy 4-D blobs of an old caffemodel are reshaped as Caffe's loader accepts them)."""
    conformed = conform_weights(weights, {name: [tuple(b.data.shape) for b in blobs]
                                          for name, blobs in net.params.items()})
    for name, blobs in net.params.items():
        for blob, value in zip(blobs, conformed[name]):
            blob.data[...] = value


def cached_net(spec: ScoreSpec, key: str, weights, packed: bool = False):
    """This process's deploy net for ``spec`` loaded with the weights identified by ``key``
    (with the device transform for ``packed`` uint8 or float examples when
    ``spec.on_device``).

    ``weights`` is a dict or a zero-argument callable returning one (e.g. a broadcast's
    ``.value``), read only when the net is built. Caffe's mode, device and math (per thread)
    are set for it every time. ``packed``: the examples are :func:`packable`.
    """
    set_device(spec.gpu, spec.tf32)
    packed = packed and spec.on_device
    return _NETS.get_or_make((spec, key, packed), lambda: _build_net(spec, weights, packed))


def _build_net(spec: ScoreSpec, weights, packed: bool):
    import caffe
    text = spec.net_text
    if spec.on_device:
        text = text_format.MessageToString(with_device_transform(
            text_format.Parse(text, caffe_pb2.NetParameter()), spec.data_top,
            spec.transform, packed))
    with prototxt_file(text) as path:
        net = caffe.Net(path, caffe.TEST)
    load_weights(net, weights() if callable(weights) else weights)
    if MEAN_TOP in net.blobs:
        net.blobs[MEAN_TOP].reshape(1, *spec.transform.mean_image.shape)
        net.blobs[MEAN_TOP].data[...] = spec.transform.mean_image
    return net


def forward(net, spec: ScoreSpec, features: np.ndarray) -> list[np.ndarray]:
    """Forward the stored examples ``features`` (n, *input_shape) in batches; return each of
    ``spec.blobs`` as an (n, k) float32 array (k = the blob's size per row).

    ``spec.transform`` (the TEST phase's: center crop, mean, scale) is applied batch by batch,
    straight into the net's input blob, or in the net from its block (``spec.on_device``).
    """
    n = len(features)
    outputs = [np.empty((n, int(np.prod(net.blobs[b].data.shape[1:]))), np.float32)
               for b in spec.blobs]
    device = BLOCK_TOP in net.blobs
    packed = device and packable(spec.transform, features)
    if device:
        shape = (spec.batch_size, *features.shape[1:])
        net.blobs[BLOCK_TOP].reshape(*(packed_shape(shape) if packed else shape))
        draws = net.blobs[ROWS_TOP].data.reshape(spec.batch_size, 4)
        draws[:, 0] = np.arange(spec.batch_size)
        draws[:, 1:3] = spec.transform.center(features.shape[1:])
        draws[:, 3] = 0
    data_blob = net.blobs[BLOCK_TOP if device else spec.data_top]
    for start in range(0, n, spec.batch_size):
        # Blob.data is mutable_cpu_data(): read it per batch, or on a GPU Caffe would not
        # copy the new batch over the one already on the device.
        data = data_blob.data
        rows = min(spec.batch_size, n - start)
        if packed:
            pack_pixels(features[start:start + rows], data[:rows])
        elif device:
            data[:rows] = features[start:start + rows]
        else:
            spec.transform.apply(features[start:start + rows], out=data[:rows])
        if rows < spec.batch_size:
            data[rows:] = 0
        net.forward()
        for out, blob in zip(outputs, spec.blobs):
            out[start:start + rows] = net.blobs[blob].data[:rows].reshape(rows, -1)
    return outputs

