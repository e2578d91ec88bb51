"""Batched forward passes of an exported ONNX model with onnxruntime: what ``SparkNetModel``
tasks run with ``scoringBackend='onnxruntime'``.

No pycaffe and no Spark: executors that score this way need ``onnxruntime`` (or
``onnxruntime-gpu``) alone. The model (from :mod:`sparknet_ml.net.onnx_export`) takes the
stored examples and applies Caffe's TEST-phase transform itself.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np

from .caches import BoundedCache

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class OnnxSpec:
    """An exported model's input and outputs, and where to run it.

    Attributes
    ----------
    batch_size : int
        Rows per run (bounds the memory of one pass).
    input_name : str
        The model's input (stored examples, N x input shape, float32). Every output of the
        model is returned, in its order (the logits first, then any ``outputBlobs``).
    use_gpu : str
        ``"auto"`` (CUDA when this process's onnxruntime has it and a GPU is visible),
        ``"true"`` (CUDA, or an error) or ``"false"``.
    gpu : int
        The CUDA device for CUDA runs (the task's GPU, see
        :func:`sparknet_ml.engine.devices.task_gpu`).
    threads : int
        onnxruntime's intra-op threads on the CPU (the task's cores).
    """

    batch_size: int
    input_name: str
    use_gpu: str = "auto"
    gpu: int = 0
    threads: int = 1


def providers(spec: OnnxSpec, available: list[str], gpu_visible: bool) -> list:
    """onnxruntime's execution providers for ``spec``, given the ``available`` ones and
    whether this process sees a GPU.

    Raises
    ------
    RuntimeError
        For ``use_gpu="true"`` when onnxruntime has no CUDA provider or no GPU is visible.
    """
    if spec.use_gpu == "true" and not (CUDA in available and gpu_visible):
        why = ("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
               if CUDA not in available else "no GPU is visible to the task")
        raise RuntimeError(f"useGpu='true' with scoringBackend='onnxruntime': {why}")
    if spec.use_gpu != "false" and CUDA in available and gpu_visible:
        return [(CUDA, {"device_id": spec.gpu}), CPU]
    return [CPU]


# By (model key, providers, threads): one scoring model per process, models are scored one at
# a time.
_SESSIONS = BoundedCache(1)


def cached_session(spec: OnnxSpec, key: str, model, gpu_visible: bool | None = None):
    """This process's onnxruntime session for the model identified by ``key``.

    ``model`` is the model's bytes or a zero-argument callable returning them, read only when
    the session is built. ``gpu_visible``: whether the task has a GPU (by default, whether
    ``nvidia-smi`` is on the PATH).
    """
    import onnxruntime as ort
    if gpu_visible is None:
        gpu_visible = shutil.which("nvidia-smi") is not None
    chosen = providers(spec, ort.get_available_providers(), gpu_visible)
    return _SESSIONS.get_or_make((key, repr(chosen), spec.threads),
                                 lambda: _new_session(spec, model, chosen))


def _new_session(spec: OnnxSpec, model, chosen: list):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model() if callable(model) else model, options,
                                providers=chosen)


def forward(session, spec: OnnxSpec, features: np.ndarray) -> list[np.ndarray]:
    """Run the stored examples ``features`` (n, *input_shape; uint8 or float32) through the
    model, ``spec.batch_size`` rows at a time; return each of its outputs as an (n, k)
    float32 array (k = the output's size per row)."""
    n = len(features)
    outputs = [np.empty((n, int(np.prod(o.shape[1:]))), np.float32)
               for o in session.get_outputs()]
    for start in range(0, n, spec.batch_size):
        batch = np.ascontiguousarray(features[start:start + spec.batch_size], np.float32)
        for out, result in zip(outputs, session.run(None, {spec.input_name: batch})):
            out[start:start + len(batch)] = result.reshape(len(batch), -1)
    return outputs
