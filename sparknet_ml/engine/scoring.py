"""Batched forward passes of a deploy net on numpy blocks (what ``SparkNetModel`` tasks run)."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass

import numpy as np

from .solver import set_device
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
    """

    net_text: str
    batch_size: int
    data_top: str
    blobs: tuple[str, ...]
    gpu: int | None = None
    tf32: bool = False


Weights = dict[str, list[np.ndarray]]  # layer name -> its learnable blobs, in order

_NETS: dict[tuple[ScoreSpec, str], object] = {}


def weights_key(weights: Weights) -> str:
    """Digest of a weight set: identifies it in the per-process net cache."""
    digest = hashlib.sha256()
    for name, blobs in weights.items():
        digest.update(name.encode())
        for blob in blobs:
            digest.update(np.ascontiguousarray(blob, np.float32).tobytes())
    return digest.hexdigest()


def load_weights(net, weights: Weights) -> None:
    """Copy ``weights`` into ``net`` by layer name; every learnable layer must be covered."""
    for name, blobs in net.params.items():
        if name not in weights:
            raise ValueError(f"no weights for layer {name!r}")
        if len(weights[name]) != len(blobs):
            raise ValueError(f"layer {name!r} has {len(blobs)} blobs, weights give "
                             f"{len(weights[name])}")
        for blob, value in zip(blobs, weights[name]):
            if tuple(blob.data.shape) != tuple(np.shape(value)):
                raise ValueError(f"layer {name!r}: blob shape {tuple(blob.data.shape)}, "
                                 f"weights shape {tuple(np.shape(value))}")
            blob.data[...] = value


def cached_net(spec: ScoreSpec, key: str, weights):
    """This process's deploy net for ``spec`` loaded with the weights identified by ``key``.

    ``weights`` is a dict or a zero-argument callable returning one (e.g. a broadcast's
    ``.value``), read only when the net is built. Caffe's mode, device and math (per thread)
    are set for it every time.
    """
    set_device(spec.gpu, spec.tf32)
    net = _NETS.get((spec, key))
    if net is None:
        import caffe
        with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
            f.write(spec.net_text)
            f.flush()
            net = caffe.Net(f.name, caffe.TEST)
        load_weights(net, weights() if callable(weights) else weights)
        _NETS.clear()  # one scoring net per process: models are scored one at a time
        _NETS[(spec, key)] = net
    return net


def forward(net, spec: ScoreSpec, features: np.ndarray,
            transform: Transform = Transform()) -> list[np.ndarray]:
    """Forward ``features`` (n, *input_shape) in batches; return each of ``spec.blobs`` as
    an (n, k) float32 array (k = the blob's size per row).

    ``transform`` (the TEST phase's: center crop, mean, scale) is applied batch by batch,
    straight into the net's input blob.
    """
    n = len(features)
    outputs = [np.empty((n, int(np.prod(net.blobs[b].data.shape[1:]))), np.float32)
               for b in spec.blobs]
    data_blob = net.blobs[spec.data_top]
    for start in range(0, n, spec.batch_size):
        # Blob.data is mutable_cpu_data(): read it per batch, or on a GPU Caffe would not
        # copy the new batch over the one already on the device.
        data = data_blob.data
        rows = min(spec.batch_size, n - start)
        transform.apply(features[start:start + rows], out=data[:rows])
        if rows < spec.batch_size:
            data[rows:] = 0
        net.forward()
        for out, blob in zip(outputs, spec.blobs):
            out[start:start + rows] = net.blobs[blob].data[:rows].reshape(rows, -1)
    return outputs


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64 and returned as float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)
