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
        The model's input (stored examples, N x input shape, uint8 pixels or float32). Every
        output of the model is returned, in its order (the logits first, then any
        ``outputBlobs``).
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
    """This process's :class:`Scorer` for the model identified by ``key``.

    ``model`` is the model's bytes or a zero-argument callable returning them, read only when
    the session is built. ``gpu_visible``: whether the task has a GPU (by default, whether
    ``nvidia-smi`` is on the PATH).
    """
    import onnxruntime as ort
    if gpu_visible is None:
        gpu_visible = shutil.which("nvidia-smi") is not None
    chosen = providers(spec, ort.get_available_providers(), gpu_visible)
    return _SESSIONS.get_or_make((key, repr(chosen), spec.threads, spec.batch_size),
                                 lambda: Scorer(spec, model() if callable(model) else model,
                                                chosen))


class Scorer:
    """An onnxruntime session and how a batch reaches it.

    On the CPU, ``session.run`` on the batch. On CUDA, onnxruntime's I/O binding: one device
    buffer for a batch of stored examples (uint8 pixels where the model takes them: a quarter
    of float32's bytes over the bus) and one per output, bound once; a batch is copied into
    the input buffer and the run replays the CUDA graph onnxruntime captured on the first run
    (its CUDA provider's ``enable_cuda_graph``; a model it cannot capture runs without). A
    short last batch is padded to the batch size (the graph's shapes are fixed).

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    input_type : numpy dtype
        What the model takes: uint8 or float32.
    cuda_graph : bool
        Whether runs replay a CUDA graph.
    """

    def __init__(self, spec: OnnxSpec, model: bytes, chosen: list):
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec.threads
        options.inter_op_num_threads = 1
        self.cuda_graph = isinstance(chosen[0], tuple)  # (CUDA, its options) comes first
        if self.cuda_graph:
            graphed = [(CUDA, {**chosen[0][1], "enable_cuda_graph": "1"}), *chosen[1:]]
            try:
                self.session = ort.InferenceSession(model, options, providers=graphed)
            except Fail:  # onnxruntime refuses a graph with nodes outside its CUDA provider
                self.cuda_graph = False
        if not self.cuda_graph:
            self.session = ort.InferenceSession(model, options, providers=chosen)
        self._input = next(i for i in self.session.get_inputs() if i.name == spec.input_name)
        self.input_type = np.dtype(np.uint8 if self._input.type == "tensor(uint8)"
                                   else np.float32)
        self._batch = spec.batch_size
        self._bound = None
        if self.session.get_providers()[0] == CUDA:
            self._bind(spec.gpu)

    def _bind(self, gpu: int) -> None:
        import onnxruntime as ort
        binding = self.session.io_binding()
        rows = np.zeros((self._batch, *self._input.shape[1:]), self.input_type)
        x = ort.OrtValue.ortvalue_from_numpy(rows, "cuda", gpu)
        binding.bind_ortvalue_input(self._input.name, x)
        outs = []
        for o in self.session.get_outputs():
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                [self._batch, *o.shape[1:]], np.float32, "cuda", gpu)
            binding.bind_ortvalue_output(o.name, value)
            outs.append(value)
        self._bound = (binding, rows, x, outs)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The model's outputs for ``batch`` (at most the batch size rows, ``input_type``,
        C-contiguous)."""
        if self._bound is None:
            return self.session.run(None, {self._input.name: batch})
        binding, rows, x, outs = self._bound
        n = len(batch)
        if n < self._batch:  # the last batch, padded: the bound buffer's shape is fixed
            rows[:n] = batch
            batch = rows
        x.update_inplace(batch)
        self.session.run_with_iobinding(binding)
        return [value.numpy()[:n] for value in outs]


def forward(scorer: Scorer, spec: OnnxSpec, features: np.ndarray) -> list[np.ndarray]:
    """Run the stored examples ``features`` (n, *input_shape; uint8 or float32) through the
    model, ``spec.batch_size`` rows at a time; return each of its outputs as an (n, k)
    float32 array (k = the output's size per row).

    Raises
    ------
    ValueError
        For float32 examples that are not whole numbers in 0..255 when the model takes uint8
        pixels (a binary column may hold float32 rows; such pixels pass unchanged).
    """
    n = len(features)
    outputs = [np.empty((n, int(np.prod(o.shape[1:]))), np.float32)
               for o in scorer.session.get_outputs()]
    if features.dtype != scorer.input_type:
        converted = features.astype(scorer.input_type)
        if not np.array_equal(converted, features):
            raise ValueError("the model was exported for uint8 pixels (the features column is "
                             "binary), but a batch holds float32 values that are not pixels; "
                             "store pixels as uint8 or score with scoringBackend='caffe'")
        features = converted
    for start in range(0, n, spec.batch_size):
        batch = np.ascontiguousarray(features[start:start + spec.batch_size])
        for out, result in zip(outputs, scorer.run(batch)):
            out[start:start + len(batch)] = result.reshape(len(batch), -1)
    return outputs
